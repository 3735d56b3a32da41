"""The KV cache's decode-time reads, simulated exactly in the no-cache forward.

`cached.py` measures a cache format by decoding every window token by token through the
runtime (exact, but slow on CPU). Here the reference forward runs once per window, and
each attention layer computes, for every query position t and key position j, what a
decode step at t reads for j:

- the quantized-then-dequantized entry when `cache_formats.grouped.quantized_read` says
  so (a per-token format: always; a grouped one: once j's group is complete and older
  than the recent window), else the exact entry as the bf16 recent window holds it;
- what is quantized is what the cache stores (a full K: normed and rotated; a latent: z,
  decoded, normed and rotated after the read; TPA: its factors), with the layout's exact
  sink positions read from their exact (bf16 in a lossy format) values.

Scores and values are computed with both reads and selected per (t, j) by a mask, in
query tiles of `QUERY_TILE` rows (memory ~ tile x T per head: fine for 512-8K windows).
Query positions below `prefill` (default 1) read every key and value exact, unrounded:
the runtime's prefill attends over the prompt's new entries before it stores them, and
`cached_perplexity` prefills one token (BOS), then decodes. The result equals that
teacher-forced decoding through the runtime cache (tests compare them).

    with simulated_cache(model, "int4:recent=32"):
        nll = window_nll(model, window)
or `perplexity(model, windows, bos, cache="int4")`.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import replace

import torch

from ..cache_formats import CacheSpec, parse_spec
from ..cache_formats.grouped import fake_quantize_tokens, quantized_read, rotation_limit
from ..cache_formats.hadamard import rotation_block
from ..layout import Component, LayerLayout
from ..models.common import attention_mask

QUERY_TILE = 512


@contextlib.contextmanager
def simulated_cache(model, cache: str, prefill: int = 1):
    """Install the simulation of a `cache` (a spec string) into every attention layer of
    `model` for the duration; yields the layouts it simulates (layout_of_model's, in that
    format). Queries at positions < `prefill` read exact entries (the runtime's prefill)."""
    from ..methods.layers import layout_of_model

    spec = parse_spec(cache)
    layouts = [replace(lay, cache_dtype=spec.name) for lay in layout_of_model(model)]
    attns = [blk.self_attn for blk in model.layers]
    for attn, lay in zip(attns, layouts):
        attn.forward = functools.partial(simulated_attention, attn, lay, prefill=prefill)
    try:
        yield layouts
    finally:
        for attn in attns:
            attn.__dict__.pop("forward", None)


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantized read q, exactly. Backward: the gradient passes to the
    entries e unchanged (the straight-through estimator), so healing can train through
    the cache's rounding (heal.py); evaluation never calls backward."""

    @staticmethod
    def forward(ctx, e, q):
        return q

    @staticmethod
    def backward(ctx, g):
        return g, None


def entry_reads(e: torch.Tensor, spec: CacheSpec, c: Component, axis: str):
    """A component's entries (B, T, w) -> (quantized read, exact read), fp32. A grouped
    format quantizes the entries as its bf16 recent window holds them. Gradients reach
    the entries through both reads (straight through the rounding)."""
    fmt = spec.format
    if fmt.grouped:
        e = e.to(torch.bfloat16).float()
    block = rotation_block(c.values_per_token, rotation_limit(c.kind, c.dim, c.values_per_token))
    q = fake_quantize_tokens(e.detach(), spec, axis, block)
    if e.requires_grad:
        q = _StraightThrough.apply(e, q)
    return q, (e if fmt.grouped else q)


def simulated_attention(attn, lay: LayerLayout, x, cos, sin, mask=None, prefill: int = 1):
    """Attention.forward with the cache's reads simulated (x starts at position 0; `mask`
    is ignored: causal and window masks come from the positions)."""
    spec = lay.cache
    fmt = spec.format
    b, t, _ = x.shape
    kv, d, dt = attn.n_kv, attn.head_dim, x.dtype
    q = attn.prepare_q(x, cos, sin)
    kp, vp = attn.k_proj, attn.v_proj
    k_exact = attn.prepare_k(kp(x), cos, sin)  # the reference forward's (sink positions exact)
    ek = k_exact.transpose(1, 2).flatten(2) if lay.k.kind == "full" else kp.encode(x)
    ev = vp(x) if lay.v.kind == "full" else vp.encode(x)

    def keys(e):
        if lay.k.kind == "full":
            return e.to(dt).view(b, t, kv, d).transpose(1, 2)
        return attn.prepare_k(kp.decode(e.to(dt)), cos, sin)

    def values(e):
        return attn.split_heads(e.to(dt) if lay.v.kind == "full" else vp.decode(e.to(dt)), kv)

    kq, kx = (keys(e) for e in entry_reads(ek, spec, lay.k, "channel"))
    vq, vx = (values(e) for e in entry_reads(ev, spec, lay.v, spec.value_axis(lay.v.kind)))
    n = min(lay.sink_held, t)
    if n:  # exact sink tokens: stored in bf16 by a lossy format, else in the format
        sdt = torch.bfloat16 if fmt.lossy else fmt.storage
        ks = k_exact[:, :, :n].to(sdt).to(dt)
        vs = attn.split_heads(vp(x[:, :n]), kv).to(sdt).to(dt)
        for a, s in ((kq, ks), (kx, ks), (vq, vs), (vx, vs)):
            a[:, :, :n] = s
    h = attn.n_heads
    qg = q.view(b, kv, h // kv, t, d)
    pos = torch.arange(t, device=x.device)
    outs = []
    p0 = min(prefill, t)
    if p0:  # the prefill's queries: every entry exact, as computed
        ok = attention_mask(pos[:p0], pos, attn.window)
        s = (qg[:, :, :, :p0] @ k_exact[:, :, None].transpose(-1, -2)).float()
        p = (s * attn.scale).masked_fill(~ok, float("-inf")).softmax(-1)
        outs.append(p.to(dt) @ attn.split_heads(vp(x), kv)[:, :, None])
    for s0 in range(p0, t, QUERY_TILE):
        tq = pos[s0 : s0 + QUERY_TILE]
        qs = qg[:, :, :, s0 : s0 + QUERY_TILE]
        ok = attention_mask(tq, pos, attn.window)
        sel = quantized_read(spec, pos[None], tq[:, None]) & ok
        s = (qs @ kq[:, :, None].transpose(-1, -2)).float()
        if fmt.grouped:
            s = torch.where(sel, s, (qs @ kx[:, :, None].transpose(-1, -2)).float())
        p = (s * attn.scale).masked_fill(~ok, float("-inf")).softmax(-1)
        o = (p * sel).to(dt) @ vq[:, :, None]
        if fmt.grouped:
            o = o + (p * (ok & ~sel)).to(dt) @ vx[:, :, None]
        outs.append(o)
    o = torch.cat(outs, 3).reshape(b, h, t, d)
    return attn.o_proj(o.transpose(1, 2).reshape(b, t, -1))
