"""Healing (tpa_compress/heal.py) on tiny random models: it lowers the held-out KL, trains only
the factor tensors, is deterministic for a fixed seed, respects its time bound, saves what it
trained, and rejects bad `heal:` values before any work."""

import json
import random

import pytest
import torch
import yaml

from checks import assert_one_line_error
from tiny import char_tokenizer, random_state, tiny_config
from tpa_compress.convert import convert, write_output
from tpa_compress.errors import TPAError
from tpa_compress.heal import lr_at, trainable
from tpa_compress.load import load_model
from tpa_compress.models import build_model
from tpa_compress.recipe import parse_recipe
from tpa_compress.save import save_hf_folder

WORDS = "the of a is and river stone light cache token model under over north south quick slow".split()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("heal")
    rng = random.Random(0)
    (root / "text.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(6000)))
    cfg = tiny_config("gemma3")
    (root / "m").mkdir()
    save_hf_folder(root / "m", cfg, random_state(cfg, 1), char_tokenizer())
    return root


def recipe_dict(root, heal=None, v=None, **top):
    text = str(root / "text.txt")
    d = {
        "seed": 3,
        "calibration": {"files": [text], "tokens": 512, "seq_len": 32, "heldout_tokens": 64},
        "eval": {"files": [text], "seq_len": 32, "max_windows": 4},
        "layers": [
            {
                "select": "all",
                "k": {"method": "activation_svd", "rank": 8},
                "v": v or {"method": "activation_svd", "rank": 8},
            }
        ],
        **top,
    }
    if heal is not None:
        d["heal"] = {
            "files": [text],
            "tokens": 2048,
            "heldout_tokens": 512,
            "seq_len": 32,
            "batch": 4,
            "steps": 16,
            "lr": 3e-3,
            **heal,
        }
    return d


def run_convert(root, d, eval_model=False):
    ck = load_model(root / "m")
    model = build_model(ck)
    logs = []
    res, tensors = convert(ck, model, parse_recipe(d, "t.yaml"), eval_model=eval_model, log=logs.append)
    return ck, model, res, tensors, logs


@pytest.mark.each_device
def test_heal_lowers_heldout_kl_and_the_folder_reloads_healed(root, tmp_path, device):
    d = recipe_dict(root, heal={"device": device})
    ck, model, res, tensors, _ = run_convert(root, d, eval_model=True)
    h = res.heal
    assert h["steps"] == 16 and h["stopped_by"] == "steps" and h["device"] == device
    assert next(model.parameters()).device.type == "cpu"  # back where convert runs
    assert h["heldout_kl_after"] < 0.8 * h["heldout_kl_before"], h
    assert h["loss_last"] < h["loss_first"]
    # the converted model's perplexity before healing is recorded beside convert's before/after
    assert set(h["perplexity_before_heal"]) == set(res.perplexity)  # one entry per evaluated text
    for name, before in h["perplexity_before_heal"].items():
        assert before["tokens"] == res.perplexity[name]["after"]["tokens"]
        assert before["perplexity"] != res.perplexity[name]["after"]["perplexity"]
    write_output(tmp_path / "o", ck, parse_recipe(d, "t.yaml"), res, tensors, force=False, model=model)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["heal"]["heldout_kl_after"] == h["heldout_kl_after"]
    md = (tmp_path / "o" / "report.md").read_text()
    assert "## Healing" in md and f"{h['heldout_kl_before']:.4f} -> {h['heldout_kl_after']:.4f}" in md
    ids = torch.randint(4, 33, (2, 40), generator=torch.Generator().manual_seed(5))
    back = build_model(load_model(tmp_path / "o"))
    with torch.no_grad():
        want, got = model.logits(model(ids)), back.logits(back(ids))
    assert torch.equal(want, got)


def test_only_factor_tensors_change(root):
    tpa_v = {"method": "tucker_shared", "rank": 16, "params": {"head_rank": 1}}  # a tpa_fixed V
    _, plain, _, plain_t, _ = run_convert(root, recipe_dict(root, v=tpa_v))
    _, healed, res, healed_t, _ = run_convert(root, recipe_dict(root, heal={}, v=tpa_v))
    names = set(trainable(healed))
    assert any(n.endswith("k_proj.down.weight") for n in names) and any(n.endswith("v_proj.head_factor") for n in names)
    assert not any("sink" in n for n in names)
    a, b = plain.state_dict(), healed.state_dict()
    assert a.keys() == b.keys() and any(k.endswith("sink.weight") for k in a)
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    canon = {k: "model." + k for k in a}
    assert changed and {canon[k] for k in changed} <= names, sorted(changed)
    assert set(healed_t) == set(plain_t)  # the folder gets the same tensors, the factors trained
    assert all(torch.equal(healed_t[n], plain_t[n]) == (n not in names) for n in plain_t)
    assert all(not p.requires_grad for p in healed.parameters())


def test_fixed_seed_gives_identical_tensors(root):
    runs = [run_convert(root, recipe_dict(root, heal={"steps": 8}))[3] for _ in range(2)]
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])
    other = run_convert(root, recipe_dict(root, heal={"steps": 8, "seed": 11}))[3]
    assert any(not torch.equal(runs[0][n], other[n]) for n in other)  # the seed orders the data


def test_time_bound_stops_early_and_says_so(root):
    *_, res, _, logs = run_convert(root, recipe_dict(root, heal={"steps": 100000, "max_seconds": 1e-6}))
    h = res.heal
    assert h["steps"] == 1 and h["stopped_by"] == "max_seconds"  # the first step always runs
    assert any("max_seconds 1e-06 reached after 1 of 100000 steps" in m for m in logs)
    *_, res, _, _ = run_convert(root, recipe_dict(root, heal={"steps": 100000, "max_seconds": 0.5}))
    h = res.heal
    assert h["stopped_by"] == "max_seconds" and 1 < h["steps"] < 100000
    assert h["seconds"] <= 0.5 + 3 * h["seconds"] / h["steps"]  # at most about one step over


def test_schedule_warms_up_then_decays_to_zero(root):
    spec = parse_recipe(recipe_dict(root, heal={"steps": 100, "lr": 1e-3}), "t.yaml").heal
    assert spec.warmup_steps == 10
    lrs = [lr_at(s, spec) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(x >= y for x, y in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1] < 1e-6


def test_yaml_exponent_lr_is_a_number(root):
    d = yaml.safe_load("heal: {lr: 1e-4, max_seconds: 60}")  # YAML 1.1 reads 1e-4 as a string
    assert d["heal"]["lr"] == "1e-4"
    spec = parse_recipe({**recipe_dict(root), "heal": d["heal"]}, "t.yaml").heal
    assert spec.lr == 1e-4 and spec.max_seconds == 60.0 and spec.seed == 3 and spec.device == "auto"


def test_text_too_short_fails_before_any_work(root, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the river " * 100)
    d = recipe_dict(root, heal={"files": [str(short)]})
    with pytest.raises(TPAError, match="heal: .*short.txt has 1000 tokens, too few for 2048 training"):
        run_convert(root, d)


def test_heldout_windows_must_not_overlap_calibration(root):
    d = recipe_dict(root, heal={})
    d["heal"]["files"] = d["calibration"]["files"]
    d["calibration"]["tokens"] = 2 * len((root / "text.txt").read_text())  # more than the text: all of it
    with pytest.raises(TPAError, match="heal: the held-out windows .* overlap the .* tokens calibration uses"):
        run_convert(root, d)


@pytest.mark.parametrize(
    "heal,needle",
    [
        ({"step": 10}, "heal: unknown key 'step'; valid: batch, device,"),
        ({"steps": 0}, "heal.steps: 0 is not valid; expected an integer >= 1"),
        ({"steps": -5}, "heal.steps: -5 is not valid"),
        ({"steps": 2.5}, "heal.steps: 2.5 is not valid"),
        ({"lr": 0}, "heal.lr: 0 is not valid; expected a number > 0"),
        ({"lr": -1e-4}, "heal.lr: -0.0001 is not valid"),
        ({"lr": "fast"}, "heal.lr: 'fast' is not valid; expected a number > 0"),
        ({"lr": "nan"}, "heal.lr: 'nan' is not valid"),
        ({"max_seconds": 0}, "heal.max_seconds: 0 is not valid"),
        ({"batch": 0}, "heal.batch: 0 is not valid"),
        ({"tokens": 16}, "heal.tokens: 16 is not valid; expected an integer >= 32"),
        ({"warmup_steps": 16}, "heal.warmup_steps: 16 is not valid; expected fewer than steps (16)"),
        ({"seed": "x"}, "heal.seed: 'x' is not valid; expected an integer"),
        ({"device": "tpu"}, "heal.device: 'tpu' is not valid; valid: auto, cpu, cuda"),
        ({"device": "cuda"}, "heal.device: 'cuda' was asked but no CUDA device is available"),
    ],
)
def test_bad_heal_values_exit_2_naming_the_key(cli_run, monkeypatch, root, tmp_path, heal, needle):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe_dict(root, heal=heal)))
    code, _, err = cli_run("convert", root / "m", "--recipe", p, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "r.yaml", needle)
    assert not (tmp_path / "o").exists()


def test_heal_on_a_recipe_that_converts_nothing(cli_run, root, tmp_path):
    d = recipe_dict(root, heal={})
    d["layers"] = [{"select": "all", "k": "keep"}]
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(d))
    code, _, err = cli_run("convert", root / "m", "--recipe", p, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "r.yaml: heal: the recipe converts no K/V projection")
    assert not (tmp_path / "o").exists()
    d["layers"] = [{"select": {"layers": "40-41"}, "k": {"method": "activation_svd", "rank": 8}}]
    with pytest.raises(TPAError, match=r"layers\[0\]\.select\.layers names layer 40\.\.41"):
        run_convert(root, d)


def test_cli_convert_heals_with_a_progress_bar(cli_run, root, tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe_dict(root, heal={"steps": 4, "device": "cpu"})))  # auto: CUDA where present
    code, out, err = cli_run("convert", root / "m", "--recipe", p, "--out", tmp_path / "o", "--eval")
    assert code in (0, None), err
    assert "heal" in err and "4/4" in err and "loss " in err
    assert "healing on cpu: 4 steps of 4 x 32 tokens" in out
    assert "perplexity of the converted model before -> after healing" in out
    assert json.loads((tmp_path / "o" / "report.json").read_text())["heal"]["steps"] == 4


def test_heal_through_a_quantized_cache(root):
    """through_cache (the default) trains the student as served: K/V read through the recipe's
    cache rounding, gradients straight through it. The held-out KL is measured the same way;
    turning it off trains on exact reads, so the factors end up different."""
    cache = "int3:group=8,recent=0"
    d = recipe_dict(root, heal={"steps": 8}, cache_dtype=cache)
    *_, res, through, logs = run_convert(root, d)
    h = res.heal
    assert h["through_cache"] == cache and any(f"through the {cache} cache" in m for m in logs)
    assert h["heldout_kl_after"] < h["heldout_kl_before"]
    *_, res_off, exact, _ = run_convert(
        root, recipe_dict(root, heal={"steps": 8, "through_cache": False}, cache_dtype=cache)
    )
    assert res_off.heal["through_cache"] is None
    assert res_off.heal["heldout_kl_before"] < h["heldout_kl_before"]  # exact reads lose less
    assert any(not torch.equal(through[n], exact[n]) for n in through)
    *_, res_bf16, _, _ = run_convert(root, recipe_dict(root, heal={"steps": 8}))
    assert res_bf16.heal["through_cache"] is None  # a lossless cache: nothing to read through


def test_simulated_reads_pass_gradients_straight_through(root):
    from tpa_compress.evaluate.simulate import simulated_cache

    _, model, _, _, _ = run_convert(root, recipe_dict(root))
    ids = torch.randint(4, 33, (2, 40), generator=torch.Generator().manual_seed(5))
    params = trainable(model)
    with torch.no_grad(), simulated_cache(model, "int4:group=8,recent=0"):
        want = model(ids)
    for p in params.values():
        p.requires_grad_(True)
    with simulated_cache(model, "int4:group=8,recent=0"):
        got = model(ids)
    assert torch.equal(want, got)  # the same values with autograd on
    got.square().mean().backward()
    grads = [p.grad for p in params.values()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
