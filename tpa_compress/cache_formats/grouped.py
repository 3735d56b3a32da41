"""KIVI-style grouped integer caches (arXiv 2402.02750): what int4 / int3 / int2 share.

Asymmetric b-bit integers with an fp16 scale and zero per group of G values:
scale = (max - min) / (2^b - 1), zero = min (both rounded to fp16, and the codes computed
with the rounded ones), code = clamp(round((x - zero) / scale), 0, 2^b - 1), value =
code * scale + zero. Priced at b + 32 / G bits a value (`layout.cache_bytes`).

What is quantized is what the cache stores (a full K: normed and rotated; a latent: z;
TPA: its factors), one component at a time:
- K per channel over groups of G consecutive tokens (a latent's channels have very
  different scales; per-channel statistics follow each one);
- V per token over groups of G consecutive channels for a full V; a factorized V
  (latent, TPA) per channel like K by default (`CacheSpec.values`).
Groups of tokens are aligned to cache columns (position 0 starts group 0; a left-padded
batch aligns them to its longest prompt, and pad entries are kept out of the statistics).

Decode semantics (causal): at query position t, token j is read quantized iff its whole
group is complete and older than the recent window: (j // G + 1) * G - 1 <= t - recent.
The first `sink` columns are never read quantized either
(bf16), and within their group they are replaced by the group's last column before its
statistics are taken (as pads are), so an outlier BOS does not widen the range.
Newer tokens are read from a bf16 window, so it holds between `recent` and
recent + G - 1 tokens; a group's statistics use only its own tokens, as the window held
them (bf16-rounded). Exact sink tokens stay
bf16. `rotate: hadamard` quantizes after the orthogonal rotation of `hadamard.py` and
rotates back on read.
"""

from __future__ import annotations

import torch

from . import CacheFormat, CacheSpec
from .hadamard import rotate, unrotate


class GroupedFormat(CacheFormat):
    storage, stat_bytes, grouped = torch.uint8, 4, True  # codes in uint8 containers (unpacked)
    backends = ("torch",)  # the runtime dequantizes groups in torch (runtime/grouped_cache.py)

    def quantize(self, x, dim=-1):
        x = x.float()
        levels = 2**self.bits - 1
        lo, hi = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
        tiny = torch.finfo(torch.float16).tiny
        scale = ((hi - lo) / levels).to(torch.float16).clamp_min(tiny)
        zero = lo.to(torch.float16)
        codes = ((x - zero.float()) / scale.float()).round().clamp(0, levels).to(torch.uint8)
        return codes, scale, zero

    def dequantize(self, codes, scale, zero):
        return codes.float() * scale.float() + zero.float()


def rotation_limit(kind: str, dim: int, width: int) -> int:
    """The widest Hadamard block of a component (hadamard.rotation_block takes the largest
    power of two within it): a full K/V rotates each head's head_dim, a factorized one its
    whole width."""
    return dim if kind == "full" else width


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (..., w) uint8 < 2^bits -> (..., ceil(w * bits / 8)) uint8, bit-packed
    little-endian (value i's bit k is bit i * bits + k of the row)."""
    w = codes.shape[-1]
    nbytes = -(-w * bits // 8)
    b = ((codes[..., None] >> torch.arange(bits, device=codes.device, dtype=torch.uint8)) & 1).flatten(-2)
    b = torch.nn.functional.pad(b, (0, nbytes * 8 - w * bits)).unflatten(-1, (nbytes, 8))
    return (b << torch.arange(8, device=codes.device, dtype=torch.uint8)).sum(-1, dtype=torch.uint8)


def unpack(packed: torch.Tensor, bits: int, w: int) -> torch.Tensor:
    """The inverse of `pack`: (..., ceil(w * bits / 8)) uint8 -> codes (..., w) uint8."""
    b = ((packed[..., None] >> torch.arange(8, device=packed.device, dtype=torch.uint8)) & 1).flatten(-2)
    b = b[..., : w * bits].unflatten(-1, (w, bits))
    return (b << torch.arange(bits, device=packed.device, dtype=torch.uint8)).sum(-1, dtype=torch.uint8)


def quantized_read(spec: CacheSpec, j: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Whether query position(s) t read token(s) j quantized (broadcast): always for a
    per-token format, else once j's group is complete and older than the recent window."""
    if not spec.format.grouped:
        return torch.ones(torch.broadcast_shapes(j.shape, t.shape), dtype=torch.bool, device=j.device)
    g = spec.group
    return ((j // g + 1) * g - 1 <= t - spec.recent) & (j >= spec.sink)


def fake_quantize_tokens(x: torch.Tensor, spec: CacheSpec, axis: str, block: int) -> torch.Tensor:
    """Entries x (B, T, w) of one component, groups of tokens aligned at column 0 -> the values
    a read of each quantized entry returns (fp32). A grouped format quantizes only the
    complete groups of tokens (axis `channel`; a partial one is never read quantized) and
    rotates by blocks of `block` first when the spec says so; a per-token format rounds
    every entry."""
    fmt = spec.format
    x = x.float()
    if not fmt.grouped:
        return fmt.dequantize(*fmt.quantize(x, -1))
    g, (b, t, w) = spec.group, x.shape
    y = rotate(x, block) if spec.rotate == "hadamard" else x
    if axis == "channel":
        n = t // g * g
        body = y[:, :n].reshape(b, n // g, g, w)
        if spec.sink:  # sink columns are read exact: keep them out of the statistics
            head = (torch.arange(n, device=x.device) < spec.sink).view(1, n // g, g, 1)
            body = torch.where(head, body[:, :, -1:], body)
        out = torch.cat([fmt.dequantize(*fmt.quantize(body, 2)).reshape(b, n, w), y[:, n:]], 1)
    else:
        out = fmt.dequantize(*fmt.quantize(y.reshape(b, t, w // g, g), -1)).reshape(b, t, w)
    return unrotate(out, block) if spec.rotate == "hadamard" else out
