"""The streaming converter (convert/stream.py) writes what the whole-model path writes,
one layer at a time."""

import gc
import hashlib
import json
import weakref

import pytest
import torch

from tiers import each
from tiny import recipe, tiny_ckpt
from tpa_compress.convert import convert, write_output
from tpa_compress.convert import stream as S
from tpa_compress.load import load_model
from tpa_compress.models import build_model

RULES = {
    "identity": {"method": "identity"},
    "activation_svd": {"method": "activation_svd", "rank": 8},
    "per_head_svd": {"method": "per_head_svd", "rank": 8},
    "score_aware_svd": {"method": "score_aware_svd", "rank": 8},
    "tucker_shared": {"method": "tucker_shared", "rank": 8},
    "contextual_t6": {"method": "contextual_t6", "rank": 1, "params": {"steps": 5}},
    "attn_refit": {"method": "attn_refit", "rank": 4, "params": {"windows": 5, "heldout": 2, "steps": 10}},
    "energy": {"method": "activation_svd", "rank": {"energy": 0.9}},
    "budget": {"method": "activation_svd", "rank": "budget"},
}


def _recipe(name, family, select="all"):
    rule = RULES[name]
    top = {"budget": {"fraction": 0.5, "context": 64}} if name == "budget" else {}
    return recipe([{"select": select, "k": rule, "v": rule}], sink_tokens=1, weight_dtype="bfloat16", **top)


def _digest(folder):
    rep = json.loads((folder / "report.json").read_text())
    rep.pop("seconds")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["tpa_source"].pop("model", None)
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest(), rep, cfg


def _both(tmp_path, family, rec, select_layers=None):
    ck = tiny_ckpt(family)
    model = build_model(ck)
    res, tensors = convert(ck, model, rec, eval_model=False, log=lambda m: None)
    write_output(tmp_path / "whole", ck, rec, res, tensors, force=False, model=model)
    S.convert_streaming(tiny_ckpt(family), rec, tmp_path / "stream", force=False, log=lambda m: None)
    return _digest(tmp_path / "whole"), _digest(tmp_path / "stream")


# every family and every rule; Gemma 3's budget over its global layers only, too
@pytest.mark.parametrize("family,name", each(["gemma3", "llama", "qwen2"], list(RULES), keep=[("gemma3", "budget")]))
def test_streaming_writes_what_the_whole_model_path_writes(tmp_path, family, name):
    select = {"type": "global"} if family == "gemma3" and name == "budget" else "all"
    whole, stream = _both(tmp_path, family, _recipe(name, family, select))
    assert stream == whole


def test_streaming_a_layer_subset_copies_the_layers_past_the_last(tmp_path):
    rec = recipe([{"select": {"layers": "1,3"}, "k": RULES["activation_svd"], "v": RULES["identity"]}], sink_tokens=1)
    whole, stream = _both(tmp_path, "llama", rec)
    assert stream == whole
    assert [r["k"]["method"] for r in stream[1]["layers"]] == [
        "keep",
        "activation_svd",
        "keep",
        "activation_svd",
        "keep",
        "keep",
    ]


def test_shards_reload_to_the_same_model(tmp_path):
    """Shards far smaller than the model: several files and an index, the same tensors."""
    rec = _recipe("activation_svd", "gemma3")
    S.convert_streaming(tiny_ckpt("gemma3"), rec, tmp_path / "one", force=False, log=lambda m: None)
    S.convert_streaming(
        tiny_ckpt("gemma3"), rec, tmp_path / "many", force=False, log=lambda m: None, shard_bytes=20_000
    )
    shards = sorted((tmp_path / "many").glob("model-*-of-*.safetensors"))
    assert len(shards) > 3 and (tmp_path / "many" / "model.safetensors.index.json").exists()
    assert not (tmp_path / "many" / "model.safetensors").exists()
    a, b = load_model(tmp_path / "one"), load_model(tmp_path / "many")
    assert a.weights.names() == b.weights.names()
    for n in a.weights.names():
        assert torch.equal(a.weights.get(n), b.weights.get(n)), n


def test_one_layer_on_the_device_at_a_time(monkeypatch, tmp_path):
    """Each layer is loaded whole once (calibration) and, for a budget, its attention once
    more (factorization, statistics from disk); the previous one is gone when the next loads."""
    loaded, live, whole = [], [], []

    def spy(real, is_whole):
        def load(ckpt, i, *a):
            gc.collect()
            live.append(sum(r() is not None for r in loaded))
            block = real(ckpt, i, *a)
            loaded.append(weakref.ref(block))
            whole.append(is_whole)
            return block

        return load

    monkeypatch.setattr(S, "load_block", spy(S.load_block, True))
    monkeypatch.setattr(S, "load_attention", spy(S.load_attention, False))
    ck = tiny_ckpt("llama", num_layers=8)
    # what lived before the conversion is set aside, so each collection scans only what
    # the conversion made (the blocks among it) instead of every object the run imported
    gc.collect()
    gc.freeze()
    try:
        S.convert_streaming(ck, _recipe("budget", "llama"), tmp_path / "o", force=False, log=lambda m: None)
    finally:
        gc.unfreeze()
    assert whole == [True] * 8 + [False] * 8
    assert max(live) == 0
    assert not (tmp_path / "o" / ".stats").exists()


@pytest.mark.parametrize(
    "recipe_top,eval_model,why",
    [
        ({}, True, "--eval"),
        ({"budget": {"fraction": 0.5, "context": 64, "by": "kl"}}, False, "kl"),
        ({}, False, None),
    ],
)
def test_what_needs_the_whole_model(recipe_top, eval_model, why):
    rule = RULES["budget"] if "budget" in recipe_top else RULES["activation_svd"]
    rec = recipe([{"select": "all", "k": rule, "v": rule}], **recipe_top)
    got = S.whole_model_reason(rec, eval_model)
    assert (got is None) if why is None else why in got


@pytest.mark.parametrize("fmt", ["gguf", "hf-sharded"])
def test_streaming_from_files_reads_lazily_and_matches(tmp_path, fmt):
    """From a GGUF file (memory-mapped per tensor) and from a sharded HF folder (safe_open,
    released per layer): the same output as the whole-model path on the same file."""
    from tiny import CharTok, random_state, tiny_config, write_gguf
    from tpa_compress.save.hf import save_hf_files
    from tpa_compress.save.shards import ShardWriter

    cfg = tiny_config("llama")
    sd = random_state(cfg, 3)
    if fmt == "gguf":
        path = write_gguf(tmp_path / "m.gguf", cfg, sd)
    else:
        path = tmp_path / "m"
        path.mkdir()
        w = ShardWriter(path, torch.float32, 30_000)
        for n, t in sd.items():
            w.add(n, t)
        assert len(w.close()) > 2
        save_hf_files(path, cfg)

    def ckpt():
        ck = load_model(path)
        ck.tokenizer = CharTok()
        return ck

    rec = _recipe("budget", "llama")
    ck = ckpt()
    model = build_model(ck)
    res, tensors = convert(ck, model, rec, eval_model=False, log=lambda m: None)
    write_output(tmp_path / "whole", ck, rec, res, tensors, force=False, model=model)
    S.convert_streaming(ckpt(), rec, tmp_path / "stream", force=False, log=lambda m: None)
    assert _digest(tmp_path / "stream") == _digest(tmp_path / "whole")


def test_cli_streams_unless_asked_for_the_whole_model(tmp_path, cli_run, model_dir):
    """`convert` streams by default and says so; `--whole-model` writes the same bytes."""
    import yaml

    rec = tmp_path / "r.yaml"
    rec.write_text(
        yaml.safe_dump(
            {
                "calibration": {"files": ["default"], "tokens": 256, "seq_len": 32, "heldout_tokens": 64},
                "budget": {"fraction": 0.5, "context": 64},
                "layers": [{"select": "all", "k": RULES["budget"], "v": RULES["budget"]}],
            }
        )
    )
    code, _, err = cli_run(
        "convert", model_dir, "--recipe", rec, "--out", tmp_path / "s", "--device", "cpu", "--max-shard-mib", 1
    )
    assert code == 0 and "one layer at a time" in err, err
    code, _, err = cli_run(
        "convert", model_dir, "--recipe", rec, "--out", tmp_path / "w", "--device", "cpu", "--whole-model"
    )
    assert code == 0 and "whole model in memory: --whole-model" in err, err
    assert _digest(tmp_path / "s") == _digest(tmp_path / "w")


def test_cli_bad_shard_size_is_one_line(tmp_path, cli_run, model_dir):
    import yaml

    from checks import assert_one_line_error

    rec = tmp_path / "r.yaml"
    rec.write_text(yaml.safe_dump({"layers": [{"select": "all", "k": RULES["identity"]}]}))
    code, _, err = cli_run("convert", model_dir, "--recipe", rec, "--out", tmp_path / "o", "--max-shard-mib", 0)
    assert_one_line_error(code, err, "--max-shard-mib 0", "valid: a positive number")
    assert not (tmp_path / "o").exists()
