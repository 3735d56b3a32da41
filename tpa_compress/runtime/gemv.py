"""Triton: y = x @ W^T for a few rows of x (a batch-1 decode step), W read once over every SM.

For one row cuBLAS picks tiles that leave most SMs idle where W has few rows: on the H200
Gemma 3 270M's o_proj and down_proj (640 outputs) took ~5 us each for 1.3 and 2.6 MB, a
tenth of the memory bandwidth (docs/benchmarks.md, seventeenth run). Here each program owns
BN outputs and reads those rows of W whole (unrolled slices of BK values, all loads in
flight at once); programs of a wave cover every SM. `linear` is the runner's matmul: this
kernel for up to `MAX_ROWS` rows on CUDA, torch's otherwise. A torch custom op, so the
compiled pieces of the decode step call it as they call cuBLAS.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .kernels import INTERPRET, _p2, triton

MAX_ROWS = 2  # rows of x up to which the kernel is used (W is read once per row, from L2 after the first)
MAX_N = MAX_K = 4096  # W's shapes it is used for: measured faster than cuBLAS for every 270M and 1B matmul
                      # within them, slower for 1B's gate|up (13824 x 1152) and down (1152 x 6912)

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _gemv(x_ptr, w_ptr, y_ptr, N, K, sx, sw, sy, BN: tl.constexpr, BK: tl.constexpr, K_P: tl.constexpr):
        n = tl.program_id(0) * BN + tl.arange(0, BN)
        m = tl.program_id(1)
        nm = n < N
        acc = tl.zeros([BN], dtype=tl.float32)
        for k0 in tl.static_range(0, K_P, BK):
            k = k0 + tl.arange(0, BK)
            km = k < K
            w = tl.load(w_ptr + n[:, None] * sw + k[None, :], mask=nm[:, None] & km[None, :], other=0.0)
            xv = tl.load(x_ptr + m * sx + k, mask=km, other=0.0)
            acc += tl.sum(w.to(tl.float32) * xv.to(tl.float32)[None, :], 1)
        tl.store(y_ptr + m * sy + n, acc.to(y_ptr.dtype.element_ty), mask=nm)


@functools.cache
def _sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count if not INTERPRET else 8


def tiles(n: int, k: int, sms: int) -> tuple[int, int]:
    """(BN, BK): ~n / sms outputs per program (a power of two, 1..16), slices of at most
    4096 weights (32 per thread at 4 warps)."""
    bn = max(1, min(16, 1 << max(0, (n // sms).bit_length() - 1)))
    return bn, min(_p2(k), max(64, 4096 // bn))


def gemv_launch(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (..., K) with at most a few rows, w (N, K) contiguous -> (..., N) in x's dtype."""
    k, n = x.shape[-1], w.shape[0]
    x2 = x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    assert w.stride(1) == 1 and w.shape[1] == k
    y = torch.empty(x2.shape[0], n, dtype=x.dtype, device=x.device)
    bn, bk = tiles(n, k, _sms(x.device.index or 0) if x.is_cuda else 8)
    _gemv[(triton.cdiv(n, bn), x2.shape[0])](x2, w, y, n, k, x2.stride(0), w.stride(0), y.stride(0),
                                             BN=bn, BK=bk, K_P=triton.cdiv(k, bk) * bk, num_warps=4)
    return y.view(*x.shape[:-1], n)


@torch.library.custom_op("tpa_compress::gemv", mutates_args=())
def gemv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return gemv_launch(x, w)


@gemv.register_fake
def _(x, w):
    return x.new_empty(*x.shape[:-1], w.shape[0])


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ w^T: the kernel for a few rows (a batch-1 decode step) and a W within MAX_N x MAX_K,
    torch's matmul otherwise."""
    if x.numel() // x.shape[-1] <= MAX_ROWS and w.shape[0] <= MAX_N and w.shape[1] <= MAX_K:
        return gemv(x, w)
    return F.linear(x, w)
