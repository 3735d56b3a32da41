"""Singular spectra of each layer's attention weights, whole and per head.

Weight spectra are cheap and need no data, but they ignore what the inputs look like;
the primer measured that weight-SVD ranks predict quality badly (activation spectra are
in activations.py). They are reported so the two views can be compared.
"""

from __future__ import annotations

import torch

from ..methods.layers import effective_weight
from .spectra import summarize, svd_energy


def head_slices(w: torch.Tensor, heads: int, dim: int, rows: bool = True) -> list[torch.Tensor]:
    """Split a projection into its heads: rows of q/k/v_proj, columns of o_proj."""
    return [w[h * dim : (h + 1) * dim] if rows else w[:, h * dim : (h + 1) * dim] for h in range(heads)]


def layer_weight_spectra(attn, cfg) -> dict:
    """{matrix: {"layer": summary, "heads": [summary...], "energy": tensor}} for q, k, v, o."""
    D = cfg.head_dim
    out = {}
    for name, heads, rows in (
        ("q", cfg.num_heads, True),
        ("k", cfg.num_kv_heads, True),
        ("v", cfg.num_kv_heads, True),
        ("o", cfg.num_heads, False),
    ):
        w = effective_weight(getattr(attn, f"{name}_proj"), cfg.hidden_size)
        if w is None:
            out[name] = None
            continue
        e = svd_energy(w)
        out[name] = {
            "layer": summarize(e),
            "energy": e,
            "heads": [summarize(svd_energy(p)) for p in head_slices(w, heads, D, rows)],
        }
    return out


def weight_spectra(model, progress=None) -> list[dict]:
    out = []
    n = len(model.layers)
    for i, block in enumerate(model.layers):
        out.append(layer_weight_spectra(block.self_attn, model.cfg))
        if progress:
            progress(i + 1, n)
    return out
