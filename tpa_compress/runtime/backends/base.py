"""The backends' base classes, their registries and the decorators that fill them
(the package docstring, backends/__init__.py, is the spec)."""

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


class Backend:
    """One way to do a role of the decode step (compute attention, write the cache entries)."""

    name = ""

    def supports(self, ctx: LayerContext) -> bool:
        raise NotImplementedError

    def build(self, runner, i: int):
        raise NotImplementedError


class AttentionBackend(Backend):
    needs_mask = False  # reads the step's additive mask (runner: made once per (capacity, window))


class EntriesBackend(Backend):
    pass


def _registrar(registry: dict):
    """A decorator factory: @register(name) names a backend class and puts one instance
    of it into `registry`."""

    def register(name: str):
        def deco(cls):
            cls.name = name
            registry[name] = cls()
            return cls

        return deco

    return register


register_attention = _registrar(ATTENTION)
register_entries = _registrar(ENTRIES)


def layer_of(runner, i: int):
    """Layer i's attention module, layout and cache (what most backends' `build` reads)."""
    return runner.model.layers[i].self_attn, runner.layouts[i], runner.cache.layers[i]
