"""Triton: y = x @ W^T for a few rows of x (a batch-1 decode step), W read once over every SM.

For one row cuBLAS picks tiles that leave most SMs idle where W has few rows: on the H200
Gemma 3 270M's o_proj and down_proj (640 outputs) took 4.6 and 6.7 us for 1.3 and 2.6 MB,
under a tenth of the memory bandwidth (docs/benchmarks.md, seventeenth run). Here each
program owns BN outputs and reads those rows of W whole: all loads in flight at once, and
before the wait for the previous kernel under programmatic dependent launch (W does not
depend on it). The programs of one wave cover every SM.

`linear` is the runner's matmul: this kernel for up to `MAX_ROWS` rows and a W within
MAX_N x MAX_K, torch's otherwise. `glu_linear` adds the gated MLP's activation as a prologue,
`res_norm_linear` a block's residual add and RMSNorms. Torch custom ops, so the compiled
pieces of the decode step call them as they call cuBLAS.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from ..models.common import rms_norm
from .kernels import INTERPRET, _p2, pdl_available, triton

MAX_ROWS = 2  # rows of x up to which the kernel is used (W is read once per row, from L2 after the first)
MAX_N = MAX_K = 4096  # W's shapes it is used for: the first build (rows in slices, seventeenth run's run03)
                      # beat cuBLAS on every 270M and 1B matmul within them and lost on 1B's gate|up
                      # (13824 x 1152) and down (1152 x 6912); the shipped build is timed on 270M only

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
            else:     # SiLU
                g = g / (1.0 + tl.exp(-g))
            return (g.to(dt) * u.to(dt)).to(tl.float32)
        return tl.load(x_ptr + m * sx + k, mask=k < K, other=0.0).to(tl.float32)

    @triton.jit
    def _rms_pieces(v1, v2, w_ptr, k1, k2, K, eps, K2: tl.constexpr, dt: tl.constexpr):
        """RMSNorm of a row held in two pieces (v2 unused when K2 is 0), as models.common.RMSNorm
        computes it (fp32, times the effective weight, rounded to the model dtype)."""
        ss = tl.sum(v1 * v1, 0)
        if K2 > 0:
            ss += tl.sum(v2 * v2, 0)
        inv = 1.0 / tl.sqrt(ss / K + eps)
        o1 = (v1 * inv * tl.load(w_ptr + k1, mask=k1 < K, other=0.0)).to(dt).to(tl.float32)
        o2 = o1
        if K2 > 0:
            o2 = (v2 * inv * tl.load(w_ptr + k2, mask=k2 < K, other=0.0)).to(dt).to(tl.float32)
        return o1, o2

    @triton.jit
    def _gemv(x_ptr, w_ptr, y_ptr, N, K, sx, sw, sy, BN: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr,
              PDL: tl.constexpr, GLU: tl.constexpr = False, GELU: tl.constexpr = False,
              h_ptr=None, ho_ptr=None, wa_ptr=None, wx_ptr=None, eps_a=0.0, eps_x=0.0,
              NORM: tl.constexpr = False, HAS_NA: tl.constexpr = False):
        n = tl.program_id(0) * BN + tl.arange(0, BN)
        m = tl.program_id(1)
        nm = n < N
        # the program's rows of W, whole, in two power-of-two pieces (640 = 512 + 128), asked for
        # before the wait: W does not depend on the previous kernel, so under programmatic dependent
        # launch its fetch overlaps that kernel's end
        k1 = tl.arange(0, K1)
        w1 = tl.load(w_ptr + n[:, None] * sw + k1[None, :], mask=nm[:, None] & (k1[None, :] < K), other=0.0)
        k2 = k1  # (unused when K2 is 0)
        if K2 > 0:
            k2 = K1 + tl.arange(0, K2)
            w2 = tl.load(w_ptr + n[:, None] * sw + k2[None, :], mask=nm[:, None] & (k2[None, :] < K), other=0.0)
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        dt = y_ptr.dtype.element_ty
        if NORM:  # x = norm_x(h + norm_a(a)), a the branch output in x_ptr; program 0 writes h's new row
            a1 = tl.load(x_ptr + m * sx + k1, mask=k1 < K, other=0.0).to(tl.float32)
            h1 = tl.load(h_ptr + m * sx + k1, mask=k1 < K, other=0.0).to(tl.float32)
            a2, h2 = a1, h1
            if K2 > 0:
                a2 = tl.load(x_ptr + m * sx + k2, mask=k2 < K, other=0.0).to(tl.float32)
                h2 = tl.load(h_ptr + m * sx + k2, mask=k2 < K, other=0.0).to(tl.float32)
            if HAS_NA:
                a1, a2 = _rms_pieces(a1, a2, wa_ptr, k1, k2, K, eps_a, K2, dt)
            h1 = (h1 + a1).to(dt).to(tl.float32)
            h2 = (h2 + a2).to(dt).to(tl.float32)
            if tl.program_id(0) == 0:
                tl.store(ho_ptr + m * sx + k1, h1.to(dt), mask=k1 < K)
                if K2 > 0:
                    tl.store(ho_ptr + m * sx + k2, h2.to(dt), mask=k2 < K)
            x1, x2 = _rms_pieces(h1, h2, wx_ptr, k1, k2, K, eps_x, K2, dt)
            acc = tl.sum(w1.to(tl.float32) * x1[None, :], 1)
            if K2 > 0:
                acc += tl.sum(w2.to(tl.float32) * x2[None, :], 1)
        else:
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


def gemv_launch(x: torch.Tensor, w: torch.Tensor, glu: str = "", norm: dict | None = None) -> torch.Tensor:
    """x (..., K) with at most a few rows, w (N, K) contiguous -> (..., N) in x's dtype.
    glu "gelu" / "silu": x is (..., 2K), a gate|up output, and the product is act(gate) * up.
    norm {h, h_out, wa (or None), wx, eps_a, eps_x}: x is a branch output a and the product is
    norm_x(h + norm_a(a)) (fp32 effective weights), whose residual row goes to h_out."""
    k, n = w.shape[1], w.shape[0]
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    assert w.stride(1) == 1 and x.shape[-1] == (2 * k if glu else k)
    y = torch.empty(x2.shape[0], n, dtype=x.dtype, device=x.device)
    dev = x.device.index or 0
    bn, k1, k2 = tiles(n, k, _sms(dev) if x.is_cuda else 8)
    pdl = x.is_cuda and not INTERPRET and _pdl(dev)
    extra = {}
    if norm is not None:
        assert x2.is_contiguous() and norm["h"].is_contiguous() and norm["h_out"].is_contiguous()
        wa = norm["wa"]
        extra = dict(h_ptr=norm["h"], ho_ptr=norm["h_out"], wa_ptr=norm["wx"] if wa is None else wa,
                     wx_ptr=norm["wx"], eps_a=norm["eps_a"], eps_x=norm["eps_x"], NORM=True, HAS_NA=wa is not None)
    _gemv[(triton.cdiv(n, bn), x2.shape[0])](x2, w, y, n, k, x2.stride(0), w.stride(0), y.stride(0),
                                             BN=bn, K1=k1, K2=k2, PDL=pdl, GLU=bool(glu), GELU=glu == "gelu",
                                             num_warps=4, **extra,
                                             **({"launch_pdl": True} if pdl else {}))
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


@torch.library.custom_op("tpa_compress::gemv_res_norm", mutates_args=())
def gemv_res_norm(a: torch.Tensor, h: torch.Tensor, w: torch.Tensor, wa: torch.Tensor | None, wx: torch.Tensor,
                  eps_a: float, eps_x: float) -> tuple[torch.Tensor, torch.Tensor]:
    h_out = torch.empty_like(h)
    y = gemv_launch(a.contiguous(), w, norm=dict(h=h.contiguous(), h_out=h_out, wa=wa, wx=wx, eps_a=eps_a,
                                                  eps_x=eps_x))
    return y, h_out


@gemv_res_norm.register_fake
def _(a, h, w, wa, wx, eps_a, eps_x):
    return a.new_empty(*a.shape[:-1], w.shape[0]), torch.empty_like(h)


def norm_weights(norm) -> tuple[torch.Tensor, float]:
    """An RMSNorm module as (effective fp32 weight, eps), made once (not per step)."""
    return norm.gain().detach().contiguous(), norm.eps


def torch_res_norm_linear(a, h, w, norm_a, norm_x):
    """(norm_x(h') @ w^T, h') with h' = h + norm_a(a) (norm_a None: h + a), torch's way: the
    residual half of a block's finish and the next matmul's input norm. norm_a / norm_x:
    `norm_weights` of the RMSNorms."""
    h = h + (a if norm_a is None else rms_norm(a, *norm_a))
    return F.linear(rms_norm(h, *norm_x), w), h


def res_norm_linear(a, h, w, norm_a, norm_x):
    """`torch_res_norm_linear` in one kernel launch where the kernel serves the shapes: the
    norms and the residual add in the matmul's prologue (every program computes the row's
    norms itself; the first writes h')."""
    if not serves(a, w):
        return torch_res_norm_linear(a, h, w, norm_a, norm_x)
    return gemv_res_norm(a, h, w, None if norm_a is None else norm_a[0], norm_x[0],
                         0.0 if norm_a is None else norm_a[1], norm_x[1])


def serves(x: torch.Tensor, w: torch.Tensor) -> bool:
    """At most MAX_ROWS rows and W within MAX_N x MAX_K: where the kernel measured faster."""
    return x.numel() // x.shape[-1] <= MAX_ROWS and w.shape[0] <= MAX_N and w.shape[1] <= MAX_K


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ w^T: the kernel for a few rows (a batch-1 decode step) and a W within MAX_N x MAX_K,
    torch's matmul otherwise."""
    return gemv(x, w) if serves(x, w) else F.linear(x, w)


def torch_glu_linear(gu: torch.Tensor, w: torch.Tensor, gelu: bool) -> torch.Tensor:
    """act(gate) * up @ w^T from the gate|up matmul's output gu (..., 2K), torch's way
    (tanh GELU for Gemma, SiLU for Llama)."""
    g, u = gu.chunk(2, dim=-1)
    return F.linear((F.gelu(g, approximate="tanh") if gelu else F.silu(g)) * u, w)


def glu_linear(gu: torch.Tensor, w: torch.Tensor, gelu: bool) -> torch.Tensor:
    """`torch_glu_linear` with the activation in the kernel's prologue (one launch fewer per
    layer) where the kernel serves the shapes."""
    return gemv_glu(gu, w, gelu) if serves(gu[..., : w.shape[1]], w) else torch_glu_linear(gu, w, gelu)
