"""Perplexity of the original and of recipes converted in-process, on the first `--windows`
BOS-led 512-token windows of each evaluation domain (the windows of bench/probes/joint_kv_ppl.py),
CPU or GPU: a quick side-by-side of recipes (e.g. a budget by error against one by KL).

    PYTHONPATH=. python bench/probes/recipe_ppl.py --model smollm2-135m \
        --recipes recipes/balanced.yaml,recipes/balanced-kl.yaml --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: frontier's windows

from frontier import eval_windows  # noqa: E402
from joint_kv_ppl import ppl  # noqa: E402

from tpa_compress.convert import convert  # noqa: E402
from tpa_compress.load import load_model  # noqa: E402
from tpa_compress.models import build_model  # noqa: E402
from tpa_compress.recipe import load_recipe  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--recipes", default="recipes/balanced.yaml")
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json")
    a = ap.parse_args()
    ck = load_model(a.model)
    tok = ck.tokenizer
    evals = eval_windows(tok, a.windows)
    out = {"original": {d: ppl(build_model(ck, torch.float32, a.device), w, tok, a.device) for d, w in evals.items()}}
    print("original", out["original"], flush=True)
    for name in filter(None, a.recipes.split(",")):
        m = build_model(ck, torch.float32, a.device)
        res, _ = convert(ck, m, load_recipe(name), eval_model=False, log=print)
        out[name] = {
            "ppl": {d: ppl(m, w, tok, a.device) for d, w in evals.items()},
            "ranks": [(lay.k.rank, lay.v.rank) for lay in res.layouts],
            "kv": res.totals.get("32768", {}).get("ratio"),
        }
        print(name, out[name], flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
