"""Compare one-shot fits at the same KV bytes on two held-out domains (CPU, real weights).

    python bench/bench_fits.py --model gemma3-270m --prose /tmp/prose/prose_eval.txt \
        --recipe recipes/balanced.yaml --method activation_svd --method score_aware_svd \
        --fraction 0.5 --fraction 0.25 --windows 12 --json /tmp/fits.json

Each variant is the recipe with every layer rule's K and V method replaced by --method
(`name` or `name:key=value,key=value` for parameters) and, with --fraction, the budget
fraction replaced; a `--rank-by` replaces the budget's `by`. The model is calibrated once
(the statistics are reused: every variant starts from the original model), converted
in place, scored on --windows windows of --seq-len tokens of the bundled evaluation
split (Python docs) and of --prose, and restored. Prints one row per variant: KV
fraction at the budget context, K/V ranks of the converted layers, perplexity delta
per domain against the original.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_method(spec: str):
    name, _, rest = spec.partition(":")
    params = {}
    for kv in filter(None, rest.split(",")):
        k, _, v = kv.partition("=")
        params[k] = json.loads(v) if v not in ("true", "false") else v == "true"
    return name, params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--prose", required=True, type=Path)
    ap.add_argument("--recipe", default="recipes/balanced.yaml")
    ap.add_argument("--method", action="append", default=None)
    ap.add_argument("--fraction", action="append", type=float, default=None)
    ap.add_argument("--rank-by", action="append", default=None, help="budget `by` values to try")
    ap.add_argument("--windows", type=int, default=12)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--calib-tokens", type=int, default=None, help="override calibration.tokens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cache", type=Path, help="folder that keeps calibration statistics between runs")
    ap.add_argument(
        "--base",
        type=Path,
        help="reuse the original's perplexities from an earlier --json "
        "of the same model, prose file, windows and seq-len",
    )
    a = ap.parse_args()

    import torch
    import yaml

    import tpa_compress.convert as conv
    from tpa_compress.data import default_eval_files, read_texts
    from tpa_compress.evaluate.perplexity import make_windows, perplexity
    from tpa_compress.load import load_model
    from tpa_compress.models import build_model
    from tpa_compress.recipe import parse_recipe

    torch.set_num_threads(a.threads)
    ckpt = load_model(a.model)
    model = build_model(ckpt, torch.float32, "cpu")
    tok = ckpt.tokenizer
    bos = tok.bos_id if tok.add_bos else None
    domains = {"code": default_eval_files(), "prose": [a.prose]}
    evw = {
        d: make_windows(tok.encode(read_texts(f), add_bos=False), a.seq_len, bos, a.windows) for d, f in domains.items()
    }

    cache = {}
    real_collect = conv.collect_stats

    def cached_collect(model_, windows, **kw):
        # Every moment pass keeps 8 whole windows (for attn_refit), so one calibration
        # serves every method; the result is kept on disk for later runs (--cache).
        kw = {k: v for k, v in kw.items() if k != "progress"}
        if kw.get("moments", True):
            kw["windows_kept"] = max(kw.get("windows_kept", 0), 8)
        key_parts = [
            a.model,
            hashlib.sha1(windows.numpy().tobytes()).hexdigest(),
            kw.get("layers"),
            kw.get("moments", True),
            kw.get("skip", 0),
            kw.get("sample_rows", 4096),
            kw.get("windows_kept", 0),
        ]
        key = hashlib.sha1(json.dumps(key_parts).encode()).hexdigest()[:16]
        path = a.cache / f"{key}.pt" if a.cache else None
        if key not in cache and path is not None and path.exists():
            cache[key] = torch.load(path, weights_only=False)
        if key not in cache:
            cache[key] = real_collect(model_, windows, **kw)
            if path is not None:
                a.cache.mkdir(parents=True, exist_ok=True)
                torch.save(cache[key], path)
        return cache[key]

    conv.collect_stats = cached_collect
    orig = [(b.self_attn.k_proj, b.self_attn.v_proj) for b in model.layers]

    def score():
        return {d: perplexity(model, w, tok.add_bos).perplexity for d, w in evw.items()}

    t = time.time()
    prev = json.loads(a.base.read_text()) if a.base else None
    same = prev and (prev["model"], prev["windows"], prev["seq_len"], prev.get("prose")) == (
        a.model,
        a.windows,
        a.seq_len,
        str(a.prose),
    )
    base = prev["base"] if same else score()
    print(
        f"{a.model} original: "
        + "  ".join(f"{d} {p:.4f}" for d, p in base.items())
        + f"  ({a.windows} x {a.seq_len} per domain, {time.time() - t:.0f}s)",
        flush=True,
    )
    raw = yaml.safe_load(Path(a.recipe).read_text())
    if a.calib_tokens:
        raw["calibration"]["tokens"] = a.calib_tokens
    rows = []
    for frac in a.fraction or [(raw.get("budget") or {}).get("fraction")]:
        for by in a.rank_by or [None]:
            for spec in a.method or ["activation_svd"]:
                name, params = parse_method(spec)
                d = copy.deepcopy(raw)
                if frac is not None:
                    d["budget"]["fraction"] = frac
                if by is not None:
                    d["budget"]["by"] = by
                for rule in d["layers"]:
                    for tgt in ("k", "v"):
                        if rule.get(tgt):
                            rule[tgt] = {
                                "method": name,
                                "rank": rule[tgt]["rank"],
                                **({"params": params} if params else {}),
                            }
                recipe = parse_recipe(d, f"{a.recipe} [{spec}, {frac}, {by}]")
                t = time.time()
                res, _ = conv.convert(ckpt, model, recipe, eval_model=False, log=lambda *_: None)
                fit_s = time.time() - t
                ppl = score()
                ranks = [f"{r.layer}:{r.k['rank']}/{r.v['rank']}" for r in res.layers if r.k["rank"] or r.v["rank"]]
                ratio = res.totals[str(recipe.budget.context if recipe.budget else 32768)]["ratio"]
                losses = ("start_heldout_loss", "refit_heldout_loss")
                refit = {
                    f"{r.layer}{t}": [round(getattr(r, t)[n], 4) for n in losses]
                    for r in res.layers
                    for t in "kv"
                    if "refit_heldout_loss" in getattr(r, t)
                }
                row = {
                    "refit_loss": refit,
                    "method": spec,
                    "fraction": frac,
                    "by": by,
                    "kv_ratio": ratio,
                    "ranks": ranks,
                    "ppl": ppl,
                    "delta_pct": {k: 100 * (ppl[k] / base[k] - 1) for k in ppl},
                    "fit_s": fit_s,
                }
                rows.append(row)
                print(
                    f"{spec:40s} frac {frac or 0:.2f} by {by or 'error':5s} kv {ratio:.3f}  "
                    + "  ".join(f"{k} {v:+.2f}%" for k, v in row["delta_pct"].items())
                    + f"  ranks {' '.join(ranks)}  ({fit_s:.0f}s fit)"
                    + (f"  refit held-out loss start->end {refit}" if refit else ""),
                    flush=True,
                )
                for b, (k, v) in zip(model.layers, orig, strict=True):
                    b.self_attn.k_proj, b.self_attn.v_proj = k, v
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "model": a.model,
                    "prose": str(a.prose),
                    "base": base,
                    "windows": a.windows,
                    "seq_len": a.seq_len,
                    "rows": rows,
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
