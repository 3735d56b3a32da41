"""The random Hadamard rotation a grouped cache may quantize after (QuaRot, arXiv 2404.00456;
TurboQuant-style): per block of `block` consecutive values (a power of two), multiply by
fixed random signs (seed 0, one sign per position of the whole width, so blocks differ),
then by the normalized Walsh-Hadamard matrix H / sqrt(block). Orthogonal, so the inverse
is the transpose; outliers spread over the block, which evens the groups' ranges.

`rotation_block(width, limit)`: the largest power of two dividing `width`, at most `limit`
(a full K/V: each head's head_dim; a latent or TPA factor: its whole width when that is a
power of two, else power-of-two blocks of it; 1 means no rotation).
"""

from __future__ import annotations

import functools

import torch


def rotation_block(width: int, limit: int) -> int:
    b = 1
    while width % (b * 2) == 0 and b * 2 <= limit:
        b *= 2
    return b


@functools.lru_cache(maxsize=32)
def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n**0.5


@functools.lru_cache(maxsize=32)
def _signs(width: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 2, (width,), generator=g).float() * 2 - 1


def rotate(x: torch.Tensor, block: int) -> torch.Tensor:
    """x (..., width) fp32 -> rotated, per block."""
    if block <= 1:
        return x
    w = x.shape[-1]
    y = (x * _signs(w).to(x.device)).unflatten(-1, (w // block, block))
    return (y @ _hadamard(block).to(x.device)).flatten(-2)


def unrotate(y: torch.Tensor, block: int) -> torch.Tensor:
    """The inverse of `rotate` (H is symmetric and orthonormal)."""
    if block <= 1:
        return y
    w = y.shape[-1]
    x = (y.unflatten(-1, (w // block, block)) @ _hadamard(block).to(y.device)).flatten(-2)
    return x * _signs(w).to(y.device)
