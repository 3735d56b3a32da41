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

from dataclasses import dataclass

import torch

from ...layout import LayerLayout

ATTENTION: dict[str, AttentionBackend] = {}
ENTRIES: dict[str, EntriesBackend] = {}


@dataclass(frozen=True)
class LayerContext:
    """What a backend decides from: the layer's attention module, layout and cache, the
    runner's compute dtype, and the resolved DecodeOptions."""

    layer: int
    attn: object
    layout: LayerLayout
    cache: object  # cache.LayerCache or grouped_cache.GroupedLayerCache
    dtype: torch.dtype
    options: object  # plan.DecodeOptions, resolved

    @property
    def device(self) -> torch.device:
        return self.attn.q_proj.weight.device

    @property
    def format(self):
        """The layer's cache format (cache_formats)."""
        return self.layout.cache.format

    def reads(self, backend: str) -> bool:
        """The layer's cache format is one `backend` reads (CacheFormat.backends)."""
        return backend in self.format.backends


class AttentionBackend:
    name = ""
    needs_mask = False  # reads the step's additive mask (runner: made once per (capacity, window))

    def supports(self, ctx: LayerContext) -> bool:
        raise NotImplementedError

    def build(self, runner, i: int):
        raise NotImplementedError


class EntriesBackend:
    name = ""

    def supports(self, ctx: LayerContext) -> bool:
        raise NotImplementedError

    def build(self, runner, i: int):
        raise NotImplementedError


def register_attention(name: str):
    def deco(cls):
        cls.name = name
        ATTENTION[name] = cls()
        return cls

    return deco


def register_entries(name: str):
    def deco(cls):
        cls.name = name
        ENTRIES[name] = cls()
        return cls

    return deco


def _load_builtin() -> None:
    from . import cuda, entries, sdpa, tiles, triton  # noqa: F401  (their @register runs)


_load_builtin()
