"""Rank selection, a plug-in step between calibration and factorization.

- fixed:  the rank the recipe gives.
- energy: per layer, the smallest rank whose spectrum keeps the target energy
          fraction (spectrum = the method's own: activation PCA, or weight SVD).
- budget: one KV byte budget (a fraction of the original cache at a context length)
          spent across all `budget` components, window-aware, greedily where each
          byte removes the most relative calibration error; with `by: kl` each
          component's relative error is weighted by its measured effect on the
          model's output (ranks/kl.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TPAError


@dataclass
class Candidate:
    """One (layer, target) whose rank the budget picks."""

    key: tuple[int, str]
    spectrum: torch.Tensor  # descending energies
    bytes_per_rank: float  # cache bytes per unit of rank, times tokens held at the context
    min_rank: int
    max_rank: int
    step: int = 1


def energy_rank(spectrum: torch.Tensor, target: float, step: int = 1) -> int:
    if not 0 < target <= 1:
        raise TPAError(f"energy target {target} out of range; valid: 0 < energy <= 1")
    s = spectrum.double().clamp_min(0)
    frac = s.cumsum(0) / s.sum().clamp_min(1e-300)
    r = int((frac < target - 1e-12).sum().item()) + 1
    r = min(len(s), -(-r // step) * step)
    return max(step, r)


def budget_ranks(
    cands: list[Candidate], budget_bytes: float, weights: dict[tuple[int, str], float] | None = None
) -> dict[tuple[int, str], int]:
    """Greedy marginal allocation: start every candidate at min_rank, then repeatedly
    add `step` ranks where (relative error removed) / (bytes added), times the
    candidate's weight (default 1: how much a unit of its relative error costs), is largest."""
    ranks = {c.key: c.min_rank for c in cands}
    spent = sum(c.bytes_per_rank * c.min_rank for c in cands)
    if spent > budget_bytes:
        raise TPAError(
            f"budget of {budget_bytes:.0f} bytes is below the minimum {spent:.0f} "
            "(one step of rank per component); raise the budget fraction"
        )
    rel = {
        c.key: c.spectrum.double().clamp_min(0) / c.spectrum.double().clamp_min(0).sum().clamp_min(1e-300)
        for c in cands
    }
    by_key = {c.key: c for c in cands}
    while True:
        best, best_gain = None, 0.0
        for k, c in by_key.items():
            r = ranks[k]
            if r + c.step > c.max_rank:
                continue
            cost = c.bytes_per_rank * c.step
            if spent + cost > budget_bytes:
                continue
            gain = float(rel[k][r : r + c.step].sum()) / cost * (weights[k] if weights else 1.0)
            if gain > best_gain:
                best, best_gain = k, gain
        if best is None:
            return ranks
        ranks[best] += by_key[best].step
        spent += by_key[best].bytes_per_rank * by_key[best].step
