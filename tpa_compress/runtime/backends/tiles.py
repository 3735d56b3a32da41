"""tiles — the torch reference: any layout, any cache format, any device.

Reads the cache through `LayerCache.read` a tile of `Runner.tile` slots at a time (one
tile spans the cache for a full K, which needs no rebuild), rebuilds a factorized K per
tile and merges the tiles with an online softmax (attention.attend_tiles); the exact sink
tile joins at the end. A one-byte cache is dequantized per tile; a grouped cache (int4,
int3, int2) dequantizes its packed groups per tile and overlays its bf16 recent window
(grouped_cache.py), on the CPU and on CUDA alike. That costs a dequantization of the
whole cache every step, in eager torch without a CUDA graph, so a grouped cache decodes
slower per step than a bf16 one read by the Triton/CUDA kernels (docs/quality.md: 50-85x
at 32K on an H100).
"""

from __future__ import annotations

from ..attention import attend_tiles
from .base import AttentionBackend, layer_of, register_attention


@register_attention("tiles")
class Tiles(AttentionBackend):
    def supports(self, ctx) -> bool:
        return ctx.reads("torch")

    def build(self, runner, i: int):
        attn, lay, lc = layer_of(runner, i)
        pos = runner.cache.positions[lc.capacity]

        def attend(q, q_pos, mask, slot, sink):
            step = lc.capacity if lay.k.kind == "full" else runner.tile  # a full K: one tile spans the cache
            tiles = ((*lc.read(runner.dtype, a, a + step), pos[:, a : a + step]) for a in range(0, lc.capacity, step))
            o = attend_tiles(attn, lay, q, q_pos, tiles, runner.update, sink=sink)
            return o.transpose(1, 2).reshape(q.shape[0], 1, -1)

        return attend
