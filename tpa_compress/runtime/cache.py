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

Exact sink tokens (LayerLayout.sink > 0, a factorized K or V): a second, tiny buffer
per factorized component, (batch, sink, heads*dim), holds the exact attention-ready K
(normed, rotated) or V of each sequence's own positions 0..sink-1 (row j = position j,
whatever the padding). Attention reads those positions from there and masks them out
of the factorized slots (see attention.sink_of).
"""
from __future__ import annotations

import torch

from ..errors import TPAError
from ..layout import LayerLayout

EMPTY = 2**30  # position of a never-written slot: later than any query, so never attended
TORCH_CACHE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = {v: k for k, v in TORCH_CACHE_DTYPES.items()}


def capacity(layout: LayerLayout, max_len: int) -> int:
    return max_len if layout.window is None else min(layout.window, max_len)


class LayerCache:
    def __init__(self, layout: LayerLayout, batch: int, max_len: int, device):
        if layout.cache_dtype not in TORCH_CACHE_DTYPES:
            raise TPAError(f"cache dtype {layout.cache_dtype!r} is not supported by the runtime yet; "
                           f"valid: {', '.join(TORCH_CACHE_DTYPES)}")
        self.layout = layout
        self.capacity = capacity(layout, max_len)
        dt = TORCH_CACHE_DTYPES[layout.cache_dtype]
        # K and V side by side in one buffer (k, v are views): a decode step writes both
        # with one kernel
        nk = layout.k.values_per_token
        self.kv = torch.zeros(batch, self.capacity, nk + layout.v.values_per_token, dtype=dt, device=device)
        self.k, self.v = self.kv[..., :nk], self.kv[..., nk:]
        self.sink = layout.sink if layout.k.kind != "full" or layout.v.kind != "full" else 0
        sink_buf = lambda c: (torch.zeros(batch, self.sink, c.heads * c.dim, dtype=dt, device=device)  # noqa: E731
                              if self.sink and c.kind != "full" else None)
        self.sk, self.sv = sink_buf(layout.k), sink_buf(layout.v)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.kv, self.sk, self.sv) if t is not None)

    def write(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store entries (batch, n, values) at `slots` (n,), a device tensor (graph-safe)."""
        self.write_kv(slots, torch.cat([k.to(self.kv.dtype), v.to(self.kv.dtype)], dim=-1))

    def write_kv(self, slots: torch.Tensor, kv: torch.Tensor) -> None:
        """Store entries (batch, n, k values | v values) at `slots` (n,)."""
        self.kv.index_copy_(1, slots, kv.to(self.kv.dtype))


class KVCache:
    """All layers' caches for one batch, plus the slot-position tables."""

    def __init__(self, layouts: list[LayerLayout], batch: int, max_len: int, device):
        self.batch, self.max_len = batch, max_len
        self.layers = [LayerCache(lay, batch, max_len, device) for lay in layouts]
        self.positions = {c: torch.full((batch, c), EMPTY, dtype=torch.int32, device=device)
                          for c in sorted({lc.capacity for lc in self.layers})}

    def reset(self) -> None:
        for p in self.positions.values():
            p.fill_(EMPTY)

    def write_positions(self, cols: torch.Tensor, pos: torch.Tensor) -> None:
        """Record that columns `cols` (n,) hold positions `pos` (batch, n) in every table."""
        for c, table in self.positions.items():
            n = min(c, cols.shape[0])  # a ring keeps only the last `c` columns
            table.index_copy_(1, cols[-n:] % c, pos[:, -n:].to(table.dtype))

    @property
    def kv_bytes(self) -> int:
        """Bytes of cached K/V values: what `layout.cache_bytes` predicts."""
        return sum(lc.nbytes for lc in self.layers)

    @property
    def index_bytes(self) -> int:
        """Bytes of the slot-position tables (bookkeeping, shared by layers)."""
        return sum(p.nbytes for p in self.positions.values())
