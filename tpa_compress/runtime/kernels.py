"""Triton kernels: one decode step's attention straight from the cache (flash-decoding).

`DecodeAttention` serves a layer whose K and V are each stored `full` or `latent`:

- `_decode_partial`: one program takes a chunk of the cache of one (sequence, KV
  head) and walks it in blocks of BLOCK_T keys. A latent K is rebuilt in registers
  (z @ U^T with tensor-core dots, the two RoPE halves separately so the rotation is
  element-wise, + bias, QK-norm, RoPE at the cached positions); a full K is loaded
  as stored. Scores for the g query heads of that KV head, the mask (causal, window,
  pads, empty slots, sink positions), an online softmax and probabilities @ V (the
  latent z, or the head's full V) all stay on chip. A latent V's mixture stays
  latent (the combine up-projects it once; `latent_combine=False`: once per chunk);
  chunk 0 also takes the exact sink tile (the first `sink` positions' K/V).
- `_decode_combine`: merges the chunks' partial softmax states, writes the output in
  the layout o_proj reads, (B, H*D).

Nothing of size (context x heads x dim) ever exists: a decode step reads each cache
entry once. The chunk count spreads the work over every SM even at batch 1.
Runs wherever triton runs: CUDA, or the CPU interpreter (TRITON_INTERPRET=1) in tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

import torch

from ..errors import TPAError
from ..models.common import rope_inv_freq
from . import cuda_decode

if not torch.cuda.is_available():  # no GPU: triton can only interpret (the tests' CPU mode)
    os.environ.setdefault("TRITON_INTERPRET", "1")
try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the runner keeps the torch tile path
    triton = None

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _cos_sin(x, FAST: tl.constexpr):
        """cos and sin of fp32 angles. FAST: reduce to [-pi, pi] (2*pi split in two
        constants, the first exact in a few bits, so k * C1 is exact) and use the GPU's
        special-function unit; libdevice's accurate versions cost ~20 instructions each."""
        if FAST:
            k = tl.floor(x * 0.15915494309189535 + 0.5)
            r = x - k * 6.28125 - k * 0.0019353071795864769
            c = tl.inline_asm_elementwise("cos.approx.f32 $0, $1;", "=r,r", [r], dtype=tl.float32, is_pure=True, pack=1)
            s = tl.inline_asm_elementwise("sin.approx.f32 $0, $1;", "=r,r", [r], dtype=tl.float32, is_pure=True, pack=1)
        else:
            c = tl.cos(x)
            s = tl.sin(x)
        return c, s

    @triton.jit
    def _softmax_step(s, v, m_i, l_i, acc, PREC: tl.constexpr):
        """Fold one tile into the online-softmax state: s (keys, G_P) masked scores (-inf
        where masked), v (keys, n) what probabilities multiply; m_i, l_i (G_P,), acc (G_P, n).
        A tile with no visible key leaves the state as it was."""
        m_new = tl.maximum(m_i, tl.max(s, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[None, :])
        corr = tl.exp(m_i - m_safe)
        l_i = l_i * corr + tl.sum(p, 0)
        acc = acc * corr[:, None] + tl.dot(tl.trans(p).to(v.dtype), v, input_precision=PREC)
        return m_new, l_i, acc

    @triton.jit
    def _dequant(x, sc_ptrs, tmask, dt: tl.constexpr, INT8: tl.constexpr):
        """A tile of cache entries (keys, values) in the compute dtype; INT8: times the
        per-key fp16 scales at sc_ptrs (keys,)."""
        if INT8:
            sc = tl.load(sc_ptrs, mask=tmask, other=0.0).to(tl.float32)
            return (x.to(tl.float32) * sc[:, None]).to(dt)
        return x.to(dt)

    @triton.jit
    def _k_slice(
        j,
        z,
        apos,
        s,
        sq,
        head,
        D: tl.constexpr,
        HALF: tl.constexpr,
        DS: tl.constexpr,
        HAS_NORM: tl.constexpr,
        PREC: tl.constexpr,
        FAST_TRIG: tl.constexpr,
        dt: tl.constexpr,
    ):
        """DS rotation pairs (j .. j+DS and their partners HALF later) of a latent K tile
        rebuilt from z (keys, RK_P), normed (weight here, the per-key scalar on the finished
        score), rotated, and their part of the scores with the g queries added to s. head:
        what is the same for every slice of the program (qrow, gmask, rk, rkm, ku_ptr, kb_ptr,
        nw_ptr, invf_ptr, h, RK)."""
        qrow, gmask, rk, rkm, ku_ptr, kb_ptr, nw_ptr, invf_ptr, h, RK = head
        dj = j + tl.arange(0, DS)
        hm = dj < HALF  # padding is 0 everywhere: padded columns stay 0
        um = rkm[:, None] & hm[None, :]
        # U^T slices (RK_P, DS): element [r, d] = up[h*D + d, r]
        u1 = tl.load(ku_ptr + (h * D + dj[None, :]) * RK + rk[:, None], mask=um, other=0.0)
        u2 = tl.load(ku_ptr + (h * D + HALF + dj[None, :]) * RK + rk[:, None], mask=um, other=0.0)
        k1 = tl.dot(z, u1, input_precision=PREC) + tl.load(kb_ptr + h * D + dj, mask=hm, other=0.0)[None, :]
        k2 = tl.dot(z, u2, input_precision=PREC) + tl.load(kb_ptr + h * D + HALF + dj, mask=hm, other=0.0)[None, :]
        if HAS_NORM:
            sq += tl.sum(k1 * k1, 1) + tl.sum(k2 * k2, 1)
            k1 = k1 * tl.load(nw_ptr + dj, mask=hm, other=0.0)[None, :]
            k2 = k2 * tl.load(nw_ptr + HALF + dj, mask=hm, other=0.0)[None, :]
        c, sn = _cos_sin(apos[:, None] * tl.load(invf_ptr + dj, mask=hm, other=0.0)[None, :], FAST_TRIG)
        r1 = k1 * c - k2 * sn
        r2 = k2 * c + k1 * sn
        qm = gmask[:, None] & hm[None, :]
        q1 = tl.load(qrow + dj[None, :], mask=qm, other=0.0).to(dt)
        q2 = tl.load(qrow + HALF + dj[None, :], mask=qm, other=0.0).to(dt)
        s += tl.dot(r1.to(dt), tl.trans(q1), input_precision=PREC)
        s += tl.dot(r2.to(dt), tl.trans(q2), input_precision=PREC)
        return s, sq

    @triton.jit
    def _decode_partial(
        q_ptr,
        kc_ptr,
        vc_ptr,
        kpos_ptr,
        qpos_ptr,
        sc_ptr,
        sm_ptr,
        sl_ptr,
        sa_ptr,
        ku_ptr,
        kb_ptr,
        nw_ptr,
        invf_ptr,
        vu_ptr,
        vb_ptr,
        sk_ptr,
        sv_ptr,
        gz_ptr,
        bb_ptr,
        m_ptr,
        l_ptr,
        acc_ptr,
        T,
        CHUNK,
        KV,
        S,
        RK,
        RV,
        NS,
        sq_b,
        sq_h,
        skc_b,
        skc_t,
        svc_b,
        svc_t,
        sp_b,
        ss_b,
        ss_h,
        ss_j,
        ssc_b,
        ssc_t,
        window,
        sink,
        eps,
        scale,
        rscale,
        D: tl.constexpr,
        HALF: tl.constexpr,
        HALF_P: tl.constexpr,
        G: tl.constexpr,
        G_P: tl.constexpr,
        RK_P: tl.constexpr,
        RV_P: tl.constexpr,
        NS_P: tl.constexpr,
        BLOCK_T: tl.constexpr,
        DS: tl.constexpr,
        K_LATENT: tl.constexpr,
        V_LATENT: tl.constexpr,
        HAS_NORM: tl.constexpr,
        HAS_WINDOW: tl.constexpr,
        HAS_SINK: tl.constexpr,
        PREC: tl.constexpr,
        FAST_TRIG: tl.constexpr,
        CDT: tl.constexpr,
        INT8: tl.constexpr,
        LATENT_COMBINE: tl.constexpr,
        DS_DYNAMIC: tl.constexpr,
        NORM_Z: tl.constexpr,
        HAS_E: tl.constexpr,
        PDL: tl.constexpr,
    ):
        if PDL:  # launched with programmatic dependent launch: everything read waits for the previous kernel
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        pid_s = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = (pid_bh // KV).to(tl.int64)  # b * (a sequence's stride) passes 2^31 at batch x 32K
        h = pid_bh % KV
        gg = tl.arange(0, G_P)
        gmask = gg < G
        dd = tl.arange(0, D)
        qrow = q_ptr + b * sq_b + (h * G + gg[:, None]) * sq_h
        qp = tl.load(qpos_ptr + b)
        if K_LATENT:
            dt = ku_ptr.dtype.element_ty
            rk = tl.arange(0, RK_P)
            rkm = rk < RK
        else:
            dt = CDT
            q = tl.load(qrow + dd[None, :], mask=gmask[:, None], other=0.0).to(dt)
        if V_LATENT:
            rv = tl.arange(0, RV_P)
            rvm = rv < RV
            acc = tl.zeros([G_P, RV_P], dtype=tl.float32)
        else:
            acc = tl.zeros([G_P, D], dtype=tl.float32)
        m_i = tl.full([G_P], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([G_P], dtype=tl.float32)
        start = pid_s * CHUNK
        for t0 in range(start, start + CHUNK, BLOCK_T):
            t = t0 + tl.arange(0, BLOCK_T)
            tmask = t < T
            kp = tl.load(kpos_ptr + b * sp_b + t, mask=tmask, other=0)
            if K_LATENT:
                z = _dequant(
                    tl.load(
                        kc_ptr + b * skc_b + t[:, None] * skc_t + rk[None, :],
                        mask=tmask[:, None] & rkm[None, :],
                        other=0.0,
                    ),
                    sc_ptr + b * ssc_b + t * ssc_t,
                    tmask,
                    dt,
                    INT8,
                )
                # K rebuilt DS rotation pairs at a time (bounded registers; U slices come
                # from L1). The QK-norm is a per-key scalar times a weight applied before
                # RoPE: the weight goes in here, the scalar on the finished score.
                apos = kp.to(tl.float32) / rscale
                s = tl.zeros([BLOCK_T, G_P], dtype=tl.float32)
                if NORM_Z:  # |U z + b|^2 = sum_r g_r (z_r + e_r)^2 + const (norm_from_latent): a
                    # dot with g in every column leaves each column of sq the row's sum, in
                    # s's own layout; the squares in the cache dtype keep registers free
                    ze = z + tl.load(gz_ptr + h * 2 * RK + RK + rk, mask=rkm, other=0.0).to(dt)[None, :] if HAS_E else z
                    gcol = tl.load(gz_ptr + h * 2 * RK + rk, mask=rkm, other=0.0)[:, None] * tl.full(
                        [RK_P, G_P], 1.0, tl.float32
                    )
                    sq = tl.dot(ze * ze, gcol.to(dt), input_precision=PREC) + tl.load(bb_ptr + h)
                else:
                    sq = tl.zeros([BLOCK_T], dtype=tl.float32)
                head = (qrow, gmask, rk, rkm, ku_ptr, kb_ptr, nw_ptr, invf_ptr, h, RK)
                slice_norm: tl.constexpr = HAS_NORM and not NORM_Z
                if DS_DYNAMIC:  # a loop: one U slice buffer, reused (fits BLOCK_T = 128)
                    for j in range(0, HALF_P, DS):
                        s, sq = _k_slice(j, z, apos, s, sq, head, D, HALF, DS, slice_norm, PREC, FAST_TRIG, dt)
                else:
                    for j in tl.static_range(0, HALF_P, DS):
                        s, sq = _k_slice(j, z, apos, s, sq, head, D, HALF, DS, slice_norm, PREC, FAST_TRIG, dt)
                if NORM_Z:
                    s = s * (1.0 / tl.sqrt(sq / D + eps))
                elif HAS_NORM:
                    s = s * (1.0 / tl.sqrt(sq / D + eps))[:, None]
            else:
                k = _dequant(
                    tl.load(
                        kc_ptr + b * skc_b + t[:, None] * skc_t + h * D + dd[None, :], mask=tmask[:, None], other=0.0
                    ),
                    sc_ptr + b * ssc_b + t * ssc_t,
                    tmask,
                    dt,
                    INT8,
                )
                s = tl.dot(k, tl.trans(q), input_precision=PREC)
            d = qp - kp
            ok = tmask & (d >= 0) & ((kp >= 0) | (d == 0))
            if HAS_SINK:
                ok = ok & ((kp < 0) | (kp >= sink))
            if HAS_WINDOW:
                ok = ok & (d < window)
            s = tl.where(ok[:, None], s * scale, float("-inf"))  # (BLOCK_T, G_P)
            if V_LATENT:
                v = _dequant(
                    tl.load(
                        vc_ptr + b * svc_b + t[:, None] * svc_t + rv[None, :],
                        mask=tmask[:, None] & rvm[None, :],
                        other=0.0,
                    ),
                    sc_ptr + b * ssc_b + t * ssc_t + 1,
                    tmask,
                    dt,
                    INT8,
                )
            else:
                v = _dequant(
                    tl.load(
                        vc_ptr + b * svc_b + t[:, None] * svc_t + h * D + dd[None, :], mask=tmask[:, None], other=0.0
                    ),
                    sc_ptr + b * ssc_b + t * ssc_t + 1,
                    tmask,
                    dt,
                    INT8,
                )
            m_i, l_i, acc = _softmax_step(s, v, m_i, l_i, acc, PREC)
        if V_LATENT and not LATENT_COMBINE:  # sum_t p_t (U z_t + b) = U (sum_t p_t z_t) + b * sum_t p_t
            vu = tl.load(vu_ptr + (h * D + dd[None, :]) * RV + rv[:, None], mask=rvm[:, None], other=0.0)
            acc = (
                tl.dot(acc, vu.to(tl.float32), input_precision=PREC)
                + l_i[:, None] * tl.load(vb_ptr + h * D + dd).to(tl.float32)[None, :]
            )
        if HAS_SINK:
            if pid_s == 0:  # the exact sink tile joins chunk 0's state
                j = tl.arange(0, NS_P)
                srow = b * ss_b + h * ss_h + j[:, None] * ss_j + dd[None, :]
                ks = tl.load(sk_ptr + srow, mask=j[:, None] < NS, other=0.0).to(dt)
                qf = tl.load(qrow + dd[None, :], mask=gmask[:, None], other=0.0).to(dt)
                ss = tl.dot(ks, tl.trans(qf), input_precision=PREC) * scale  # (NS_P, G_P)
                okj = (j < NS) & (qp - j >= 0)
                if HAS_WINDOW:
                    okj = okj & (qp - j < window)
                ss = tl.where(okj[:, None], ss, float("-inf"))
                vs = tl.load(sv_ptr + srow, mask=j[:, None] < NS, other=0.0).to(qf.dtype)  # bf16 by a 1-byte cache
                if V_LATENT and LATENT_COMBINE:  # a state of its own, in the head dim
                    m_s, l_s, acc_s = _softmax_step(
                        ss,
                        vs,
                        tl.full([G_P], float("-inf"), dtype=tl.float32),
                        tl.zeros([G_P], dtype=tl.float32),
                        tl.zeros([G_P, D], dtype=tl.float32),
                        PREC,
                    )
                    srow_o = pid_bh * G + gg
                    tl.store(sm_ptr + srow_o, m_s, mask=gmask)
                    tl.store(sl_ptr + srow_o, l_s, mask=gmask)
                    tl.store(sa_ptr + srow_o[:, None] * D + dd[None, :], acc_s, mask=gmask[:, None])
                else:
                    m_i, l_i, acc = _softmax_step(ss, vs, m_i, l_i, acc, PREC)
        row = (pid_bh * S + pid_s) * G + gg
        tl.store(m_ptr + row, m_i, mask=gmask)
        tl.store(l_ptr + row, l_i, mask=gmask)
        if V_LATENT and LATENT_COMBINE:  # the latent mixture; the combine up-projects once
            tl.store(acc_ptr + row[:, None] * RV + rv[None, :], acc, mask=gmask[:, None] & rvm[None, :])
        else:
            tl.store(acc_ptr + row[:, None] * D + dd[None, :], acc, mask=gmask[:, None])

    @triton.jit
    def _prefetch_l2(ptrs):
        """Ask L2 for each pointer's 128-byte line; nothing waits for it."""
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1
        )

    @triton.jit
    def _chunk_weights(m_ptr, base, s0, S, G, mx, S_BLK: tl.constexpr):
        """Chunk states s0 .. s0 + S_BLK of a combine: indices, mask, weights exp(m - mx)."""
        s = s0 + tl.arange(0, S_BLK)
        smask = s < S
        return s, smask, tl.exp(tl.load(m_ptr + base + s * G, mask=smask, other=float("-inf")) - mx)

    @triton.jit
    def _decode_combine(
        m_ptr,
        l_ptr,
        acc_ptr,
        out_ptr,
        vu_ptr,
        vb_ptr,
        sm_ptr,
        sl_ptr,
        sa_ptr,
        S,
        G,
        KV,
        RV: tl.constexpr,
        D: tl.constexpr,
        S_BLK: tl.constexpr,
        BLOCK_D: tl.constexpr,
        LATENT: tl.constexpr,
        RV_BLK: tl.constexpr,
        U_LINE: tl.constexpr,
        U_LINES: tl.constexpr,
        HAS_SINK: tl.constexpr,
        PDL: tl.constexpr,
    ):
        """LATENT: the chunk states hold latent mixtures (RV wide). They are merged in
        slices of RV_BLK columns (a power of two; a `range` loop), each over the chunks and then
        up-projected by its slice of U; the sink tile's own state (head dim) joins here.
        RV_BLK up to 128 columns: wider slices mean fewer round trips to L2 after the wait;
        256 (the whole latent, rank 160 padded) spills. U_LINES > 0: this program's rows of U
        (U_LINE elements a line) are asked of L2 before the wait for the partials, as the
        model's weights have streamed through L2 since the last step. One path for every
        rank: splitting a rank into two power-of-two pieces (160 = 128 + 32) times the same."""
        pid = tl.program_id(0)  # (sequence, KV head, query head of the group)
        pid_d = tl.program_id(1)
        bh = pid // G
        g = pid % G
        h = bh % KV
        dd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        if LATENT:
            vb = tl.load(vb_ptr + h * D + dd)
            if U_LINES > 0:  # the rows are contiguous: BLOCK_D * RV elements
                off = tl.minimum(tl.arange(0, U_LINES) * U_LINE, BLOCK_D * RV - 1)
                _prefetch_l2(vu_ptr + (h * D + pid_d * BLOCK_D) * RV + off)
        if PDL:
            tl.extra.cuda.gdc_wait()
            tl.extra.cuda.gdc_launch_dependents()
        base = bh * S * G + g
        mv = tl.full([S_BLK], float("-inf"), dtype=tl.float32)
        for s0 in range(0, S, S_BLK):  # the largest chunk maximum
            s = s0 + tl.arange(0, S_BLK)
            mv = tl.maximum(mv, tl.load(m_ptr + base + s * G, mask=s < S, other=float("-inf")))
        mx = tl.max(mv, 0)
        if HAS_SINK:
            ms = tl.load(sm_ptr + pid)
            mx = tl.maximum(mx, ms)
        mx = tl.where(mx == float("-inf"), 0.0, mx)
        den = tl.zeros([S_BLK], dtype=tl.float32)
        num = tl.zeros([BLOCK_D], dtype=tl.float32)
        if LATENT:
            for r0 in range(0, RV, RV_BLK):
                r = r0 + tl.arange(0, RV_BLK)
                rmask = r < RV
                numl = tl.zeros([RV_BLK], dtype=tl.float32)
                for s0 in range(0, S, S_BLK):
                    s, smask, w = _chunk_weights(m_ptr, base, s0, S, G, mx, S_BLK)
                    if r0 == 0:
                        den += w * tl.load(l_ptr + base + s * G, mask=smask, other=0.0)
                    a = tl.load(
                        acc_ptr + (base + s[:, None] * G) * RV + r[None, :],
                        mask=smask[:, None] & rmask[None, :],
                        other=0.0,
                    )
                    numl += tl.sum(a * w[:, None], 0)
                u = tl.load(vu_ptr + (h * D + dd[:, None]) * RV + r[None, :], mask=rmask[None, :], other=0.0)
                num += tl.sum(u.to(tl.float32) * numl[None, :], 1)
            total = tl.sum(den, 0)
            num += vb * total
        else:
            for s0 in range(0, S, S_BLK):
                s, smask, w = _chunk_weights(m_ptr, base, s0, S, G, mx, S_BLK)
                den += w * tl.load(l_ptr + base + s * G, mask=smask, other=0.0)
                a = tl.load(acc_ptr + (base + s[:, None] * G) * D + dd[None, :], mask=smask[:, None], other=0.0)
                num += tl.sum(a * w[:, None], 0)
            total = tl.sum(den, 0)
        if HAS_SINK:
            ws = tl.exp(ms - mx)
            total += ws * tl.load(sl_ptr + pid)
            num += ws * tl.load(sa_ptr + pid * D + dd)
        # output row (B, H*D): query head h*G + g of sequence b is row pid
        tl.store(out_ptr + pid * D + dd, (num / total).to(out_ptr.dtype.element_ty))


_TL_DTYPES = (
    {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16} if triton is not None else {}
)


def pdl_available(device: torch.device) -> bool:
    """Programmatic dependent launch: Hopper or newer, a Triton that launches with it
    (`launch_pdl`, 3.4+), not the interpreter."""
    if triton is None or INTERPRET or device.type != "cuda" or torch.version.hip:
        return False
    major, minor = (int(x) for x in triton.__version__.split(".")[:2])
    return (major, minor) >= (3, 4) and torch.cuda.get_device_capability(device)[0] >= 9


def _p2(n: int, least: int = 16) -> int:
    return max(least, 1 << (n - 1).bit_length())


def supports(attn, lay, cache_dtype: torch.dtype) -> bool:
    """Layouts the kernel serves: K and V each `full` or `latent`, a power-of-two head dim,
    and a latent K cached in its up-projection's dtype or in one byte."""
    d = attn.head_dim
    return (
        available()
        and lay.k.kind in ("full", "latent")
        and lay.v.kind in ("full", "latent")
        and d >= 16
        and d & (d - 1) == 0
        and (lay.k.kind == "full" or cache_dtype in (attn.k_proj.up.weight.dtype, torch.int8, torch.float8_e4m3fn))
    )


def norm_from_latent(up: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor, kv: int, d: int, tol: float = 2e-2):
    """The QK-norm's sum of squares of a rebuilt key straight from its latent z, when
    each head's Gram matrix G_h = U_h^T U_h is diagonal (g: an orthonormal basis, as
    activation_svd writes for one KV head; per_head_svd's blocks). With c = U_h^T b_h,
    |U_h z + b_h|^2 = sum_r g_r (z_r + e_r)^2 + |b_h|^2 - sum_r g_r e_r^2, e_r = c_r / g_r
    (0 where g_r = 0, where c_r = 0 too): positive terms, so a bf16 dot sums them well.
    One dot over z per key instead of a cross-thread sum over the rebuilt key per slice.
    Returns (gz (kv, 2, r): g and e, const (kv,), U and bias with the norm weight folded
    in) or None (G not diagonal)."""
    u = up.float().view(kv, d, -1)
    b = bias.float().view(kv, d)
    gram = u.transpose(1, 2) @ u  # (kv, r, r)
    g = gram.diagonal(dim1=1, dim2=2)
    off = (gram - torch.diag_embed(g)).abs().amax()
    if off > tol * max(g.abs().amax().item(), 1e-30):
        return None
    c = torch.einsum("hdr,hd->hr", u, b)
    live = g > tol * g.amax()
    e = torch.where(live, c / torch.where(live, g, torch.ones_like(g)), torch.zeros_like(c))
    e = torch.where(e.abs() > 1e-6 * (b.abs().amax() + 1e-30), e, torch.zeros_like(e))  # bias off the span: 0
    const = ((b * b).sum(1) - (g * e * e).sum(1)).clamp_min(0)
    gz = torch.stack([torch.where(live, g, torch.zeros_like(g)), e], 1).contiguous()
    w = weight.float().repeat(kv)  # the norm weight per row
    return gz, const.contiguous(), (up.float() * w[:, None]).to(up.dtype).contiguous(), (bias.float() * w).contiguous()


def _power_of_two(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True)
class TritonTuning:
    """How the Triton decode kernels run (DecodeOptions.tuning). The defaults are the
    runtime's; other values are for benchmarks (bench_decode_kernel's flags,
    bench_generate --tuning).

    block_t           `_decode_partial`'s keys per tile (a power of two, at least 16: tl.dot)
    num_warps         its warps per program (a power of two)
    num_stages        its software-pipelining stages (None: Triton's default)
    maxnreg           a register cap per thread (None: none; more programs per SM, spills)
    per_sm            programs per SM the chunking plans for (one wave)
    fast_trig         RoPE's cos / sin on the special-function unit (None: on a GPU, not in
                      the interpreter)
    ds                rotation pairs of a latent K rebuilt at a time (clamped to 16 .. D/2)
    ds_dynamic        those slices in a loop (else unrolled)
    norm_z            the QK-norm's sum of squares from z where K's basis is orthonormal per
                      head (norm_from_latent)
    latent_combine    a latent V: merge the chunks' latent mixtures and up-project once in
                      the combine instead of per chunk (fewer registers); the cuda backend
                      needs it
    combine_block     chunk states the combine loads at once (a power of two, at least 2)
    combine_rv_block  a latent combine's latent columns per slice (a power of two, at least 16)
    combine_warps     a latent combine's warps per program (a power of two)
    combine_block_d   a latent combine's head dims per program (a power of two)
    """

    block_t: int = 32
    num_warps: int = 4
    num_stages: int | None = None
    maxnreg: int | None = None
    per_sm: int = 2
    fast_trig: bool | None = None
    ds: int = 64
    ds_dynamic: bool = False
    norm_z: bool = True
    latent_combine: bool = True
    combine_block: int = 128
    combine_rv_block: int = 128
    combine_warps: int = 4
    combine_block_d: int = 64

    def __post_init__(self):
        def check(name: str, ok: bool, valid: str) -> None:
            if not ok:
                raise TPAError(f"Triton tuning {name}={getattr(self, name)!r} is not valid; valid: {valid}")

        for name, least in (("block_t", 16), ("combine_block", 2), ("combine_rv_block", 16)):
            v = getattr(self, name)
            check(name, _power_of_two(v) and v >= least, f"a power of two, at least {least}")
        for name in ("num_warps", "combine_warps", "combine_block_d"):
            check(name, _power_of_two(getattr(self, name)), "a power of two")
        for name in ("per_sm", "ds"):
            v = getattr(self, name)
            check(name, isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a whole number >= 1")
        for name in ("num_stages", "maxnreg"):
            v = getattr(self, name)
            whole = isinstance(v, int) and not isinstance(v, bool) and v >= 1
            check(name, v is None or whole, "None or a whole number >= 1")
        check("fast_trig", self.fast_trig in (None, True, False), "None, true or false")
        for name in ("ds_dynamic", "norm_z", "latent_combine"):
            check(name, isinstance(getattr(self, name), bool), "true or false")

    @classmethod
    def parse(cls, text: str) -> TritonTuning:
        """From "name=value,..." (a benchmark's flag): ints, true / false, none."""
        valid = {f.name for f in fields(cls)}
        kw = {}
        for item in filter(None, (x.strip() for x in text.split(","))):
            name, eq, value = item.partition("=")
            if not eq or name not in valid:
                names = ", ".join(sorted(valid))
                raise TPAError(f"Triton tuning {item!r} is not valid; valid: name=value, names {names}")
            low = value.strip().lower()
            if low in ("true", "false", "none"):
                kw[name] = {"true": True, "false": False, "none": None}[low]
            elif low.lstrip("-").isdigit():
                kw[name] = int(low)
                if name in ("fast_trig", "ds_dynamic", "norm_z", "latent_combine") and kw[name] in (0, 1):
                    kw[name] = bool(kw[name])
            else:
                raise TPAError(f"Triton tuning {item!r} is not valid; valid: a whole number, true, false or none")
        return cls(**kw)


class DecodeAttention:
    """Per-layer constants of the kernels (made once) and their launch.

    attn: the layer's Attention; layout: its LayerLayout; sink: leading positions read from
    the exact sink tile instead of the cache (attention.sink_of); backend: what computes the
    chunks' partial states, as the plan chose it (backends/): "triton" (`_decode_partial`,
    run as `tuning` says) or "cuda" (cuda_decode.py: its per-layer constants prepared once,
    `cu`, built with `cuda_build`; ValueError for a layer it does not serve,
    cuda_decode.BuildError where it does not build); pdl: programmatic dependent launch
    (None: where available): each kernel's programs start while the previous kernel
    finishes and wait for it on the GPU (griddepcontrol). The combine is Triton's either way.
    """

    def __init__(
        self,
        attn,
        layout,
        sink: int,
        backend: str = "triton",
        tuning: TritonTuning = TritonTuning(),
        cuda_build: cuda_decode.CudaBuild = cuda_decode.CudaBuild(),
        pdl: bool | None = None,
    ):
        if not isinstance(tuning, TritonTuning):
            raise TPAError(f"DecodeAttention tuning={tuning!r} is not valid; valid: a kernels.TritonTuning")
        if backend not in ("triton", "cuda"):
            raise ValueError(f"backend {backend!r}: valid: triton, cuda")
        cfg, d = attn.cfg, attn.head_dim
        self.tuning = tuning
        self.d, self.kv, self.g = d, attn.n_kv, attn.n_heads // attn.n_kv
        self.scale, self.window, self.sink = float(attn.scale), attn.window, sink
        self.k_latent, self.v_latent = layout.k.kind == "latent", layout.v.kind == "latent"
        self.fast_trig = (not INTERPRET) if tuning.fast_trig is None else tuning.fast_trig
        dev = attn.q_proj.weight.device
        self.pdl = pdl_available(dev) if pdl is None else pdl
        none = torch.zeros(1, device=dev)
        self.ku = self.kb = self.nw = self.invf = self.vu = self.vb = raw_up = raw_b = none
        self.rk = self.rv = 1
        self.has_norm, self.eps, self.rscale = False, 0.0, 1.0
        self.norm_z, self.has_e, self.gz, self.bb = False, False, none, none
        if self.k_latent:
            kp = attn.k_proj
            self.ku = kp.up.weight.detach().contiguous()  # (kv*D, rk)
            self.kb = kp.bias.detach().float().contiguous()
            raw_up, raw_b = self.ku, self.kb  # before any norm folding (the CUDA kernel's)
            self.rk = self.ku.shape[1]
            self.has_norm = attn.qk_norm
            if self.has_norm:
                self.nw = attn.k_norm.gain().detach().contiguous()
                self.eps = attn.k_norm.eps
                z_norm = norm_from_latent(self.ku, self.kb, self.nw, self.kv, d) if tuning.norm_z else None
                if z_norm is not None:
                    self.norm_z = True
                    self.gz, self.bb, self.ku, self.kb = z_norm
                    self.has_e = bool(self.gz[:, 1].abs().amax() > 0)  # activation_svd: bias off U's span, e = 0
            self.invf = rope_inv_freq(d, cfg.rope_base(attn.layer), dev)
            self.rscale = float(cfg.rope_scale(attn.layer))
        if self.v_latent:
            vp = attn.v_proj
            self.vu = vp.up.weight.detach().contiguous()  # (kv*D, rv)
            self.vb = vp.bias.detach().float().contiguous()
            self.rv = self.vu.shape[1]
        self.n_sm = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 4
        self.cu = self._cuda_layer(attn, layout, raw_up, raw_b, cuda_build) if backend == "cuda" else None

    @property
    def cuda(self) -> bool:
        """The chunks' partial states come from the CUDA kernel."""
        return self.cu is not None

    @property
    def cuda_kind(self) -> str | None:
        """The CUDA kernel the layer runs (cuda_decode.KINDS), or None (Triton)."""
        return self.cu.kind if self.cu is not None else None

    def _cuda_layer(self, attn, lay, raw_up, raw_b, build: cuda_decode.CudaBuild) -> cuda_decode.CudaLayer:
        """The CUDA kernel's constants for this layer (cuda_decode.prepare), its builds compiled."""
        dev = attn.q_proj.weight.device
        if not (
            dev.type == "cuda"
            and not INTERPRET
            and self.k_latent
            and self.v_latent
            and self.tuning.latent_combine
            and cuda_decode.serves(self.d, self.g, self.rk, self.rv, attn.k_proj.up.weight.dtype, build)
        ):
            raise ValueError("backend 'cuda' does not serve this layer (see cuda_decode.serves)")
        return cuda_decode.prepare(
            build,
            up=raw_up,
            bias=raw_b,
            rv=self.rv,
            g=self.g,
            kv=self.kv,
            norm=(self.nw, self.eps) if self.has_norm else None,
            z_norm=(self.gz, self.bb, self.ku, self.kb, self.has_e) if self.norm_z else None,
            invf=self.invf,
            rscale=self.rscale,
            scale=self.scale,
            window=self.window,
            sink=self.sink,
            pdl=self.pdl,
            k_scale=lay.k_scale,
        )

    def chunks(self, b: int, t: int, block: int | None = None, per_sm: int | None = None) -> tuple[int, int]:
        """(chunk length, chunk count): at most `per_sm` programs per SM, so one wave
        (rounding up made 272 programs for 264 slots at batch 16: a second wave, ~2x)."""
        block = block or self.tuning.block_t
        blocks = triton.cdiv(t, block)
        n = max(1, min(blocks, (per_sm or self.tuning.per_sm) * self.n_sm // (b * self.kv)))
        chunk = triton.cdiv(blocks, n) * block
        return chunk, triton.cdiv(t, chunk)

    def tiling(self, b: int, t: int) -> tuple[int, int, int]:
        """(keys per tile, chunk length, chunk count) of a call over t slots at batch b: the
        CUDA kernel's (block_for, CudaBuild.per_sm) or the Triton kernel's (block_t, per_sm)."""
        if self.cu is not None:
            blk = cuda_decode.block_for(self.rk, self.rv, self.g, t, self.cu.build)
            return (blk, *self.chunks(b, t, blk, self.cu.build.per_sm))
        return (self.tuning.block_t, *self.chunks(b, t))

    @staticmethod
    def strides(q, kc, vc, k_pos, sstr) -> tuple[int, ...]:
        """The row strides both kernels take: q's (sequence, head), the cache's K and V
        (sequence, slot), the positions' (sequence), the sink tile's sstr."""
        return (
            q.stride(0),
            q.stride(1),
            kc.stride(0),
            kc.stride(1),
            vc.stride(0),
            vc.stride(1),
            k_pos.stride(0),
            *sstr,
        )

    def __call__(self, q, kc, vc, k_pos, q_pos, sink=None, scale=None, k_scale=None, wslot=None, phases=None):
        """q (B, H, 1, D) attention-ready; kc/vc (B, T, values) the cache's K and V
        entries (fp8 and int8 are dequantized on load); k_pos (B, T) int32; q_pos (B, 1);
        sink: exact (ks, vs), each (B, kv, n, D), or None; scale: an int8 cache's
        (B, T, 2) fp16 scales (K, V); k_scale: a latent K's cached QK-norm factors (B, T, KV)
        fp32 (layout k_scale), which the wg kernel reads instead of summing squares (the other
        paths compute the norm themselves); wslot: (1,) int64, the cache column this step wrote
        (the wg kernel reads the rest of its first tile before the previous kernel ends), or
        None; phases: the wg kernel's per-phase clocks go there (cuda_decode.launch), or None.
        Returns (B, 1, H*D) in q's dtype."""
        b, t = kc.shape[0], kc.shape[1]
        h, d = q.shape[1], self.d
        assert kc.stride(2) == 1 and vc.stride(2) == 1 and k_pos.stride(1) == 1 and q.stride(3) == 1
        if self.cuda and not (kc.dtype == q.dtype == torch.bfloat16 and scale is None):
            raise ValueError("backend 'cuda' reads a bf16 cache with bf16 queries")
        blk, chunk, n = self.tiling(b, t)
        dev = q.device
        latent = self.v_latent and self.tuning.latent_combine
        m = torch.empty(b, self.kv, n, self.g, device=dev)
        l = torch.empty_like(m)
        acc = torch.empty(b, self.kv, n, self.g, self.rv if latent else d, device=dev)
        qp = q_pos.reshape(b)
        if sink is None:  # pointers the kernel never reads
            ks = vs = m
            ns, sstr = 0, (0, 0, 0)
        else:
            ks, vs = sink
            assert ks.stride() == vs.stride() and ks.stride(3) == 1
            ns, sstr = ks.shape[2], ks.stride()[:3]
        sink_c = latent and sink is not None  # the sink state goes to the combine
        sm = torch.empty(b, self.kv, self.g, device=dev) if sink_c else m
        sl = torch.empty_like(sm) if sink_c else m
        sa = torch.empty(b, self.kv, self.g, d, device=dev) if sink_c else m
        ieee = q.dtype == torch.float32 and kc.dtype in (torch.float32, torch.int8, torch.float8_e4m3fn)
        int8 = kc.dtype == torch.int8
        assert int8 == (scale is not None)
        sc = scale if int8 else m
        st = self.strides(q, kc, vc, k_pos, sstr)
        if self.cuda:  # the same chunk states, from the hand-written kernel
            cuda_decode.launch(
                self.cu,
                q,
                kc,
                vc,
                k_pos,
                qp,
                ks,
                vs,
                ns,
                st,
                m,
                l,
                acc,
                sm,
                sl,
                sa,
                chunk,
                n,
                blk,
                k_scale,
                wslot,
                phases,
            )
        else:
            self._triton_partial(
                q, kc, vc, k_pos, qp, sc, sm, sl, sa, ks, vs, m, l, acc, t, chunk, n, ns, st, ieee, int8, latent, sink
            )
        out = torch.empty(b, h * d, dtype=q.dtype, device=dev)
        tn = self.tuning
        bd = min(d, tn.combine_block_d if latent else 64)
        line = 128 // self.vu.element_size()  # U's elements per L2 line
        lines = _p2(triton.cdiv(bd * self.rv, line), 1) if latent and self.pdl and not INTERPRET else 0
        _decode_combine[(b * h, d // bd)](
            m,
            l,
            acc,
            out,
            self.vu,
            self.vb,
            sm,
            sl,
            sa,
            n,
            self.g,
            self.kv,
            RV=self.rv,
            D=d,
            S_BLK=min(tn.combine_block, _p2(n, 2)),
            BLOCK_D=bd,
            LATENT=latent,
            RV_BLK=tn.combine_rv_block,
            U_LINE=line,
            U_LINES=lines,
            HAS_SINK=sink_c,
            PDL=self.pdl,
            num_warps=tn.combine_warps if latent else 4,
            **self._pdl_kw,
        )
        return out.view(b, 1, h * d)

    @property
    def _pdl_kw(self) -> dict:
        return {"launch_pdl": True} if self.pdl else {}

    def _triton_partial(
        self, q, kc, vc, k_pos, qp, sc, sm, sl, sa, ks, vs, m, l, acc, t, chunk, n, ns, st, ieee, int8, latent, sink
    ):
        """`_decode_partial` over the cache (st: DecodeAttention.strides; the rest as
        __call__ prepared them)."""
        b, d, tn = kc.shape[0], self.d, self.tuning
        # full K: what the dots take. fp8 e4m3 converts exactly and cheaply (packed cvt)
        # to fp16, so 16-bit queries meet it there
        cdt = _TL_DTYPES.get(kc.dtype) or (
            tl.float16 if kc.dtype == torch.float8_e4m3fn and q.dtype != torch.float32 else _TL_DTYPES[q.dtype]
        )
        self.compiled = _decode_partial[(n, b * self.kv)](  # kept: registers/spills for bench
            q,
            kc,
            vc,
            k_pos,
            qp,
            sc,
            sm,
            sl,
            sa,
            self.ku,
            self.kb,
            self.nw,
            self.invf,
            self.vu,
            self.vb,
            ks,
            vs,
            self.gz,
            self.bb,
            m,
            l,
            acc,
            t,
            chunk,
            self.kv,
            n,
            self.rk,
            self.rv,
            ns,
            *st,
            sc.stride(0),
            sc.stride(1),
            self.window or 0,
            self.sink,
            self.eps,
            self.scale,
            self.rscale,
            D=d,
            HALF=d // 2,
            HALF_P=_p2(d // 2),
            G=self.g,
            G_P=_p2(self.g),
            RK_P=_p2(self.rk),
            RV_P=_p2(self.rv),
            NS_P=_p2(max(ns, 1)),
            BLOCK_T=tn.block_t,
            DS=min(max(16, tn.ds), _p2(d // 2)),
            K_LATENT=self.k_latent,
            V_LATENT=self.v_latent,
            HAS_NORM=self.has_norm,
            HAS_WINDOW=self.window is not None,
            HAS_SINK=sink is not None,
            PREC="ieee" if ieee else "tf32",
            FAST_TRIG=self.fast_trig,
            CDT=cdt,
            INT8=int8,
            LATENT_COMBINE=latent,
            DS_DYNAMIC=tn.ds_dynamic,
            NORM_Z=self.norm_z,
            HAS_E=self.has_e,
            PDL=self.pdl,
            num_warps=tn.num_warps,
            **self._pdl_kw,
            **({} if tn.num_stages is None else {"num_stages": tn.num_stages}),
            **({} if tn.maxnreg is None else {"maxnreg": tn.maxnreg}),
        )
