"""Golden regression values: per-layer held-out errors and perplexity on each bundled
evaluation domain (python-docs, prose) of each shipped recipe on the real Gemma 3 270M,
with a reduced (CI-sized) calibration (the default mix of both domains) and evaluation.

`make golden` (`python tests/golden_values.py`) rewrites tests/golden/gemma3-270m.yaml;
tests/test_golden_real.py recomputes the same numbers and fails when one regresses
beyond its tolerance. Only the sizes are reduced; the recipe is otherwise as shipped.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "gemma3-270m.yaml"
# fat is covered by fat-int3 (the same conversion, scored through its int3 cache), balanced-kl by
# balanced-healed-8x (the same KL-budgeted conversion, then healed): CI time
RECIPES = ("identity", "balanced", "aggressive", "fat-int3", "balanced-healed-8x")
# CI-sized: 8 x 512 calibration tokens, 1024 held-out, 4 x 512 evaluation windows per domain,
# a KL budget measured on 2 windows;
# healing: 3 steps of 2 x 256 tokens on the CPU, no time limit (the steps decide, as the seed does).
SIZES = {"tokens": 4096, "heldout_tokens": 1024, "seq_len": 512, "eval_windows": 4, "kl_windows": 2}
HEAL_SIZES = {"tokens": 2048, "heldout_tokens": 512, "seq_len": 256, "batch": 2, "steps": 3, "warmup_steps": 1}
TOLERANCE = {"rel_error": 0.02, "abs_error": 1e-4, "perplexity": 0.01}


def sized_recipe(name: str):
    """The shipped recipe with the CI sizes."""
    from tpa_compress.recipe import load_recipe

    rec = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    rec.calibration = dataclasses.replace(
        rec.calibration, tokens=SIZES["tokens"], heldout_tokens=SIZES["heldout_tokens"], seq_len=SIZES["seq_len"]
    )
    rec.eval = dataclasses.replace(rec.eval, seq_len=SIZES["seq_len"], max_windows=SIZES["eval_windows"])
    if rec.budget is not None and rec.budget.by == "kl":
        rec.budget = dataclasses.replace(rec.budget, kl_windows=SIZES["kl_windows"])
    if rec.heal is not None:
        rec.heal = dataclasses.replace(rec.heal, **HEAL_SIZES, device="cpu", max_seconds=float("inf"))
    return rec


def perplexity_before(ckpt, base_model) -> dict:
    """The original's perplexity per domain on the golden windows: what `convert --eval`
    reports as "before" for every recipe (their eval settings are the same SIZES)."""
    from tpa_compress.convert import _eval

    got = _eval(base_model, ckpt.tokenizer, sized_recipe("identity"), None, "eval before")
    return {d: round(p["perplexity"], 4) for d, p in got.items()}


def measure(ckpt, base_model, name: str) -> dict:
    """Convert a copy of the base model with the sized recipe and score it as `convert
    --eval` scores "after": as saved, through the recipe's cache when that cache is lossy.
    The "before" half of `--eval` is the same for every recipe: `perplexity_before`."""
    from tpa_compress.cache_formats import parse_spec
    from tpa_compress.convert import _eval, convert

    rec = sized_recipe(name)
    model = copy.deepcopy(base_model)
    res, _ = convert(ckpt, model, rec, eval_model=False, log=lambda m: None)
    lossy = rec.cache_dtype if parse_spec(rec.cache_dtype).format.lossy else None
    after = _eval(model, ckpt.tokenizer, rec, None, "eval after", cache=lossy)
    layers = {}
    for L in res.layers:
        for t in ("k", "v"):
            e = getattr(L, t).get("heldout_rel_error")
            if e is not None:
                layers[f"{L.layer}.{t}"] = round(float(e), 6)
    return {
        "perplexity_after": {d: round(p["perplexity"], 4) for d, p in after.items()},
        "kv_ratio_32k": round(res.totals["32768"]["ratio"], 4),
        "heldout_rel_error": layers,
    }


def regressions(golden: dict, got: dict) -> list[str]:
    """Human-readable list of what got worse than golden + tolerance (empty: pass)."""
    tol = TOLERANCE
    bad = []
    for d, g in golden["perplexity_after"].items():  # every domain: none may trade for another
        p = got["perplexity_after"].get(d)
        if p is None or p > g * (1 + tol["perplexity"]):
            bad.append(f"perplexity on {d} {p} > golden {g}")
    if abs(got["kv_ratio_32k"] - golden["kv_ratio_32k"]) > 1e-3:
        bad.append(f"KV ratio at 32K {got['kv_ratio_32k']} != golden {golden['kv_ratio_32k']}")
    for k, g in golden["heldout_rel_error"].items():
        e = got["heldout_rel_error"].get(k)
        if e is None or e > g * (1 + tol["rel_error"]) + tol["abs_error"]:
            bad.append(f"layer {k}: held-out error {e} > golden {g}")
    return bad


def main() -> None:
    from tpa_compress.load import load_model
    from tpa_compress.models import build_model

    ckpt = load_model("gemma3-270m")
    base = build_model(ckpt)
    before = perplexity_before(ckpt, base)
    doc = {
        "model": "gemma3-270m",
        "sizes": SIZES,
        "heal_sizes": HEAL_SIZES,
        "tolerance": TOLERANCE,
        "recipes": {n: {"perplexity_before": dict(before), **measure(ckpt, base, n)} for n in RECIPES},
    }
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(
        "# Regenerate: make golden (tests/golden_values.py, see its docstring)\n" + yaml.safe_dump(doc, sort_keys=False)
    )
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
