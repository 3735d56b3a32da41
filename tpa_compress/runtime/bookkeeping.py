"""Triton: a decode step's bookkeeping around its layers, one kernel before and one after.

Eagerly the step's head (runner._step_head) is ~20 kernels at one RoPE kind and ~35 at
Gemma 3's two, its advance (runner._advance) ~6; without torch.compile each is a launch.

    step_head(model, tok, col, pad, tables, rope_keys, dtype)
        -> (q_pos, slots, ropes, h, x), as runner._step_head, in one launch (one program per
        sequence): q_pos = col - pad (B, 1) int64; each position table's write at slot
        col % capacity and that slot, (1,) int64 per capacity (cache.write_positions for one
        column); cos/sin (B, 1, head_dim) in `dtype` per RoPE kind (base, scale); the
        embedding row times the model's embed scale, h (B, 1, hidden); x = layer 0's input
        RMSNorm of h.
    advance(nxt, eos, done, ids, tok, col)
        as runner._advance, in one launch (one program for the batch, nothing allocated: a
        captured graph's step): finished sequences keep emitting EOS (eos >= 0), `done`
        updated, ids[:, col + 1] = tok = nxt, col += 1.

Rounding is the eager code's on CUDA: the angle is (position in fp32 * fp32(1 / scale)) *
inv_freq (ATen divides by a Python scalar as a multiply by its fp32 reciprocal; the same as
a division for a power-of-two scale, as Gemma 3's 8), inv_freq from models.common.rope_inv_freq
on the device (the same pow), cos/sin in fp32 (libdevice's accurate ones) rounded to
`dtype`; the embedding row times the scale rounded to the weight's dtype (Transformer.embed),
rounded once; the norm as norms.py's.

The kernels run where Triton runs (CUDA tensors, or any tensor under TRITON_INTERPRET=1);
`serves_head` says which models the head kernel takes (a plain nn.Embedding and an RMSNorm
input norm: every family's); the runner keeps the eager functions elsewhere.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..models.common import RMSNorm, rope_inv_freq
from .kernels import triton
from .norms import _pdl, kernel_serves

if triton is not None:
    import triton.language as tl

    from .norms import _gain, _norm_row, _wait

    @triton.jit
    def _step_head(
        tok_ptr,
        col_ptr,
        pad_ptr,
        emb_ptr,
        w_ptr,
        freq_ptr,
        inv_scale_ptr,
        tables,
        caps,
        qpos_ptr,
        slot_ptr,
        cs_ptr,
        h_ptr,
        x_ptr,
        B,
        N,
        emb_scale,
        offset,
        eps,
        NT: tl.constexpr,
        R: tl.constexpr,
        HALF: tl.constexpr,
        BLOCK: tl.constexpr,
        BLOCK_D: tl.constexpr,
        PDL: tl.constexpr,
    ):
        b = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        m = offs < N
        dt = h_ptr.dtype.element_ty
        g = _gain(w_ptr, offs, m, offset)
        _wait(PDL)
        col = tl.load(col_ptr)
        q = col - tl.load(pad_ptr + b)
        tl.store(qpos_ptr + b, q)
        for i in tl.static_range(NT):  # this sequence's row of each position table
            slot = col % caps[i]
            tl.store(tables[i] + b * caps[i] + slot, q.to(tl.int32))
            if b == 0:
                tl.store(slot_ptr + i, slot)
        # cos/sin of each RoPE kind: (R, 2, B, 1, D), the half-split layout (frequency d % HALF)
        d = tl.arange(0, BLOCK_D)
        md = d < 2 * HALF
        pf = q.to(tl.float32)
        for r in tl.static_range(R):
            ang = (pf * tl.load(inv_scale_ptr + r)) * tl.load(freq_ptr + r * HALF + d % HALF, mask=md, other=0.0)
            out = cs_ptr + (2 * r * B + b) * (2 * HALF) + d
            tl.store(out, tl.cos(ang).to(cs_ptr.dtype.element_ty), mask=md)
            tl.store(out + B * 2 * HALF, tl.sin(ang).to(cs_ptr.dtype.element_ty), mask=md)
        t = tl.load(tok_ptr + b).to(tl.int64)
        e = tl.load(emb_ptr + t * N + offs, mask=m, other=0.0).to(tl.float32)
        h = (e * emb_scale).to(dt)
        row = b.to(tl.int64) * N
        tl.store(h_ptr + row + offs, h, mask=m)
        tl.store(x_ptr + row + offs, _norm_row(h.to(tl.float32), g, N, eps, dt), mask=m)

    @triton.jit
    def _advance(
        nxt_ptr,
        done_ptr,
        ids_ptr,
        tok_ptr,
        col_ptr,
        B,
        ids_stride,
        eos,
        HAS_EOS: tl.constexpr,
        BLOCK_B: tl.constexpr,
        PDL: tl.constexpr,
    ):
        _wait(PDL)
        offs = tl.arange(0, BLOCK_B)
        m = offs < B
        col = tl.load(col_ptr)
        n = tl.load(nxt_ptr + offs, mask=m, other=0)
        if HAS_EOS:
            d = tl.load(done_ptr + offs, mask=m, other=0) != 0
            n = tl.where(d, eos, n)
            tl.store(done_ptr + offs, d | (n == eos), mask=m)
        tl.store(ids_ptr + offs.to(tl.int64) * ids_stride + col + 1, n, mask=m)
        tl.store(tok_ptr + offs, n, mask=m)
        tl.debug_barrier()  # every thread has read col before it moves on
        tl.store(col_ptr, col + 1)


def serves_head(model) -> bool:
    """The models the head kernel takes: a plain embedding table and an RMSNorm as layer
    0's input norm (every family's), an even head dim."""
    return (
        isinstance(model.embed_tokens, nn.Embedding)
        and model.embed_tokens.weight.is_contiguous()
        and isinstance(model.layers[0].input_layernorm, RMSNorm)
        and model.cfg.head_dim % 2 == 0
    )


@functools.cache
def _rope_terms(head_dim: int, rope_keys: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per RoPE kind (base, scale): its inv_freq (R, head_dim / 2) as the eager code computes
    it on the device, and fp32(1 / scale) (R,), what ATen multiplies by for `/ scale`."""
    freqs = torch.stack([rope_inv_freq(head_dim, base, device) for base, _ in rope_keys])
    inv = 1.0 / torch.tensor([s for _, s in rope_keys], dtype=torch.float32)
    return freqs, inv.to(device)


def _p2(n: int) -> int:
    return triton.next_power_of_2(n)


def step_head(model, tok, col, pad, tables: dict, rope_keys, dtype):
    """runner._step_head in one launch (see the module docstring); tok/col/pad on the
    device, tables {capacity: (B, capacity) int32}."""
    b, n, hd = tok.shape[0], model.cfg.hidden_size, model.cfg.head_dim
    w, norm = model.embed_tokens.weight, model.layers[0].input_layernorm
    dev = tok.device
    freqs, inv_scale = _rope_terms(hd, tuple(rope_keys), dev)
    caps = tuple(tables)
    assert all(t.is_contiguous() and t.shape == (b, c) for c, t in tables.items())
    q_pos = torch.empty(b, 1, dtype=torch.long, device=dev)
    slot = torch.empty(len(caps), dtype=torch.long, device=dev)
    cs = torch.empty(len(rope_keys), 2, b, 1, hd, dtype=dtype, device=dev)
    h = torch.empty(b, 1, n, dtype=w.dtype, device=dev)
    x = torch.empty_like(h)
    block = _p2(n)
    pdl = tok.is_cuda and _pdl(dev.index or 0)
    # the scale as Transformer.embed multiplies by it: a tensor of the activation dtype
    emb_scale = float(torch.tensor(model.embed_scale, dtype=w.dtype)) if model.embed_scale != 1.0 else 1.0
    _step_head[(b,)](
        tok,
        col,
        pad,
        w,
        norm.weight,
        freqs,
        inv_scale,
        tuple(tables.values()),
        caps,
        q_pos,
        slot,
        cs,
        h,
        x,
        b,
        n,
        emb_scale,
        float(norm.offset),
        float(norm.eps),
        NT=len(caps),
        R=len(rope_keys),
        HALF=hd // 2,
        BLOCK=block,
        BLOCK_D=_p2(hd),
        PDL=pdl,
        num_warps=min(16, max(1, block // 256)),
        **({"launch_pdl": True} if pdl else {}),
    )
    slots = {c: slot[i : i + 1] for i, c in enumerate(caps)}
    ropes = {rk: (cs[r, 0], cs[r, 1]) for r, rk in enumerate(rope_keys)}
    return q_pos, slots, ropes, h, x


def advance(nxt, eos: int, done, ids, tok, col) -> None:
    """runner._advance in one launch, in place (see the module docstring)."""
    b = nxt.shape[0]
    assert ids.stride(1) == 1 and tok.is_contiguous() and done.is_contiguous() and nxt.is_contiguous()
    pdl = nxt.is_cuda and _pdl(nxt.device.index or 0)
    _advance[(1,)](
        nxt,
        done,
        ids,
        tok,
        col,
        b,
        ids.stride(0),
        eos,
        HAS_EOS=eos >= 0,
        BLOCK_B=_p2(b),
        PDL=pdl,
        num_warps=1,
        **({"launch_pdl": True} if pdl else {}),
    )


def head_serves(model, tok) -> bool:
    """The head kernel runs here (kernel_serves) and takes this model (serves_head)."""
    return kernel_serves(tok) and serves_head(model)
