"""Does healing pay, on every evaluation text? A benchmark, not a test.

Converts a model with a recipe that has a `heal:` section (or a recipe plus `--heal JSON`,
which replaces/sets that section) through the real `convert` pipeline, and measures
perplexity on each evaluation text, on the same windows, for three models: the original
(the converted model with the original K/V projections swapped back in), the converted
model before healing, and after. Healing must not trade one domain for another, so give
every text users will see (--text, repeatable; default: the bundled evaluation slice).

    python bench/bench_heal.py --recipe recipes/balanced-healed.yaml --device cuda \\
        --text tpa_compress/data/eval_small.txt --text tpa_compress/data/prose_eval_small.txt
    python bench/bench_heal.py --recipe recipes/balanced.yaml --windows 2 \\
        --heal '{"seq_len": 256, "batch": 1, "steps": 6, "max_seconds": 150, "heldout_tokens": 512}'

--json FILE writes the numbers and the heal report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import tpa_compress  # noqa: F401  (first: it sets OMP_WAIT_POLICY before torch loads)

# isort: split
import torch
import yaml

import tpa_compress.convert as C
from tpa_compress.data import default_eval_files, read_texts
from tpa_compress.evaluate.perplexity import make_windows, perplexity
from tpa_compress.heal import _teacher
from tpa_compress.load import load_model
from tpa_compress.models import build_model
from tpa_compress.recipe import parse_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model path or embedded name (default gemma3-270m)")
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--heal", default=None, help="JSON: the heal section (replaces the recipe's)")
    ap.add_argument("--text", action="append", default=None, help="evaluation text (repeatable)")
    ap.add_argument("--windows", type=int, default=8, help="512-token windows per text")
    ap.add_argument("--device", default="cpu", help="where convert runs (heal.device picks its own)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.time()
    say = lambda m: print(f"[{time.time() - t0:6.0f}s] {m}", flush=True)  # noqa: E731
    d = yaml.safe_load(Path(a.recipe).read_text())
    if a.heal is not None:
        d["heal"] = json.loads(a.heal)
    rec = parse_recipe(d, a.recipe + (" + --heal" if a.heal else ""))
    if rec.heal is None:
        raise SystemExit("the recipe has no heal section; give --heal '{...}'")
    ckpt = load_model(a.model)
    model = build_model(ckpt, torch.float32, a.device)
    tok = ckpt.tokenizer
    texts = [Path(t) for t in a.text] if a.text else default_eval_files()
    windows = {
        str(t): make_windows(
            tok.encode(read_texts([t]), add_bos=False),
            512,
            tok.bos_id if tok.add_bos else None,
            a.windows,
            source=str(t),
        )
        for t in texts
    }
    ppl: dict[str, dict] = {}

    def measure(label: str) -> None:
        ppl[label] = {t: perplexity(model, w, tok.add_bos, device=a.device).perplexity for t, w in windows.items()}
        say(f"{label}: " + ", ".join(f"{Path(t).name} {p:.4f}" for t, p in ppl[label].items()))

    stage = C.heal_stage

    def measured_stage(m, data, weight_dtype, progress, log, evaluate=None):
        with _teacher(m, data.originals):
            measure("original")
        measure("converted")
        out = stage(m, data, weight_dtype, progress, log, evaluate)
        measure("healed")
        return out

    C.heal_stage = measured_stage
    try:
        res, _ = C.convert(ckpt, model, rec, eval_model=False, log=say)
    finally:
        C.heal_stage = stage
    h = {k: v for k, v in res.heal.items() if k != "losses"}
    print(json.dumps(h, indent=1))
    print(f"\n| text ({a.windows} x 512) | original | converted | healed |\n|---|---|---|---|")
    for t in windows:
        o, b, af = (ppl[k][t] for k in ("original", "converted", "healed"))
        pct = lambda x, o=o: f"{x:.4f} ({100 * (x / o - 1):+.2f}%)"
        print(f"| {Path(t).name} | {o:.4f} | {pct(b)} | {pct(af)} |")
    print(f"KV at 32K: {res.totals['32768']['ratio']:.3f} of the original; total {time.time() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "perplexity": ppl,
                    "heal": res.heal,
                    "kv_ratio_32k": res.totals["32768"]["ratio"],
                    "windows": a.windows,
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
