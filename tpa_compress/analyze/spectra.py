"""Energy ranks and effective rank of a spectrum.

"Energy" is what a rank-r truncation keeps: squared singular values of a matrix, or
eigenvalues of a covariance. Ranks use `ranks.energy_rank`, the function convert's
`rank: {energy: f}` step uses, so a rank reported here is the rank convert would pick
from the same spectrum.
"""

from __future__ import annotations

import math

import torch

from ..ranks import energy_rank

ENERGY_LEVELS = (0.90, 0.95, 0.99)


def energy_ranks(energy: torch.Tensor, levels=ENERGY_LEVELS) -> dict[str, int]:
    """Smallest r keeping each fraction of the total energy (energy: descending, >= 0)."""
    return {f"{lv:g}": energy_rank(energy, lv) for lv in levels}


def effective_rank(energy: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank exp(H(p)), p = σ / Σσ with σ = sqrt(energy).

    Between 1 (one direction) and n (flat spectrum); unlike energy ranks it needs no
    threshold, so it compares layers of different widths fairly."""
    s = energy.double().clamp_min(0).sqrt()
    total = float(s.sum())
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def energy_kept(energy: torch.Tensor, rank: int) -> float:
    """Fraction of the energy the top `rank` components keep."""
    e = energy.double().clamp_min(0)
    total = float(e.sum())
    return float(e[:rank].sum()) / total if total > 0 else 1.0


def summarize(energy: torch.Tensor) -> dict:
    """The per-spectrum numbers every report table shows."""
    e = energy.double().clamp_min(0)
    return {
        "dim": int(e.numel()),
        "energy_ranks": energy_ranks(e),
        "effective_rank": round(effective_rank(e), 3),
        "total_energy": float(e.sum()),
    }


def svd_energy(w: torch.Tensor) -> torch.Tensor:
    """Squared singular values, descending, float64: eigenvalues of the smaller Gram
    matrix (2-3x faster than an SVD here; the energy fractions lose nothing)."""
    w = w.double()
    return eig_energy(w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w)


def eig_energy(cov: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a symmetric PSD matrix, descending, negatives (round-off) clipped."""
    c = cov.double()
    return torch.linalg.eigvalsh((c + c.T) / 2).flip(0).clamp_min(0)
