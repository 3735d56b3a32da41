"""Qwen2 (the Llama block with Q/K/V biases) on tiny random models: the biases matter, and
every method, the convert pipeline, sink tokens and the cached decode paths carry them
(k = W x + b). The forward itself is checked against transformers in test_loaders.py."""

import pytest
import torch

from tiny import logp, recipe, tiny_ckpt
from tpa_compress.convert import convert, write_output
from tpa_compress.errors import TPAError
from tpa_compress.load import load_model
from tpa_compress.load.hf import config_from_hf
from tpa_compress.models import build_model

QUIET = dict(eval_model=False, log=lambda m: None)


def test_biases_change_the_output():
    """Without this a path that drops the biases could pass the comparisons below."""
    ck = tiny_ckpt("qwen2")
    assert ck.config.attention_bias
    model = build_model(ck)
    ref = logp(model)
    with torch.no_grad():
        for b in model.layers:
            b.self_attn.k_proj.bias.zero_()
            b.self_attn.v_proj.bias.zero_()
    assert (logp(model) - ref).abs().max() > 1e-2


@pytest.mark.parametrize("sink", [0, 2])
def test_exact_conversions_keep_the_biases_and_round_trip(tmp_path, sink):
    """identity (K) and full-rank activation SVD (V, with sink tokens): the converted model
    equals the original, also after writing and reloading the folder."""
    ck = tiny_ckpt("qwen2")
    ref = logp(build_model(ck))
    model = build_model(ck)
    rec = recipe(
        [{"select": "all", "k": {"method": "identity"}, "v": {"method": "activation_svd", "rank": ck.config.kv_size}}],
        sink_tokens=sink,
    )
    res, tensors = convert(ck, model, rec, **QUIET)
    assert all(lay.sink == sink for lay in res.layouts)
    assert (logp(model) - ref).abs().max() < 1e-4
    assert ("model.layers.0.self_attn.v_proj.sink.bias" in tensors) == bool(sink)
    write_output(tmp_path / "out", ck, rec, res, tensors, force=False)
    back = build_model(load_model(tmp_path / "out"))
    assert back.cfg.attention_bias
    assert (logp(back) - ref).abs().max() < 1e-4


RULES = {
    "identity": {"method": "identity"},
    "activation_svd": {"method": "activation_svd", "rank": 8},
    "per_head_svd": {"method": "per_head_svd", "rank": 8},
    "tucker_shared": {"method": "tucker_shared", "rank": 8},
    "tucker_shared_heads": {"method": "tucker_shared", "rank": 16, "params": {"head_rank": 1}},
    "contextual_t6": {"method": "contextual_t6", "rank": 1, "params": {"steps": 5}},
}


@pytest.mark.parametrize("name", list(RULES))
def test_every_method_adds_the_original_bias(name):
    """Layer 0's input does not depend on any bias, so the same model with its K/V biases
    zeroed gets the same fit there; the converted projections must differ by exactly b."""
    ck = tiny_ckpt("qwen2")
    with_b, without_b = build_model(ck), build_model(ck)
    with torch.no_grad():
        for blk in without_b.layers:
            blk.self_attn.k_proj.bias.zero_()
            blk.self_attn.v_proj.bias.zero_()
    b = {t: getattr(with_b.layers[0].self_attn, f"{t}_proj").bias.detach().clone() for t in "kv"}
    rec = recipe([{"select": {"layers": "0"}, "k": RULES[name], "v": RULES[name]}])
    convert(ck, with_b, rec, **QUIET)
    convert(ck, without_b, rec, **QUIET)
    x = torch.randn(5, ck.config.hidden_size, generator=torch.Generator().manual_seed(0))
    for t in "kv":
        p1 = getattr(with_b.layers[0].self_attn, f"{t}_proj")
        p0 = getattr(without_b.layers[0].self_attn, f"{t}_proj")
        with torch.no_grad():
            diff = p1.factorized(x) - p0.factorized(x)
        torch.testing.assert_close(diff, b[t].expand_as(diff), rtol=0, atol=1e-5)


def test_hf_config_with_sliding_window_layers_is_refused():
    d = {
        "model_type": "qwen2",
        "hidden_size": 32,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": 97,
        "intermediate_size": 48,
        "use_sliding_window": True,
    }
    with pytest.raises(TPAError, match="use_sliding_window"):
        config_from_hf(d, "config.json")
    d["use_sliding_window"] = False
    assert config_from_hf(d, "config.json").family == "qwen2"
