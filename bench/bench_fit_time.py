"""Time one method's fit of one layer at a Gemma 3 shape's width (random weights and
calibration covariance), as conversion runs it: one thread (`fixed_threads`), the
budget pass's `spectrum`, then `factorize`, for K and V.

    python bench/bench_fit_time.py --shape 12b [--method activation_svd] [--rank 128]
        [--save fits.pt]

A global layer of a large model is where conversion spends its time (docs/benchmarks.md,
"Conversion memory by model size"); this isolates that fit from loading and forward passes.
--save writes the factors, to compare two trees' outputs.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tpa_compress.load.ckpt import VARIANTS, variant_config  # noqa: E402
from tpa_compress.methods import get_method  # noqa: E402
from tpa_compress.methods.base import LayerInputs  # noqa: E402
from tpa_compress.threads import fixed_threads  # noqa: E402


def random_inputs(shape: str, seed: int = 0) -> LayerInputs:
    """A global layer's weights and a full-rank input covariance, scaled as trained ones."""
    cfg = variant_config(shape)
    g = torch.Generator().manual_seed(seed)

    def rand(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64) / s[-1] ** 0.5

    h, kv, q = cfg.hidden_size, cfg.kv_size, cfg.num_heads * cfg.head_dim
    x = rand(h, h)
    stats = types.SimpleNamespace(covariance=x @ x.T, mean=rand(h))
    layer = next(i for i in range(cfg.num_layers) if cfg.window(i) is None)
    return LayerInputs(cfg, layer, rand(q, h), rand(kv, h), rand(kv, h), rand(h, q), stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="12b", choices=list(VARIANTS))
    ap.add_argument("--method", default="activation_svd")
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--save", type=Path, help="write the factors here (torch.save)")
    a = ap.parse_args()
    inp = random_inputs(a.shape)
    m = get_method(a.method)()
    out, total = {}, 0.0
    for t in ("k", "v"):
        with fixed_threads():
            t0 = time.perf_counter()
            m.spectrum(inp, t)
            t1 = time.perf_counter()
            out[t] = m.factorize(inp, t, a.rank).tensors
            t2 = time.perf_counter()
        total += t2 - t0
        print(f"{a.shape} {a.method} {t}: spectrum {t1 - t0:.2f} s, factorize {t2 - t1:.2f} s")
    print(f"{a.shape} {a.method}: {total:.2f} s per layer (K and V, both passes)")
    if a.save:
        torch.save(out, a.save)


if __name__ == "__main__":
    main()
