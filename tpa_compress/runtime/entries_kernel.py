"""Triton: a decode step's Q and new cache entries from the Q/K/V matmul's output, one kernel.

After y = x @ [W_q; W_k-encode; W_v-encode]^T (one cuBLAS matmul, `attention.fused_qkv_weight`),
one launch does what the compiled path took three kernels for (inductor keeps the two
QK-norms' reductions and the cache's scatter apart; at batch 1 each costs a launch):

- a query head, or a head of a full K: QK-norm (when the model has it), RoPE -> q, or
  the cache at the step's slot;
- the rest of the row (a full V; a latent K's and V's z; any factor `encode` wrote) copied
  into the cache as it is, and a latent K's norm factors (LayerLayout.k_scale, the "diag"
  form of `attention.key_scale_terms`) from z as stored, beside it.

The same arithmetic as `attention.entries_written` (fp32, the norm's output rounded to the
model dtype as RMSNorm rounds it); quantized caches and the "up" form of the norm factors
keep that compiled path (`EntriesKernel.serves`).
"""

from __future__ import annotations

import torch

from ..layout import LayerLayout
from .kernels import INTERPRET, _p2, pdl_available, triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _entries(
        y_ptr,
        qw_ptr,
        kw_ptr,
        cos_ptr,
        sin_ptr,
        q_ptr,
        kv_ptr,
        slot_ptr,
        ks_ptr,
        gz_ptr,
        kc_ptr,
        sy_b,
        scs_b,
        sq_b,
        sq_h,
        skv_b,
        skv_t,
        sks_b,
        sks_t,
        H,
        KVF,
        REST,
        RK,
        KS_HEADS,
        q_eps,
        kn_eps,
        k_eps,
        k_dim,
        D: tl.constexpr,
        REST_P: tl.constexpr,
        RK_P: tl.constexpr,
        QK_NORM: tl.constexpr,
        K_SCALE: tl.constexpr,
        PDL: tl.constexpr,
    ):
        if PDL:  # y comes from the matmul just before
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        b = tl.program_id(0).to(tl.int64)  # b * (a sequence's stride) passes 2^31 at batch x 32K
        r = tl.program_id(1)  # query heads, then a full K's heads, then the rest
        slot = tl.load(slot_ptr)
        row = y_ptr + b * sy_b
        cache = kv_ptr + b * skv_b + slot * skv_t
        if r < H + KVF:
            dd = tl.arange(0, D)
            half = (dd + D // 2) % D  # each element's RoPE partner
            x = tl.load(row + r * D + dd).to(tl.float32)
            xp = tl.load(row + r * D + half).to(tl.float32)
            if QK_NORM:
                is_q = r < H
                w = tl.where(is_q, tl.load(qw_ptr + dd), tl.load(kw_ptr + dd))
                wp = tl.where(is_q, tl.load(qw_ptr + half), tl.load(kw_ptr + half))
                inv = 1.0 / tl.sqrt(tl.sum(x * x, 0) / D + tl.where(is_q, q_eps, kn_eps))
                x = (x * inv * w).to(q_ptr.dtype.element_ty).to(tl.float32)
                xp = (xp * inv * wp).to(q_ptr.dtype.element_ty).to(tl.float32)
            c = tl.load(cos_ptr + b * scs_b + dd).to(tl.float32)
            s = tl.load(sin_ptr + b * scs_b + dd).to(tl.float32)
            out = x * c + tl.where(dd < D // 2, -xp, xp) * s
            if r < H:
                tl.store(q_ptr + b * sq_b + r * sq_h + dd, out.to(q_ptr.dtype.element_ty))
            else:
                tl.store(cache + (r - H) * D + dd, out.to(kv_ptr.dtype.element_ty))
        else:
            j = tl.arange(0, REST_P)
            m = j < REST
            first = (H + KVF) * D  # where the rest starts in y; KVF * D in the cache
            z = tl.load(row + first + j, mask=m, other=0.0).to(kv_ptr.dtype.element_ty)
            tl.store(cache + KVF * D + j, z, mask=m)
            if K_SCALE:  # 1 / rms(U_h z + b_h) = rsqrt((sum_r g_r (z_r + e_r)^2 + const_h) / d + eps)
                rr = tl.arange(0, RK_P)
                mr = rr < RK
                zk = tl.load(row + first + rr, mask=mr, other=0.0).to(kv_ptr.dtype.element_ty).to(tl.float32)
                for h in range(KS_HEADS):
                    g = tl.load(gz_ptr + h * 2 * RK + rr, mask=mr, other=0.0)
                    e = tl.load(gz_ptr + h * 2 * RK + RK + rr, mask=mr, other=0.0)
                    sq = tl.sum(g * (zk + e) * (zk + e), 0) + tl.load(kc_ptr + h)
                    tl.store(ks_ptr + b * sks_b + slot * sks_t + h, 1.0 / tl.sqrt(sq / k_dim + k_eps))


class EntriesKernel:
    """One layer's constants for `_entries` (made once) and its launch."""

    @staticmethod
    def serves(attn, lay: LayerLayout, cache_dtype: torch.dtype, ks_terms) -> bool:
        """A plain (not one-byte) cache, a power-of-two head dim, and norm factors (if any)
        in the "diag" form."""
        d = attn.head_dim
        return (
            triton is not None
            and cache_dtype in (torch.float32, torch.bfloat16, torch.float16)
            and d >= 16
            and d & (d - 1) == 0
            and (ks_terms is None or ks_terms[0] == "diag")
        )

    def __init__(self, attn, lay: LayerLayout, ks_terms=None, pdl: bool | None = None):
        dev = attn.q_proj.weight.device
        self.h, self.d = attn.n_heads, attn.head_dim
        self.kvf = attn.n_kv if lay.k.kind == "full" else 0  # heads of a full K: normed, rotated
        self.rest = lay.k.values_per_token + lay.v.values_per_token - self.kvf * self.d
        self.qk_norm = attn.qk_norm
        none = torch.zeros(1, device=dev)
        self.qw = self.kw = none
        self.q_eps = self.kn_eps = 0.0
        if self.qk_norm:
            self.qw = attn.q_norm.gain().detach().contiguous()
            self.kw = attn.k_norm.gain().detach().contiguous()
            self.q_eps, self.kn_eps = attn.q_norm.eps, attn.k_norm.eps
        self.k_scale = ks_terms is not None
        self.gz, self.kc, self.rk, self.ks_heads, self.k_eps, self.k_dim = none, none, 1, 0, 0.0, 1
        if self.k_scale:
            _, gz, const, self.k_eps, self.k_dim = ks_terms
            self.gz, self.kc = gz.float().contiguous(), const.float().contiguous()
            self.ks_heads, self.rk = gz.shape[0], gz.shape[2]
        self.pdl = pdl_available(dev) if pdl is None else pdl

    def __call__(self, y, cos, sin, kv_buf, slot, ks_buf=None):
        """y (B, 1, N) the matmul's output; cos/sin (B, 1, D); kv_buf (B, C, values) the cache,
        slot (1,) the column to write; ks_buf (B, C, KV) a latent K's norm factors or None.
        Writes the entries, returns q (B, H, 1, D)."""
        b = y.shape[0]
        y = y.reshape(b, -1)
        cos, sin = cos.reshape(b, -1), sin.reshape(b, -1)
        assert y.stride(1) == 1 and cos.stride() == sin.stride() and cos.stride(1) == 1 and kv_buf.stride(2) == 1
        assert (ks_buf is not None) == self.k_scale
        q = torch.empty(b, self.h, 1, self.d, dtype=y.dtype, device=y.device)
        ks = ks_buf if ks_buf is not None else q
        _entries[(b, self.h + self.kvf + 1)](
            y,
            self.qw,
            self.kw,
            cos,
            sin,
            q,
            kv_buf,
            slot,
            ks,
            self.gz,
            self.kc,
            y.stride(0),
            cos.stride(0),
            q.stride(0),
            q.stride(1),
            kv_buf.stride(0),
            kv_buf.stride(1),
            ks.stride(0),
            ks.stride(1),
            self.h,
            self.kvf,
            self.rest,
            self.rk,
            self.ks_heads,
            self.q_eps,
            self.kn_eps,
            self.k_eps,
            float(self.k_dim),
            D=self.d,
            REST_P=_p2(self.rest),
            RK_P=_p2(self.rk),
            QK_NORM=self.qk_norm,
            K_SCALE=self.k_scale,
            PDL=self.pdl and not INTERPRET,
            num_warps=4,
            **({"launch_pdl": True} if self.pdl else {}),
        )
        return q
