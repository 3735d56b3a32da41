"""Decode backends: what computes a layer's attention and what writes its cache entries.

    @register_attention("sdpa")
    class Sdpa(AttentionBackend): ...

Each backend is one small file; its docstring is its spec and `supports(ctx)` says which
layers it serves (`ctx`: a `LayerContext`). `plan.py` holds the order they are tried in.
`build(runner, i)` returns the layer's callable, made once:

- attention: `f(q, q_pos, mask, slot, sink) -> (B, 1, H*D)`, q (B, H, 1, D) attention-ready,
  mask the step's additive mask for this layer's (capacity, window) when the backend
  `needs_mask`, slot (1,) the column this step wrote, sink the exact sink tile or None;
- entries: `f(x, cos_sin, slot) -> q`, writing the new entries into the layer's cache.
"""

from __future__ import annotations

from . import cuda, entries, sdpa, tiles, triton  # noqa: F401,E402  (their @register runs)
from .base import (  # noqa: F401  (the package's names)
    ATTENTION,
    ENTRIES,
    AttentionBackend,
    EntriesBackend,
    LayerContext,
    register_attention,
    register_entries,
)
