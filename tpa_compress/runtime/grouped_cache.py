"""The runtime store of a grouped cache format (int4, int3, int2: cache_formats/grouped.py).

Per layer, what `layout.cache_bytes` prices, byte for byte where a row's codes fill whole
bytes (K and V rows are packed separately, each to ceil(width * bits / 8) bytes):
- `kc`, `vc` (batch, capacity, packed bytes) uint8: the codes, bit-packed (grouped.pack);
- `kstat` (batch, ceil(capacity / G), K width, 2) fp16: scale and zero per channel and
  group of G token columns; `vstat` likewise for a V grouped per channel, or (batch,
  capacity, V width / G, 2) for a V grouped per token;
- `ring` (batch, min(recent + G - 1, max_len), K width + V width) bf16: the recent window,
  every written column whose group is not yet quantized (column c in row c % size);
- `head` (batch, min(spec sink, max_len), K width + V width) bf16: the spec's leading columns,
  never quantized (kept out of their group's statistics like pads);
- `ks` (a latent K's QK-norm factors, fp32) and the exact sink buffers (bf16), as LayerCache.

Columns are appended in order (`append`; prefill passes every prompt column, a decode step
one). Once a group of G columns is complete and older than the last `recent` columns it is
quantized from the entries as the bf16 ring holds them (rotated first with `rotate: hadamard`; pads of a left-
padded batch, negative positions, are replaced by the group's last column so they never
widen its range), its codes and statistics stored, and its columns leave the ring. A read
(`read`) dequantizes the slots asked for and overlays the columns still in the ring: what
a decode step at the newest column reads is exactly the simulation's (evaluate/simulate.py).
Slots follow LayerCache (column c in slot c % capacity); a sliding ring needs G to divide
its window (checked by LayerLayout). Torch on any device: the torch attention backends read
it (backends/tiles.py, sdpa.py); its appends keep host-side counters, so a runner with one
decodes without a CUDA graph (plan.graph_safe).
"""

from __future__ import annotations

import math

import torch

from ..cache_formats.grouped import pack, rotation_limit, unpack
from ..cache_formats.hadamard import rotate, rotation_block, unrotate
from ..layout import LayerLayout
from .attention import key_scales


class GroupedLayerCache:
    grouped = True
    scale = None  # (a one-byte cache's scales: none here)

    def __init__(self, layout: LayerLayout, batch: int, max_len: int, device):
        from .cache import capacity

        self.layout, self.spec = layout, layout.cache
        self.fmt = self.spec.format
        self.quant = layout.cache_dtype  # not None: the plain-cache write paths pass it by
        self.capacity = cap = capacity(layout, max_len)
        self.g = g = self.spec.group
        self.nk, self.nv = nk, nv = layout.k.values_per_token, layout.v.values_per_token
        self.v_axis = self.spec.value_axis(layout.v.kind)
        bits = self.fmt.bits
        z = lambda *s, dt: torch.zeros(*s, dtype=dt, device=device)  # noqa: E731
        self.kc = z(batch, cap, math.ceil(nk * bits / 8), dt=torch.uint8)
        self.vc = z(batch, cap, math.ceil(nv * bits / 8), dt=torch.uint8)
        self.kv = self.kc
        groups = math.ceil(cap / g)
        self.kstat = z(batch, groups, nk, 2, dt=torch.float16)
        self.vstat = (
            z(batch, cap, nv // g, 2, dt=torch.float16)
            if self.v_axis == "token"
            else z(batch, groups, nv, 2, dt=torch.float16)
        )
        self.ring_size = min(self.spec.recent + g - 1, max_len)
        self.ring = z(batch, self.ring_size, nk + nv, dt=torch.bfloat16)
        self.n_head = min(self.spec.sink, max_len)
        self.head = z(batch, self.n_head, nk + nv, dt=torch.bfloat16)
        hd = self.spec.rotate == "hadamard"
        self.blocks = tuple(
            rotation_block(c.values_per_token, rotation_limit(c.kind, c.dim, c.values_per_token)) if hd else 1
            for c in (layout.k, layout.v)
        )
        self.ks = z(batch, cap, layout.k.heads, dt=torch.float32) if layout.k_scale else None
        self.ks_terms = None  # set by the runner
        self.sink = layout.sink_held
        self.sk, self.sv = (
            (z(batch, self.sink, c.heads * c.dim, dt=torch.bfloat16) if self.sink else None)
            for c in (layout.k, layout.v)
        )
        self.positions = None  # the slot-position table of this capacity (KVCache sets it)
        self.n = self.done = 0  # columns written; columns quantized (a multiple of G)

    @property
    def nbytes(self) -> int:
        return sum(
            t.nbytes
            for t in (self.kc, self.vc, self.kstat, self.vstat, self.ring, self.head, self.ks, self.sk, self.sv)
            if t is not None
        )

    def reset(self) -> None:
        self.n = self.done = 0

    def write(self, slots, k, v) -> None:
        """A decode step's entries: the next column (slots follow from it)."""
        self.append(k, v)

    def write_kv(self, slots, kv) -> None:
        self.append(kv[..., : self.nk], kv[..., self.nk :])

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Entries (batch, m, width) of the next m columns."""
        e = torch.cat([k, v], -1).to(torch.bfloat16).float()  # as the ring holds them
        c0, c1 = self.n, self.n + e.shape[1]
        g, recent = self.g, self.spec.recent
        done = max(self.done, (c1 - recent) // g * g) if c1 >= recent else self.done
        for g0 in range(self.done, done, g):
            if g0 + g > c1 - self.capacity:  # (a group wholly out of a ring's reach is never read)
                self._quantize_group(g0, self._columns(e, c0, g0, g0 + g), c1)
        if c0 < self.n_head:
            self.head[:, c0 : min(c1, self.n_head)] = e[:, : min(c1, self.n_head) - c0].to(self.head.dtype)
        lo = max(c0, c1 - self.ring_size)
        if lo < c1:
            cols = torch.arange(lo, c1, device=e.device)
            self.ring.index_copy_(1, cols % self.ring_size, e[:, lo - c0 :].to(self.ring.dtype))
            if self.ks is not None:
                self._write_ks(cols % self.capacity, e[:, lo - c0 :, : self.nk])
        self.n, self.done = c1, done

    def _columns(self, e, c0, a, b):
        """Exact entries of columns a..b-1: from the ring before c0, else from the new ones."""
        old = torch.arange(a, max(a, min(b, c0)), device=e.device)
        parts = [self.ring[:, old % self.ring_size].float()] if len(old) else []
        if b > c0:
            parts.append(e[:, max(a, c0) - c0 : b - c0])
        return torch.cat(parts, 1)

    def _quantize_group(self, g0: int, x: torch.Tensor, c1: int) -> None:
        """Quantize columns g0..g0+G-1 (entries x (batch, G, K | V width)); store the codes of
        those still held and the group's statistics."""
        g, fmt, nk = self.g, self.fmt, self.nk
        cols = torch.arange(g0, g0 + g, device=x.device)
        pos = self.positions[:, cols % self.capacity]
        out = (pos < 0) | (cols < self.n_head)[None]  # pads and the leading columns: read exact or never
        x = torch.where(out[..., None], x[:, -1:], x)  # so they never widen the range
        kq, ks_, kz = fmt.quantize(rotate(x[..., :nk], self.blocks[0]), 1)
        gs = (g0 // g) % self.kstat.shape[1]
        self.kstat[:, gs] = torch.stack([ks_[:, 0], kz[:, 0]], -1)
        vx = rotate(x[..., nk:], self.blocks[1])
        if self.v_axis == "token":
            vq, vs, vz = fmt.quantize(vx.unflatten(-1, (-1, g)), -1)
            vq = vq.flatten(-2)
        else:
            vq, vs, vz = fmt.quantize(vx, 1)
            self.vstat[:, gs] = torch.stack([vs[:, 0], vz[:, 0]], -1)
        keep = cols >= c1 - self.capacity
        slots = cols[keep] % self.capacity
        self.kc.index_copy_(1, slots, pack(kq[:, keep], fmt.bits))
        self.vc.index_copy_(1, slots, pack(vq[:, keep], fmt.bits))
        if self.v_axis == "token":
            self.vstat.index_copy_(1, slots, torch.cat([vs, vz], -1)[:, keep])
        if self.ks is not None:  # from K as read: dequantized, or exact for a leading column
            kz = self._dequantize(slots)[0]
            head = cols[keep] < self.n_head
            kz[:, head] = self.head[:, cols[keep][head], :nk].float()
            self._write_ks(slots, kz)

    def _write_ks(self, slots, z):
        self.ks.index_copy_(1, slots, key_scales(z, self.ks_terms))

    def _dequantize(self, slots: torch.Tensor):
        """Stored K and V of `slots` (n,), dequantized and rotated back, fp32 (batch, n, width)."""
        fmt, g = self.fmt, self.g
        kst = self.kstat[:, slots // g]
        k = fmt.dequantize(unpack(self.kc[:, slots], fmt.bits, self.nk), kst[..., 0], kst[..., 1])
        vcodes = unpack(self.vc[:, slots], fmt.bits, self.nv)
        if self.v_axis == "token":
            vst = self.vstat[:, slots]
            v = fmt.dequantize(vcodes.unflatten(-1, (-1, g)), vst[..., :1], vst[..., 1:]).flatten(-2)
        else:
            vst = self.vstat[:, slots // g]
            v = fmt.dequantize(vcodes, vst[..., 0], vst[..., 1])
        return unrotate(k, self.blocks[0]), unrotate(v, self.blocks[1])

    def read(self, dtype: torch.dtype, a: int = 0, e: int | None = None):
        """K and V entries of slots a..e-1 as a decode step reads them, in `dtype`: quantized
        groups dequantized, the newer columns from the bf16 ring."""
        e = self.capacity if e is None else min(e, self.capacity)
        slots = torch.arange(a, e, device=self.kc.device)
        k, v = self._dequantize(slots)
        lo = max(0, self.n - self.capacity)  # older columns left the slots
        for cols, buf, size in (
            (torch.arange(max(self.done, lo), self.n, device=k.device), self.ring, self.ring_size),
            (torch.arange(lo, max(lo, min(self.n_head, self.done)), device=k.device), self.head, None),
        ):
            cols = cols[(cols % self.capacity >= a) & (cols % self.capacity < e)]
            if len(cols):
                r = buf[:, cols if size is None else cols % size].float()
                k[:, cols % self.capacity - a] = r[..., : self.nk]
                v[:, cols % self.capacity - a] = r[..., self.nk :]
        return k.to(dtype), v.to(dtype)
