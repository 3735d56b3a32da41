"""Wall time and peak memory of `tpa-compress analyze` on a real model (default: the
embedded Gemma 3 270M, CPU, 32K calibration tokens). A benchmark, not a test.

    python bench/bench_analyze.py [--model gemma3-270m] [--calib-tokens 32768] [--out DIR]

Runs the command's own function in this process, end to end (load, tokenize, every
stage, report and plots), prints the stage times it recorded, the total wall time and
the process's peak RSS (resource.getrusage), against the issue's budgets (<= 120 s,
<= 2x the fp32 model size), and the FLOP rate of the calibration forward pass (the
floor no analysis code can go under).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path


def forward_flops(m: dict, tokens: int, seq_len: int) -> float:
    """2 FLOPs per weight per token outside the embedding, plus attention over a full
    seq_len window per token (QKᵀ and AV; SDPA computes masked entries too)."""
    d, q, kv, f = (
        m["hidden_size"],
        m["num_heads"] * m["head_dim"],
        m["num_kv_heads"] * m["head_dim"],
        m["intermediate_size"],
    )
    per_layer = 2 * (d * (q + 2 * kv) + q * d + 3 * d * f) + 4 * seq_len * q
    return float(tokens) * m["num_layers"] * per_layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--calib-tokens", type=int, default=32768)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--out", type=Path, default=None, help="report folder (default: a temp dir)")
    args = ap.parse_args()

    t_start = time.time()
    import tpa_compress  # noqa: F401  first: it sets OMP_WAIT_POLICY before torch loads

    # isort: split
    import torch

    from tpa_compress.analyze.cli import analyze_cmd

    t_call = time.time()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-analyze-"))
    analyze_cmd(
        model=args.model,
        data=None,
        context="4096,32768",
        batch=1,
        out=out,
        calib_tokens=args.calib_tokens,
        seq_len=args.seq_len,
        variant=None,
        device="cpu",
    )
    t_end = time.time()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    doc = json.loads((out / "report.json").read_text())
    sec, m = doc["timing"]["seconds"], doc["model"]
    tokens = doc["settings"]["calibration"]["tokens"]
    wall = t_end - t_start
    rows = [
        ("imports (torch, tpa_compress)", t_call - t_start),
        ("load model (loader + build, fp32)", sec["load"]),
        ("tokenize", sec["tokenize"]),
        ("weight spectra", sec["weights"]),
        ("activations (forward pass + stats)", sec["activations"]),
        ("Q/K geometry", sec["geometry"]),
        ("report.json, report.md, plots, terminal", (t_end - t_call) - sec["total_before_writing"]),
    ]
    flops = forward_flops(m, tokens, args.seq_len)
    fp32 = m["fp32_bytes"]
    print(
        f"\nanalyze benchmark: {m['name']}, {tokens:,} calibration tokens "
        f"({tokens // args.seq_len} x {args.seq_len}), {torch.get_num_threads()} threads"
    )
    print(f"| {'stage':42s} | {'seconds':>8s} |")
    for name, s in rows:
        print(f"| {name:42s} | {s:8.1f} |")
    print(f"| {'total wall':42s} | {wall:8.1f} |  budget 120 s: {'met' if wall <= 120 else 'NOT met'}")
    print(
        f"calibration forward ≈ {flops / 1e12:.2f} TFLOP: {flops / 1e9 / sec['activations']:.0f} GFLOP/s "
        f"achieved in the activations stage"
    )
    print(
        f"peak RSS {rss / 2**30:.2f} GiB = {rss / fp32:.2f}x the fp32 model ({fp32 / 2**30:.2f} GiB); "
        f"budget 2x: {'met' if rss <= 2 * fp32 else 'NOT met'}"
    )
    print(
        f"  of which loading the model (loader + build_model) reached "
        f"{doc['timing']['peak_rss_after_load_bytes'] / 2**30:.2f} GiB before any analysis ran"
    )
    print(f"report: {out}")


if __name__ == "__main__":
    main()
