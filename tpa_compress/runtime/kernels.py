"""Triton kernel: attention scores straight from a latent K cache.

For a latent K (cache holds z, rank r, per token), one decode query per sequence needs
score[b, h, g, t] = scale * q[b, h, g] . RoPE_t(norm(U_h z[b, t] + bias_h)). The torch
path rebuilds K per tile (matmul -> k_norm -> RoPE -> matmul) and so writes and reads
the rebuilt K (heads*dim values per token, more than z) through HBM several times. Here
one program takes BLOCK_T keys of one (sequence, KV head): loads z once, rebuilds K in
registers with tensor-core dots (the two RoPE halves separately, so the rotation is
element-wise), applies QK-norm and RoPE (cos/sin computed at the cached positions) and
writes only the g scores per key, masked (causal, window, pads, sink positions) in the
same pass. Softmax and probabilities @ V stay in torch (see attention.scores_finish).

Runs wherever triton runs: CUDA, or the CPU interpreter (TRITON_INTERPRET=1) in tests.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():  # no GPU: triton can only interpret (the tests' CPU mode)
    os.environ.setdefault("TRITON_INTERPRET", "1")
try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the runner keeps the torch tile path
    triton = None

def available() -> bool:
    return triton is not None


if triton is not None:
    @triton.jit
    def _latent_k_scores(z_ptr, up_ptr, bias_ptr, nw_ptr, q_ptr, kpos_ptr, qpos_ptr, invf_ptr, out_ptr,
                         T, R, KV, sz_b, sz_t, sp_b, window, sink, eps, scale, rscale,
                         D: tl.constexpr, HALF: tl.constexpr, HALF_P: tl.constexpr, R_P: tl.constexpr,
                         G: tl.constexpr, BLOCK_T: tl.constexpr, HAS_NORM: tl.constexpr,
                         HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr):
        pid_t = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // KV
        h = pid_bh % KV
        t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        tmask = t < T
        rr = tl.arange(0, R_P)
        rmask = rr < R
        dd = tl.arange(0, HALF_P)
        dmask = dd < HALF
        z = tl.load(z_ptr + b * sz_b + t[:, None] * sz_t + rr[None, :],
                    mask=tmask[:, None] & rmask[None, :], other=0.0)
        umask = rmask[:, None] & dmask[None, :]
        # U^T halves (R_P, HALF_P): element [r, d] = up[h*D + d, r]
        u1 = tl.load(up_ptr + (h * D + dd[None, :]) * R + rr[:, None], mask=umask, other=0.0)
        u2 = tl.load(up_ptr + (h * D + HALF + dd[None, :]) * R + rr[:, None], mask=umask, other=0.0)
        if IEEE:
            k1 = tl.dot(z, u1, input_precision="ieee")
            k2 = tl.dot(z, u2, input_precision="ieee")
        else:
            k1 = tl.dot(z, u1)
            k2 = tl.dot(z, u2)
        k1 += tl.load(bias_ptr + h * D + dd, mask=dmask, other=0.0).to(tl.float32)[None, :]
        k2 += tl.load(bias_ptr + h * D + HALF + dd, mask=dmask, other=0.0).to(tl.float32)[None, :]
        if HAS_NORM:  # padded columns are 0 and do not change the sum
            inv = 1.0 / tl.sqrt((tl.sum(k1 * k1, 1) + tl.sum(k2 * k2, 1)) / D + eps)
            k1 = k1 * inv[:, None] * tl.load(nw_ptr + dd, mask=dmask, other=0.0)[None, :]
            k2 = k2 * inv[:, None] * tl.load(nw_ptr + HALF + dd, mask=dmask, other=0.0)[None, :]
        kp = tl.load(kpos_ptr + b * sp_b + t, mask=tmask, other=0)
        ang = (kp.to(tl.float32) / rscale)[:, None] * tl.load(invf_ptr + dd, mask=dmask, other=0.0)[None, :]
        c = tl.cos(ang)
        s = tl.sin(ang)
        r1 = k1 * c - k2 * s
        r2 = k2 * c + k1 * s
        qp = tl.load(qpos_ptr + b)
        d = qp - kp
        ok = tmask & (d >= 0) & ((kp >= 0) | (d == 0)) & ((kp < 0) | (kp >= sink))
        if HAS_WINDOW:
            ok = ok & (d < window)
        qb = q_ptr + (b * KV + h) * G * D
        ob = out_ptr + (b * KV + h) * G * T
        for gi in tl.static_range(G):
            q1 = tl.load(qb + gi * D + dd, mask=dmask, other=0.0).to(tl.float32)
            q2 = tl.load(qb + gi * D + HALF + dd, mask=dmask, other=0.0).to(tl.float32)
            sc = tl.sum(r1 * q1[None, :] + r2 * q2[None, :], 1) * scale
            tl.store(ob + gi * T + t, tl.where(ok, sc, float("-inf")), mask=tmask)


def _p2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


class LatentKScores:
    """Per-layer constants of the kernel (made once) and its launch.

    attn: the layer's Attention (k_proj a LatentProj); sink: positions the kernel masks
    (they come from the exact sink tile).
    """

    def __init__(self, attn, sink: int, block_t: int = 64):
        cfg, kp = attn.cfg, attn.k_proj
        self.up = kp.up.weight.detach().contiguous()            # (kv*D, r)
        self.bias = kp.bias.detach().float().contiguous()
        self.has_norm = attn.qk_norm
        dev = self.up.device
        self.nw = ((attn.k_norm.offset + attn.k_norm.weight.detach().float()).contiguous()
                   if self.has_norm else torch.ones(1, device=dev))
        self.eps = attn.k_norm.eps if self.has_norm else 0.0
        d = attn.head_dim
        base = cfg.rope_base(attn.layer)
        # as rope_cos_sin computes them: angle = (pos / scale) * inv_freq
        self.invf = (1.0 / (base ** (torch.arange(0, d, 2, device=dev, dtype=torch.float32) / d))).contiguous()
        self.rscale = float(cfg.rope_scale(attn.layer))
        self.kv, self.d, self.r = attn.n_kv, d, self.up.shape[1]
        self.g = attn.n_heads // attn.n_kv
        self.scale, self.window, self.sink = float(attn.scale), attn.window, sink
        self.block_t = block_t

    def __call__(self, q, kc, k_pos, q_pos, out=None):
        """q (B, H, 1, D) attention-ready; kc (B, T, r) the latent cache; k_pos (B, T)
        int32; q_pos (B, 1). Returns scores (B, kv, g, T) fp32, -inf where masked."""
        b, t, r = kc.shape
        assert kc.stride(2) == 1 and k_pos.stride(1) == 1 and kc.dtype == self.up.dtype
        q = q.contiguous()
        qp = q_pos.reshape(b).to(torch.int32)
        if out is None:
            out = torch.empty(b, self.kv, self.g, t, dtype=torch.float32, device=kc.device)
        grid = (triton.cdiv(t, self.block_t), b * self.kv)
        _latent_k_scores[grid](
            kc, self.up, self.bias, self.nw, q, k_pos, qp, self.invf, out,
            t, r, self.kv, kc.stride(0), kc.stride(1), k_pos.stride(0),
            self.window or 0, self.sink, self.eps, self.scale, self.rscale,
            D=self.d, HALF=self.d // 2, HALF_P=_p2(self.d // 2), R_P=_p2(r), G=self.g,
            BLOCK_T=self.block_t, HAS_NORM=self.has_norm, HAS_WINDOW=self.window is not None,
            IEEE=kc.dtype == torch.float32, num_warps=8 if self.block_t >= 64 else 4)
        return out
