"""sdpa and direct — a full K read as stored, with the step's additive mask.

sdpa: K and V both full, at most `SDPA_MAX_KEYS` slots: torch's scaled_dot_product_attention
(attention.sdpa_decode). Above that, its decode kernels use too few blocks.
direct: a full K (V full or factorized) and no exact sink: scores and probabilities as plain
matmuls over the whole cache (attention.direct_decode; compiled with the step on CUDA).
Both read any per-token format (`LayerCache.read` dequantizes a one-byte cache) and a
grouped one (dequantized whole, then the same matmuls).
"""

from __future__ import annotations

from ..attention import sdpa_decode
from .base import AttentionBackend, layer_of, register_attention

SDPA_MAX_KEYS = 2048  # above this, SDPA's decode kernels use too few blocks (see direct_decode)


@register_attention("sdpa")
class Sdpa(AttentionBackend):
    needs_mask = True

    def supports(self, ctx) -> bool:
        lay = ctx.layout
        return ctx.reads("torch") and lay.k.kind == lay.v.kind == "full" and ctx.cache.capacity <= SDPA_MAX_KEYS

    def build(self, runner, i: int):
        attn, _, lc = layer_of(runner, i)

        def attend(q, q_pos, mask, slot, sink):
            o = sdpa_decode(attn, q, *lc.read(runner.dtype), mask)
            return o.transpose(1, 2).reshape(q.shape[0], 1, -1)

        return attend


@register_attention("direct")
class Direct(AttentionBackend):
    needs_mask = True

    def supports(self, ctx) -> bool:
        return ctx.reads("torch") and ctx.layout.k.kind == "full" and not ctx.cache.sink

    def build(self, runner, i: int):
        attn, lay, lc = layer_of(runner, i)

        def attend(q, q_pos, mask, slot, sink):
            return runner.direct(attn, lay, q, *lc.read(runner.dtype), mask)

        return attend
