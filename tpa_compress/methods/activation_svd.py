"""activation_svd — calibrated low-rank latent: PCA of the real K/V activations.

Factorizes: K or V of one layer (the whole kv_heads*head_dim vector) as a rank-r
latent c = Pᵀ L W (x - μ) with reconstruction μ_out + L⁻¹ P c, where
- the mean activation μ_out = W μ is kept as a bias (not spent on rank);
- K: L = I, on the *pre-norm* K (QK-norm and RoPE are re-applied after rebuild,
  which is why a fixed basis is still exact to compute);
- V (output-aware, default): L = M^{1/2} with M = Σ_h W_O,hᵀ W_O,h per KV group, so the
  error is minimised as o_proj sees it, not in raw V space.
P holds the top-r eigenvectors of L W Σ Wᵀ L (Σ: covariance of the attention input).

Parameters:
- output_aware (bool, default true): use the o_proj metric for V (ignored for K).
- ridge (float, default 1e-6): relative regulariser of the metric (keeps L invertible).

YAML:
    layers:
      - select: all
        k: {method: activation_svd, rank: 192}
        v: {method: activation_svd, rank: {energy: 0.99}}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TPAError
from ..layout import Component
from . import register
from .base import Factorization, LayerInputs, Method, block_diag_matmul, sqrt_pair


@register("activation_svd")
class ActivationSVD(Method):
    needs_calibration = True

    @dataclass
    class Params:
        output_aware: bool = True
        ridge: float = 1e-6

    def _metric(self, inp: LayerInputs, target: str):
        """(L, L⁻¹): the square root of the error metric and its inverse; None: the identity
        (K, and V when not output-aware), which costs no product."""
        if target == "k" or not self.params.output_aware:
            return None
        return sqrt_pair(inp.v_output_metric().double(), self.params.ridge, inp.cfg.head_dim)

    def _covariance(self, inp: LayerInputs, target: str):
        """(L W Σ Wᵀ Lᵀ, W, (L, L⁻¹) or None): the target's covariance in the error metric."""
        if inp.stats is None:
            raise TPAError(f"layer {inp.layer}: activation_svd needs calibration data")
        w = inp.weight(target).double()
        metric = self._metric(inp, target)
        lw = w if metric is None else block_diag_matmul(metric[0], w, inp.cfg.head_dim)
        cov = lw @ inp.stats.covariance @ lw.T
        return (cov + cov.T) / 2, w, metric

    def _pca(self, inp: LayerInputs, target: str):
        cov, w, metric = self._covariance(inp, target)
        evals, evecs = torch.linalg.eigh(cov)
        order = evals.argsort(descending=True)
        return evals[order].clamp_min(0), evecs[:, order], w, metric

    def spectrum(self, inp, target):
        # eigenvalues alone (LAPACK skips the eigenvectors: a fraction of eigh's time)
        evals = torch.linalg.eigvalsh(self._covariance(inp, target)[0])
        return evals.flip(0).clamp_min(0)

    def factorize(self, inp: LayerInputs, target: str, rank: int) -> Factorization:
        c = inp.cfg
        evals, evecs, w, metric = self._pca(inp, target)
        p = evecs[:, :rank]
        if metric is None:
            down, up = p.T @ w, p
        else:
            L, L_inv = metric
            down = p.T @ L @ w  # (r, hidden)
            up = L_inv @ p  # (kv*D, r)
        mu_out = w @ inp.stats.mean
        bias = mu_out - up @ (down @ inp.stats.mean)
        kept = float(evals[:rank].sum() / evals.sum().clamp_min(1e-30))
        return Factorization(
            Component("latent", c.num_kv_heads, c.head_dim, rank),
            {"down.weight": down, "up.weight": up, "bias": bias},
            {"energy_kept": kept},
        )
