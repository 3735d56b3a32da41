"""Triton: a residual add and the RMSNorms around it as one kernel per row.

The decode step's layer tail is, per family, a chain of residual adds and RMSNorms (Llama:
add + norm after attention, add + the next layer's input norm after the MLP; Gemma 3's
sandwich: norm + add + norm, twice). Eagerly each RMSNorm is ~6 kernels; these fuse each
pattern into one launch, without torch.compile (Triton's disk cache loads a built kernel in
milliseconds, where torch.compile costs seconds of import and tracing per process).

    add_norm(h, a, norm)                 -> (s = h + a,          norm(s))
    norm_add_norm(h, a, norm_a, norm_n)  -> (s = h + norm_a(a),  norm_n(s))

h, a: (..., hidden) in the activation dtype; a norm is a models.common.RMSNorm (weight,
offset, eps), its gain offset + weight in fp32 as RMSNorm.gain(). Rounding is the eager
code's (models/common.py rms_norm): a norm computes in fp32 and rounds its output to the
activation dtype, the residual add is one add rounded to the activation dtype. One program
per row, BLOCK = next_power_of_2(hidden) (hidden sizes up to 8192: Llama-3-70B). Under
programmatic dependent launch (Hopper and newer, as gemv.py) a program loads its gains
before it waits for the previous kernel: no kernel of the step writes them.

The kernel runs where Triton runs (CUDA tensors, or any tensor under TRITON_INTERPRET=1, the
tests' CPU mode); elsewhere `torch_add_norm` / `torch_norm_add_norm`, the eager ops with the
same signatures.
"""

from __future__ import annotations

import functools

import torch

from ..models.common import rms_norm
from .kernels import INTERPRET, pdl_available, triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _gain(w_ptr, offs, mask, offset):
        """A norm's fp32 gain, offset + w (RMSNorm.gain)."""
        return tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32) + offset

    @triton.jit
    def _norm_row(x, g, N, eps, dt: tl.constexpr):
        """RMSNorm of one fp32 row x (masked lanes 0) with gain g, as rms_norm: fp32 math,
        rounded to dt."""
        r = tl.rsqrt(tl.sum(x * x, 0) / N + eps)
        return ((x * r) * g).to(dt)

    @triton.jit
    def _wait(PDL: tl.constexpr):
        """Under programmatic dependent launch: wait for the previous kernel's data (the
        gains, which no kernel of the step writes, are loaded before), then let the next
        kernel launch."""
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()

    @triton.jit
    def _add_norm(h_ptr, a_ptr, w_ptr, s_ptr, x_ptr, N, offset, eps, BLOCK: tl.constexpr, PDL: tl.constexpr):
        row = tl.program_id(0).to(tl.int64) * N
        offs = tl.arange(0, BLOCK)
        m = offs < N
        dt = s_ptr.dtype.element_ty
        g = _gain(w_ptr, offs, m, offset)
        _wait(PDL)
        h = tl.load(h_ptr + row + offs, mask=m, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + row + offs, mask=m, other=0.0).to(tl.float32)
        s = (h + a).to(dt)
        tl.store(s_ptr + row + offs, s, mask=m)
        tl.store(x_ptr + row + offs, _norm_row(s.to(tl.float32), g, N, eps, dt), mask=m)

    @triton.jit
    def _norm_add_norm(
        h_ptr,
        a_ptr,
        wa_ptr,
        wn_ptr,
        s_ptr,
        x_ptr,
        N,
        off_a,
        eps_a,
        off_n,
        eps_n,
        BLOCK: tl.constexpr,
        PDL: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64) * N
        offs = tl.arange(0, BLOCK)
        m = offs < N
        dt = s_ptr.dtype.element_ty
        ga, gn = _gain(wa_ptr, offs, m, off_a), _gain(wn_ptr, offs, m, off_n)
        _wait(PDL)
        h = tl.load(h_ptr + row + offs, mask=m, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + row + offs, mask=m, other=0.0).to(tl.float32)
        na = _norm_row(a, ga, N, eps_a, dt)
        s = (h + na.to(tl.float32)).to(dt)
        tl.store(s_ptr + row + offs, s, mask=m)
        tl.store(x_ptr + row + offs, _norm_row(s.to(tl.float32), gn, N, eps_n, dt), mask=m)


@functools.cache
def _pdl(device_index: int) -> bool:
    return pdl_available(torch.device("cuda", device_index))


def kernel_serves(h: torch.Tensor) -> bool:
    """Triton is installed and runs on h's device (CUDA, or the CPU interpreter)."""
    return triton is not None and (h.is_cuda or INTERPRET)


def _rows(t: torch.Tensor) -> torch.Tensor:
    t = t.reshape(-1, t.shape[-1])
    return t if t.is_contiguous() else t.contiguous()


def _launch(kernel, h, a, weights, scalars):
    n = h.shape[-1]
    assert a.shape == h.shape and a.dtype == h.dtype, (a.shape, h.shape, a.dtype, h.dtype)
    h2, a2 = _rows(h), _rows(a)
    s, x = torch.empty_like(h2), torch.empty_like(h2)
    block = triton.next_power_of_2(n)
    warps = min(16, max(1, block // 256))  # ~8 values per thread and tensor
    pdl = h.is_cuda and _pdl(h.device.index or 0)
    kernel[(h2.shape[0],)](
        h2,
        a2,
        *weights,
        s,
        x,
        n,
        *scalars,
        BLOCK=block,
        PDL=pdl,
        num_warps=warps,
        **({"launch_pdl": True} if pdl else {}),
    )
    return s.view(h.shape), x.view(h.shape)


def triton_add_norm(h: torch.Tensor, a: torch.Tensor, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """(h + a, norm(h + a)) in one launch."""
    return _launch(_add_norm, h, a, (norm.weight,), (float(norm.offset), float(norm.eps)))


def triton_norm_add_norm(h: torch.Tensor, a: torch.Tensor, norm_a, norm_next) -> tuple[torch.Tensor, torch.Tensor]:
    """(s = h + norm_a(a), norm_next(s)) in one launch."""
    scalars = (float(norm_a.offset), float(norm_a.eps), float(norm_next.offset), float(norm_next.eps))
    return _launch(_norm_add_norm, h, a, (norm_a.weight, norm_next.weight), scalars)


def torch_add_norm(h: torch.Tensor, a: torch.Tensor, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """`triton_add_norm` as eager ops."""
    s = h + a
    return s, rms_norm(s, norm.gain(), norm.eps)


def torch_norm_add_norm(h: torch.Tensor, a: torch.Tensor, norm_a, norm_next) -> tuple[torch.Tensor, torch.Tensor]:
    """`triton_norm_add_norm` as eager ops."""
    s = h + rms_norm(a, norm_a.gain(), norm_a.eps)
    return s, rms_norm(s, norm_next.gain(), norm_next.eps)


def add_norm(h: torch.Tensor, a: torch.Tensor, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """(h + a, norm(h + a)): the kernel where it runs, the eager ops elsewhere."""
    return (triton_add_norm if kernel_serves(h) else torch_add_norm)(h, a, norm)


def norm_add_norm(h: torch.Tensor, a: torch.Tensor, norm_a, norm_next) -> tuple[torch.Tensor, torch.Tensor]:
    """(s = h + norm_a(a), norm_next(s)): the kernel where it runs, the eager ops elsewhere."""
    return (triton_norm_add_norm if kernel_serves(h) else torch_norm_add_norm)(h, a, norm_a, norm_next)
