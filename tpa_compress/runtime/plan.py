"""The decode plan: per layer, what writes the cache entries and what computes attention.

`DecodeOptions` holds every choice a caller makes about the decode step (frozen; None: by
device), the Triton kernels' tuning (`tuning`, a kernels.TritonTuning) and the CUDA
kernels' build (`cuda_build`, a cuda_decode.CudaBuild) included: nothing module-level
steers it. `plan_layer` walks the table below for each
role, from the options' choice down, and takes the first backend that supports the layer
(backends/: each file says what it serves):

    role       backend   serves
    attention  cuda      latent K + V, head dim 256, ranks cuda_decode.serves (for cuda_build),
                         bf16 cache, CUDA (where the kernels do not build: triton)
               triton    K, V full or latent, power-of-two head dim, per-token cache formats
               sdpa      K, V full, at most SDPA_MAX_KEYS slots
               direct    K full, no exact sink
               tiles     anything (the torch reference; grouped caches)
    entries    kernel    plain cache, power-of-two head dim (Triton epilogue kernel)
               written   plain cache (the matmul's epilogue writes it)
               fused     any cache (one Q/K/V matmul, the cache's own write)
               eager     any cache (the reference)

Defaults: on CUDA with triton, attention from `cuda` and entries from `kernel`, compiled above
a batch of UNCOMPILED_MAX_BATCH or over a lossy cache; elsewhere attention from `sdpa`, entries
`eager`, uncompiled. A whole-step choice:
the CUDA graph, which needs every layer's cache writes to be device-side (a grouped cache
appends on the host, so a runner with one decodes eagerly). `Runner.plan` is the list of
`LayerPlan`s; `describe(plan)` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from ..cache_formats import parse_spec
from ..errors import TPAError
from . import gemv as gemv_mod
from . import kernels
from .backends import ATTENTION, ENTRIES, LayerContext
from .cuda_decode import CudaBuild
from .kernels import TritonTuning

ATTENTION_ORDER = ("cuda", "triton", "sdpa", "direct", "tiles")
ENTRIES_ORDER = ("kernel", "written", "fused", "eager")
# Up to this batch, over a cache of 16 bits or more, the CUDA step runs uncompiled (Triton kernels
# of its own: runtime/norms.py, bookkeeping.py): as fast as the compiled step there, and it imports
# and traces no torch.compile, which is most of a second run's start-up. Above it inductor's fusion
# of the element-wise work is faster; a lossy cache's quantize and tile pieces are compiled ones
# (docs/benchmarks.md, "The uncompiled step").
UNCOMPILED_MAX_BATCH = 1


@dataclass(frozen=True)
class DecodeOptions:
    """The decode step's choices. None: chosen by device (`resolved`).

    attention       the first attention backend tried (ATTENTION_ORDER; later ones serve what
                    it does not)
    entries         the first entries writer tried (ENTRIES_ORDER)
    compile         torch.compile the step's element-wise pieces (norms, RoPE, MLP gate, the
                    tile update); the graph replays them with no launch cost. Uncompiled on
                    CUDA, Triton kernels of the runtime's own serve them (no torch.compile
                    imported: a fast start); default: compiled above UNCOMPILED_MAX_BATCH
                    or over a lossy cache
    cuda_graph      capture the decode step once and replay it
    gemv            the decode step's matmuls through gemv.py (a batch of at most
                    gemv.MAX_ROWS on CUDA: cuBLAS leaves most SMs idle for one row)
    pdl             programmatic dependent launch (Hopper+): each kernel of the step starts
                    while the previous one finishes and waits for its data on the GPU
    prefetch        the step asks L2 for a kernel-served layer's cache while the layer before
                    it runs (a side stream), where it is prefetch_min bytes or more and at
                    most prefetch_max_l2 of L2
    prefetch_min    bytes of a layer's cache from which it is prefetched
    prefetch_max_l2 the largest cache prefetched, as a fraction of L2 (on an H200, 60 MB of
                    L2, caches of 33.5 and 16.8 MB both decode faster prefetched)
    tile            keys per tile where a factorized K is rebuilt by the torch path (None:
                    bounded fp32 scratch, ~64 MB)
    query_tile      queries per tile in prefill
    tuning          how the Triton decode kernels run (kernels.TritonTuning: block_t, num_warps,
                    per_sm, latent_combine, ...)
    cuda_build      how the `cuda` backend's kernels are built and split their work
                    (cuda_decode.CudaBuild: kernel, minb, warps, unroll, block, per_sm)
    """

    attention: str | None = None
    entries: str | None = None
    compile: bool | None = None
    cuda_graph: bool | None = None
    gemv: bool | None = None
    pdl: bool | None = None
    prefetch: bool | None = None
    prefetch_min: int = 1 << 20
    prefetch_max_l2: float = 0.75
    tile: int | None = None
    query_tile: int = 512
    tuning: TritonTuning = TritonTuning()
    cuda_build: CudaBuild = CudaBuild()

    def __post_init__(self):
        if not isinstance(self.tuning, TritonTuning):
            raise TPAError(f"decode option tuning={self.tuning!r} is not valid; valid: a kernels.TritonTuning")
        if not isinstance(self.cuda_build, CudaBuild):
            raise TPAError(f"decode option cuda_build={self.cuda_build!r} is not valid; valid: a cuda_decode.CudaBuild")
        for name, order in (("attention", ATTENTION_ORDER), ("entries", ENTRIES_ORDER)):
            v = getattr(self, name)
            if v is not None and v not in order:
                raise TPAError(f"decode option {name}={v!r} is not valid; valid: {', '.join(order)}")

    @classmethod
    def of(cls, options: DecodeOptions | None = None, **overrides) -> DecodeOptions:
        """`options` (or the defaults) with `overrides` (field names; None values ignored)."""
        valid = {f.name for f in fields(cls)}
        for k in overrides:
            if k not in valid:
                raise TPAError(f"decode option {k!r} is not valid; valid: {', '.join(sorted(valid))}")
        return replace(options or cls(), **{k: v for k, v in overrides.items() if v is not None})

    def resolved(self, device: torch.device, batch: int, cache_dtype: str = "bf16") -> DecodeOptions:
        """Every None decided for this device, batch and cache format."""
        cuda = device.type == "cuda"
        tri = kernels.available()
        compile = self.compile
        if compile is None:
            kernel_step = tri and batch <= UNCOMPILED_MAX_BATCH and not parse_spec(cache_dtype).format.lossy
            compile = cuda and not kernel_step
        return replace(
            self,
            compile=compile,
            attention=self.attention or ("cuda" if cuda and tri else "sdpa"),
            entries=self.entries or ("kernel" if cuda and tri else "written" if compile else "eager"),
            cuda_graph=cuda if self.cuda_graph is None else self.cuda_graph,
            gemv=(cuda and batch <= gemv_mod.MAX_ROWS and tri) if self.gemv is None else self.gemv,
            pdl=kernels.pdl_available(device) if self.pdl is None else self.pdl,
            prefetch=cuda if self.prefetch is None else self.prefetch,
        )


@dataclass(frozen=True)
class LayerPlan:
    layer: int
    entries: str  # ENTRIES_ORDER
    attention: str  # ATTENTION_ORDER


def _first(order: tuple, start: str, registry: dict, ctx: LayerContext) -> str:
    for name in order[order.index(start) :]:
        if registry[name].supports(ctx):
            return name
    raise TPAError(
        f"layer {ctx.layer}: no decode backend from {start!r} on serves a "
        f"{ctx.layout.k.kind}/{ctx.layout.v.kind} layout with a {ctx.layout.cache_dtype} cache"
    )


def plan_layer(ctx: LayerContext) -> LayerPlan:
    """The layer's entries writer and attention backend: the first in each table, from the
    options' choice (ctx.options, resolved), that supports the layer."""
    o = ctx.options
    return LayerPlan(
        ctx.layer, _first(ENTRIES_ORDER, o.entries, ENTRIES, ctx), _first(ATTENTION_ORDER, o.attention, ATTENTION, ctx)
    )


def graph_safe(caches) -> bool:
    """Every cache write of the step is device-side (a grouped cache's append is not)."""
    return not any(lc.grouped for lc in caches)


def describe(plan: list[LayerPlan]) -> str:
    """The plan as a table: layers grouped by (entries, attention)."""
    rows: dict = {}
    for p in plan:
        rows.setdefault((p.entries, p.attention), []).append(p.layer)
    return "\n".join(f"layers {','.join(map(str, ls)):<20} entries {e:<8} attention {a}" for (e, a), ls in rows.items())


def fast_path_supports(head_dim: int, group: int, k_rank: int, v_rank: int, cache_dtype: str) -> bool:
    """Whether the GPU's fastest decode attention (the `cuda` backend's Hopper kernel) serves a
    latent-K, latent-V layer of these shapes with this cache format, on a GPU that has it (no
    device check: `convert` asks it to note layers that would decode in Triton)."""
    from ..cache_formats import parse_spec
    from .backends.cuda import serves_shapes

    return "cuda" in parse_spec(cache_dtype).format.backends and serves_shapes(head_dim, group, k_rank, v_rank)
