"""The static KV cache: per layer, exactly what its LayerLayout says, nothing else.

Each layer holds two buffers, K and V, of shape (batch, capacity, values_per_token)
in the cache dtype: `full` stores the attention-ready K (normed, rotated) or V,
`latent` the rank-r latent z, `tpa_fixed` the R feature factors b, `tpa_contextual`
a and b side by side (what `encode()` of the projection returns). Global layers hold
`max_len` slots, sliding layers a ring buffer of `min(window, max_len)` slots.

Sequences are left-padded to a common length, so column c of every sequence lives in
slot c % capacity and one write index serves the whole batch (static shapes for the
CUDA graph). What differs per sequence is the position of each slot: a table
(batch, capacity) shared by all layers of equal capacity; pads have negative
positions and empty slots EMPTY, which every mask excludes.

One-byte caches (`fp8`, `int8`): entries are quantized when written and dequantized
per tile when read (`read`; the Triton kernel converts on load). fp8 is e4m3 with
saturation at +-448; int8 keeps one fp16 scale per token and component (K, V) — absmax
/ 127 — in `scale` (batch, capacity, 2), which is what `layout.cache_bytes` counts.

A latent K's QK-norm factors (LayerLayout.k_scale): `ks` (batch, capacity, KV heads) fp32,
written with the entries (attention.key_scales, from the layer's `ks_terms`, which the
runner sets) from z as stored, so a one-byte cache's factors match its rounded z.

Exact sink tokens (LayerLayout.sink > 0, a factorized K or V): a second, tiny buffer
per component, (batch, sink, heads*dim), holds the exact attention-ready K
(normed, rotated) or V of each sequence's own positions 0..sink-1 (row j = position j,
whatever the padding). Attention reads those positions from there and masks them out
of the factorized slots (see LayerLayout.sink_held). A full component gets a buffer too, so
a decode step never gathers the sink rows from its slots. Sink tokens are exact: with a
one-byte cache they stay in bf16.
"""

from __future__ import annotations

import torch

from ..cache_formats import FORMATS, format_names, get_format, parse_spec
from ..errors import TPAError
from ..layout import LayerLayout
from .attention import key_scales, write_entries

EMPTY = 2**30  # position of a never-written slot: later than any query, so never attended
# the per-token formats stored as they are computed (fp32, bf16, fp16), by torch dtype: a
# CPU runner's default cache is its weights' dtype
DTYPE_NAMES = {f.storage: n for n, f in ((n, FORMATS[n]) for n in format_names()) if not f.lossy and not f.grouped}


def check_cache_dtype(name: str, also: tuple[str, ...] = ()) -> None:
    """The --cache-dtype option's check (`also`: extra values the command accepts); a
    grouped format may carry parameters (cache_formats.parse_spec)."""
    if name in also:
        return
    if name.partition(":")[0] not in format_names():
        raise TPAError(f"--cache-dtype {name!r} is not valid; valid: {', '.join((*also, *format_names()))}")
    parse_spec(name, "--cache-dtype")


def quantize(x: torch.Tensor, name: str, nk: int):
    """Cache entries (..., k values | v values) -> (stored tensor, int8 scales or None), by
    the format's own quantize (cache_formats/fp8.py, int8.py), K and V each their own scale."""
    fmt = get_format(name)
    if not fmt.stat_bytes:  # no scales (fp8): K and V in one go
        return fmt.quantize(x)[0], None
    (qk, sk, _), (qv, sv, _) = fmt.quantize(x[..., :nk]), fmt.quantize(x[..., nk:])
    return torch.cat([qk, qv], dim=-1), torch.cat([sk, sv], dim=-1)


def dequantize(x: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Stored entries of one component (..., values) -> dtype; scale (..., 1) for int8."""
    return x.to(dtype) if scale is None else (x.float() * scale.float()).to(dtype)


def dequantize_kv(k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype):
    """Stored K and V entries -> dtype; scale (..., 2): an int8 cache's K and V scales."""
    return (
        dequantize(k, None if scale is None else scale[..., :1], dtype),
        dequantize(v, None if scale is None else scale[..., 1:], dtype),
    )


def capacity(layout: LayerLayout, max_len: int) -> int:
    return max_len if layout.window is None else min(layout.window, max_len)


class LayerCache:
    grouped = False  # grouped formats (int4, int3, int2) live in GroupedLayerCache

    def __init__(self, layout: LayerLayout, batch: int, max_len: int, device):
        name, fmt = layout.cache_dtype, layout.cache.format
        if fmt.grouped:
            raise TPAError(f"cache dtype {name!r} is grouped: KVCache keeps it in a GroupedLayerCache")
        self.layout = layout
        self.capacity = capacity(layout, max_len)
        # a lossy format (fp8, int8) quantizes entries as they are written
        self.quant = name if fmt.lossy else None
        dt = fmt.storage
        # K and V side by side in one buffer (k, v are views): a decode step writes both
        # with one kernel
        self.nk = nk = layout.k.values_per_token
        # fp8 lives in a uint8 buffer (CPU index_copy_/gather have no fp8 kernels); kv,
        # k, v are typed views of it
        raw = torch.uint8 if dt.is_floating_point and dt.itemsize == 1 else dt
        self.raw = torch.zeros(batch, self.capacity, nk + layout.v.values_per_token, dtype=raw, device=device)
        self.kv = self.raw.view(dt)
        self.k, self.v = self.kv[..., :nk], self.kv[..., nk:]
        self.scale = (
            torch.ones(batch, self.capacity, 2, dtype=torch.float16, device=device) if fmt.stat_bytes else None
        )  # a scale per token and component (int8)
        self.quantize = quantize  # the runner swaps in a compiled twin (one fused kernel)
        self.ks = (
            torch.ones(batch, self.capacity, layout.k.heads, dtype=torch.float32, device=device)
            if layout.k_scale
            else None
        )
        self.ks_terms = None  # attention.key_scale_terms of the layer: set by the runner
        self.sink = layout.sink_held
        sdt = torch.bfloat16 if self.quant else dt
        sink_buf = lambda c: (
            torch.zeros(batch, self.sink, c.heads * c.dim, dtype=sdt, device=device)  # noqa: E731
            if self.sink
            else None
        )
        self.sk, self.sv = sink_buf(layout.k), sink_buf(layout.v)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.raw, self.scale, self.ks, self.sk, self.sv) if t is not None)

    def write(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store entries (batch, n, values) at `slots` (n,), a device tensor (graph-safe)."""
        dt = torch.float32 if self.quant else self.kv.dtype
        self.write_kv(slots, torch.cat([k.to(dt), v.to(dt)], dim=-1))

    def write_kv(self, slots: torch.Tensor, kv: torch.Tensor) -> None:
        """Store entries (batch, n, k values | v values) at `slots` (n,)."""
        if self.ks is not None and self.ks_terms is None:
            raise RuntimeError("this cache keeps K's norm factors: set LayerCache.ks_terms first")
        if self.quant is None:
            write_entries(self.kv, slots, kv, self.nk, self.ks, self.ks_terms)
            return
        qz, sc = self.quantize(kv, self.quant, self.nk)
        self.raw.index_copy_(1, slots, qz.view(self.raw.dtype))
        if sc is not None:
            self.scale.index_copy_(1, slots, sc)
        if self.ks is not None:  # from z as stored: dequantized
            z = dequantize(qz[..., : self.nk], None if sc is None else sc[..., :1], torch.float32)
            self.ks.index_copy_(1, slots, key_scales(z, self.ks_terms))

    def read(self, dtype: torch.dtype, a: int = 0, e: int | None = None):
        """K and V entries of slots a..e in a compute dtype: views of the buffers for a
        plain cache, a dequantized copy of just those slots for a one-byte one."""
        sc = self.scale[:, a:e] if self.scale is not None else None
        return self._compute(self.k[:, a:e], self.v[:, a:e], sc, dtype)

    def _compute(self, k, v, sc, dtype):
        """Stored K, V entries (+ their int8 scales) -> the compute dtype (as they are
        for a plain cache)."""
        return (k, v) if self.quant is None else dequantize_kv(k, v, sc, dtype)


def write_positions(tables: dict, cols: torch.Tensor, pos: torch.Tensor) -> dict:
    """Record that columns `cols` (n,) hold positions `pos` (batch, n) in each slot-position
    table {capacity: (batch, capacity)}; returns the slots written per capacity (a decode
    step's write slots; the runner's compiled step head calls this too)."""
    slots = {}
    for c, table in tables.items():
        n = min(c, cols.shape[0])  # a ring keeps only the last `c` columns
        slots[c] = cols[-n:] % c
        table.index_copy_(1, slots[c], pos[:, -n:].to(table.dtype))
    return slots


class KVCache:
    """All layers' caches for one batch, plus the slot-position tables."""

    def __init__(self, layouts: list[LayerLayout], batch: int, max_len: int, device):
        from .grouped_cache import GroupedLayerCache

        self.batch, self.max_len = batch, max_len
        self.layers = [
            (GroupedLayerCache if lay.cache.format.grouped else LayerCache)(lay, batch, max_len, device)
            for lay in layouts
        ]
        self.positions = {
            c: torch.full((batch, c), EMPTY, dtype=torch.int32, device=device)
            for c in sorted({lc.capacity for lc in self.layers})
        }
        for lc in self.layers:
            if lc.grouped:
                lc.positions = self.positions[lc.capacity]

    def reset(self) -> None:
        for p in self.positions.values():
            p.fill_(EMPTY)
        for lc in self.layers:
            if lc.grouped:
                lc.reset()

    def write_positions(self, cols: torch.Tensor, pos: torch.Tensor) -> None:
        """Record that columns `cols` (n,) hold positions `pos` (batch, n) in every table."""
        write_positions(self.positions, cols, pos)

    @property
    def kv_bytes(self) -> int:
        """Bytes of cached K/V values: what `layout.cache_bytes` predicts."""
        return sum(lc.nbytes for lc in self.layers)

    @property
    def index_bytes(self) -> int:
        """Bytes of the slot-position tables (bookkeeping, shared by layers)."""
        return sum(p.nbytes for p in self.positions.values())
