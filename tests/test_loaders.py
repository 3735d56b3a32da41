"""Every loader round-trips on tiny random models: write -> read -> identical logits.

transformers (the independent reference) also loads the HF folders we write, so the
forward pass of both families is checked here on CPU in seconds, sliding windows
included (sequences longer than the tiny window).
"""

import json

import pytest
import torch

from tiny import random_state, tiny_config, write_ckpt, write_gguf
from tpa_compress.errors import TPAError
from tpa_compress.load import load_model
from tpa_compress.load.ckpt import load_ckpt
from tpa_compress.load.source import Checkpoint, WeightSource
from tpa_compress.models import build_model
from tpa_compress.save import save_hf_folder

FAMILIES = ["gemma3", "llama", "qwen2"]


def logits_of(ckpt, ids):
    m = build_model(ckpt)
    with torch.no_grad():
        return m.logits(m(ids))


def reference(family, **over):
    cfg = tiny_config(family, **over)
    sd = random_state(cfg, seed=1)
    return cfg, sd, Checkpoint(cfg, WeightSource.from_dict(sd), path="<tiny>")


IDS = torch.randint(3, 97, (2, 21), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", FAMILIES)
def test_gguf_round_trip(tmp_path, family):
    cfg, sd, ref = reference(family)
    ck = load_model(write_gguf(tmp_path / "m.gguf", cfg, sd))
    assert ck.config.family == family and ck.config.num_kv_heads == 2
    assert ck.config.attention_bias == (family == "qwen2")
    for n in sd:
        torch.testing.assert_close(ck.weights.get(n), sd[n], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits_of(ck, IDS), logits_of(ref, IDS), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tied", [True, False])
def test_hf_round_trip_and_transformers_agrees(tmp_path, family, tied):
    cfg, sd, ref = reference(family, tie_word_embeddings=tied)
    if not tied:
        sd["lm_head.weight"] = torch.randn(cfg.vocab_size, cfg.hidden_size) * 0.1
    save_hf_folder(tmp_path, cfg, sd)
    ck = load_model(tmp_path)
    assert ck.config == cfg
    ours = logits_of(ck, IDS)
    torch.testing.assert_close(ours, logits_of(Checkpoint(cfg, WeightSource.from_dict(sd)), IDS), rtol=0, atol=0)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32)
    with torch.no_grad():
        theirs = hf(IDS).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_hf_sharded(tmp_path):
    from safetensors.torch import save_file

    cfg, sd, ref = reference("llama")
    save_hf_folder(tmp_path, cfg, sd)
    (tmp_path / "model.safetensors").unlink()
    names = sorted(sd)
    half = len(names) // 2
    wm = {}
    for i, part in enumerate((names[:half], names[half:])):
        fn = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: sd[n] for n in part}, str(tmp_path / fn))
        wm.update({n: fn for n in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
    torch.testing.assert_close(logits_of(load_model(tmp_path), IDS), logits_of(ref, IDS), rtol=0, atol=0)


@pytest.mark.parametrize("multimodal", [False, True])
def test_ckpt_round_trip(tmp_path, multimodal):
    cfg, sd, ref = reference("gemma3")
    path = write_ckpt(tmp_path / "model.ckpt", cfg, sd, multimodal=multimodal)
    ck = load_ckpt(path, variant=cfg)
    torch.testing.assert_close(logits_of(ck, IDS), logits_of(ref, IDS), rtol=0, atol=0)


def test_ckpt_variants_match_published_shapes():
    from tpa_compress.load.ckpt import variant_config

    c = variant_config("1b")
    assert (c.num_layers, c.num_kv_heads, c.head_dim, c.hidden_size) == (26, 1, 256, 1152)
    c = variant_config("27b")
    assert (c.head_dim, c.query_pre_attn_scalar, c.sliding_window, c.rope_scaling_factor) == (128, 168, 1024, 8.0)
    assert c.layer_types.count("global") == 10  # 62 layers, every 6th global
    with pytest.raises(TPAError, match="valid: 270m, 1b, 4b, 12b, 27b"):
        variant_config("2b")


def test_ckpt_loads_with_weights_only(tmp_path):
    """A pickle that would run code is refused, not executed."""
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    torch.save({"model_state_dict": Evil()}, str(tmp_path / "evil.ckpt"))
    with pytest.raises(TPAError, match="evil.ckpt"):
        load_ckpt(tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.real
@pytest.mark.parametrize("name, shown", [("gemma3-270m", "Gemma 3 270M"), ("smollm2-135m", "SmolLM2-135M-Instruct")])
def test_embedded_models_have_readable_names(name, shown):
    assert load_model(name).config.name == shown
