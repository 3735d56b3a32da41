"""Triton: y = x @ W^T for a few rows of x (a batch-1 decode step), W read once over every SM.

For one row cuBLAS picks tiles that leave most SMs idle where W has few rows (Gemma 3 270M's
o_proj and down_proj, 640 outputs, run at under a tenth of the memory bandwidth:
docs/benchmarks.md). Here each program owns BN outputs and reads those rows of W whole: all
loads in flight at once, and
before the wait for the previous kernel under programmatic dependent launch (W does not
depend on it). The programs of one wave cover every SM.

`linear` is the runner's matmul: this kernel for up to `MAX_ROWS` rows and a W within
MAX_N x MAX_K, torch's otherwise. `glu_linear` adds the gated MLP's activation as a prologue.
Both launch the kernel directly (the uncompiled step); `traced_linear` / `traced_glu_linear`
call it through torch custom ops, so that the compiled pieces call it as they call cuBLAS
(a custom op's first call imports torch.compile's stack, seconds of start-up that only a
compiled step should pay).
The residual adds and RMSNorms stay out of the prologue: fused there they are slower end to end.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .kernels import INTERPRET, _p2, pdl_available, triton

MAX_ROWS = 2  # rows of x up to which the kernel is used (W is read once per row, from L2 after the first)
MAX_N = MAX_K = 4096  # W's shapes it is used for: within them it beats cuBLAS on every 270M and 1B
# matmul; it loses on 1B's gate|up (13824 x 1152) and down (1152 x 6912)

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _x_piece(x_ptr, m, sx, k, K, GLU: tl.constexpr, GELU: tl.constexpr, dt: tl.constexpr):
        """Values k of x's row m in fp32; GLU: x is the gate|up matmul's output (2K wide) and
        the row is act(gate) * up, rounded to the model dtype as the unfused step rounds it."""
        if GLU:
            g = tl.load(x_ptr + m * sx + k, mask=k < K, other=0.0).to(tl.float32)
            u = tl.load(x_ptr + m * sx + K + k, mask=k < K, other=0.0).to(tl.float32)
            if GELU:  # tanh GELU, tanh(y) = 1 - 2 / (exp(2y) + 1)
                y = 0.7978845608028654 * (g + 0.044715 * g * g * g)
                g = 0.5 * g * (2.0 - 2.0 / (tl.exp(2.0 * y) + 1.0))
            else:  # SiLU
                g = g / (1.0 + tl.exp(-g))
            return (g.to(dt) * u.to(dt)).to(tl.float32)
        return tl.load(x_ptr + m * sx + k, mask=k < K, other=0.0).to(tl.float32)

    @triton.jit
    def _gemv(
        x_ptr,
        w_ptr,
        y_ptr,
        N,
        K,
        sx,
        sw,
        sy,
        BN: tl.constexpr,
        K1: tl.constexpr,
        K2: tl.constexpr,
        PDL: tl.constexpr,
        GLU: tl.constexpr = False,
        GELU: tl.constexpr = False,
    ):
        n = tl.program_id(0) * BN + tl.arange(0, BN)
        m = tl.program_id(1)
        nm = n < N
        # the program's rows of W, whole, in two power-of-two pieces (640 = 512 + 128), asked for
        # before the wait: W does not depend on the previous kernel, so under programmatic dependent
        # launch its fetch overlaps that kernel's end
        k1 = tl.arange(0, K1)
        w1 = tl.load(w_ptr + n[:, None] * sw + k1[None, :], mask=nm[:, None] & (k1[None, :] < K), other=0.0)
        if K2 > 0:
            k2 = K1 + tl.arange(0, K2)
            w2 = tl.load(w_ptr + n[:, None] * sw + k2[None, :], mask=nm[:, None] & (k2[None, :] < K), other=0.0)
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        dt = y_ptr.dtype.element_ty
        acc = tl.sum(w1.to(tl.float32) * _x_piece(x_ptr, m, sx, k1, K, GLU, GELU, dt)[None, :], 1)
        if K2 > 0:
            acc += tl.sum(w2.to(tl.float32) * _x_piece(x_ptr, m, sx, k2, K, GLU, GELU, dt)[None, :], 1)
        tl.store(y_ptr + m * sy + n, acc.to(y_ptr.dtype.element_ty), mask=nm)


@functools.cache
def _sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


@functools.cache
def _pdl(device_index: int) -> bool:
    return pdl_available(torch.device("cuda", device_index))


def tiles(n: int, k: int, sms: int) -> tuple[int, int, int]:
    """(BN, K1, K2): ~n / sms outputs per program (a power of two, 1..16, fewer where W's rows
    are long: at most 8192 weights per program, 64 per thread at 4 warps), each row in a
    power-of-two piece K1 and a second one K2 >= the rest (0: none)."""
    k1 = 1 << (k.bit_length() - 1)
    k2 = 0 if k1 == k else _p2(k - k1)
    most = min(16, n // sms, 8192 // (k1 + k2))
    return 1 << max(0, most.bit_length() - 1), k1, k2


def gemv_launch(x: torch.Tensor, w: torch.Tensor, glu: str = "") -> torch.Tensor:
    """x (..., K) with at most a few rows, w (N, K) contiguous -> (..., N) in x's dtype.
    glu "gelu" / "silu": x is (..., 2K), a gate|up output, and the product is act(gate) * up."""
    k, n = w.shape[1], w.shape[0]
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    assert w.stride(1) == 1 and x.shape[-1] == (2 * k if glu else k)
    y = torch.empty(x2.shape[0], n, dtype=x.dtype, device=x.device)
    dev = x.device.index or 0
    bn, k1, k2 = tiles(n, k, _sms(dev) if x.is_cuda else 8)
    pdl = x.is_cuda and not INTERPRET and _pdl(dev)
    _gemv[(triton.cdiv(n, bn), x2.shape[0])](
        x2,
        w,
        y,
        n,
        k,
        x2.stride(0),
        w.stride(0),
        y.stride(0),
        BN=bn,
        K1=k1,
        K2=k2,
        PDL=pdl,
        GLU=bool(glu),
        GELU=glu == "gelu",
        num_warps=4,
        **({"launch_pdl": True} if pdl else {}),
    )
    return y.view(*x.shape[:-1], n)


@torch.library.custom_op("tpa_compress::gemv", mutates_args=())
def gemv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return gemv_launch(x, w)


@gemv.register_fake
def _(x, w):
    return x.new_empty(*x.shape[:-1], w.shape[0])


@torch.library.custom_op("tpa_compress::gemv_glu", mutates_args=())
def gemv_glu(gu: torch.Tensor, w: torch.Tensor, gelu: bool) -> torch.Tensor:
    return gemv_launch(gu, w, "gelu" if gelu else "silu")


@gemv_glu.register_fake
def _(gu, w, gelu):
    return gu.new_empty(*gu.shape[:-1], w.shape[0])


def serves(x: torch.Tensor, w: torch.Tensor) -> bool:
    """At most MAX_ROWS rows and W within MAX_N x MAX_K: where the kernel measured faster."""
    return x.numel() // x.shape[-1] <= MAX_ROWS and w.shape[0] <= MAX_N and w.shape[1] <= MAX_K


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ w^T: the kernel for a few rows (a batch-1 decode step) and a W within MAX_N x MAX_K,
    torch's matmul otherwise."""
    return gemv_launch(x, w) if serves(x, w) else F.linear(x, w)


def traced_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`linear` through the custom op, for pieces that torch.compile traces."""
    return gemv(x, w) if serves(x, w) else F.linear(x, w)


def torch_glu_linear(gu: torch.Tensor, w: torch.Tensor, gelu: bool) -> torch.Tensor:
    """act(gate) * up @ w^T from the gate|up matmul's output gu (..., 2K), torch's way
    (tanh GELU for Gemma, SiLU for Llama)."""
    g, u = gu.chunk(2, dim=-1)
    return F.linear((F.gelu(g, approximate="tanh") if gelu else F.silu(g)) * u, w)


def glu_linear(gu: torch.Tensor, w: torch.Tensor, gelu: bool) -> torch.Tensor:
    """`torch_glu_linear` with the activation in the kernel's prologue (one launch fewer per
    layer) where the kernel serves the shapes."""
    if serves(gu[..., : w.shape[1]], w):
        return gemv_launch(gu, w, "gelu" if gelu else "silu")
    return torch_glu_linear(gu, w, gelu)


def traced_glu_linear(gu: torch.Tensor, w: torch.Tensor, gelu: bool) -> torch.Tensor:
    """`glu_linear` through the custom op, for pieces that torch.compile traces."""
    return gemv_glu(gu, w, gelu) if serves(gu[..., : w.shape[1]], w) else torch_glu_linear(gu, w, gelu)
