"""One-row matmuls of a decode step: torch's (cuBLAS) vs ours (runtime/gemv.py), cold weights.

    python bench/bench_gemv.py --shapes 270m,1b --rows 1,2

Each timed call reads a different copy of W (copies in all > 4x L2, as in a decode step
where the whole model streams between two uses of a layer's weight), 64 calls in one CUDA
graph, median of 20 replays. Prints us per call and the bandwidth W's bytes imply.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tpa_compress.runtime import gemv  # noqa: E402

# (name, N, K) of the matmuls of one layer's decode step, Q/K/V and gate|up fused
SHAPES = {
    "270m": [("qkv", 1536, 640), ("o_proj", 640, 1024), ("gate_up", 4096, 640), ("down", 640, 2048)],
    "1b": [("qkv", 1536, 1152), ("o_proj", 1152, 1024), ("gate_up", 13824, 1152), ("down", 1152, 6912)],
}


def time_calls(fn, xs, ws, reps=20):
    """Median us per call of fn(x, w) over the copies, captured in one graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for x, w in zip(xs, ws, strict=True):
            fn(x, w)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for x, w in zip(xs, ws, strict=True):
            fn(x, w)
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1e3 / len(ws))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="270m,1b")
    ap.add_argument("--rows", default="1,2")
    a = ap.parse_args()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    print(torch.cuda.get_device_name(), f"L2 {l2 / 2**20:.0f} MiB")
    for model in a.shapes.split(","):
        for name, n, k in SHAPES[model]:
            nbytes = n * k * 2
            copies = max(8, min(64, 4 * l2 // nbytes + 1))
            ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5 for _ in range(copies)]
            for rows in map(int, a.rows.split(",")):
                xs = [torch.randn(rows, 1, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
                err = (gemv.gemv(xs[0], ws[0]).float() - F.linear(xs[0], ws[0]).float()).abs().max().item()
                t_torch = time_calls(F.linear, xs, ws)
                t_ours = time_calls(gemv.gemv, xs, ws)
                bn, k1, k2 = gemv.tiles(n, k, torch.cuda.get_device_properties(0).multi_processor_count)
                print(
                    f"{model:5s} {name:8s} N={n:6d} K={k:5d} rows={rows}: torch {t_torch:6.2f} us "
                    f"({nbytes / t_torch / 1e6:5.2f} TB/s), "
                    f"gemv {t_ours:6.2f} us ({nbytes / t_ours / 1e6:5.2f} TB/s) "
                    f"BN={bn} K={k1}+{k2}, max |diff| {err:.3g}",
                    flush=True,
                )
            del ws


if __name__ == "__main__":
    main()
