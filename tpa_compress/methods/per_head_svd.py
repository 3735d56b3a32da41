"""per_head_svd — weight-only truncated SVD of each KV head's projection (no calibration).

Factorizes: W_h (head_dim x hidden) of each KV head h as U_h S_h V_hᵀ truncated to
rank / kv_heads, giving a feature-mode latent (block-diagonal up-projection). It
ignores which directions the real activations use, so it is the naive baseline the
report keeps to show why calibration matters (primer: V rank 128 -> perplexity 1e6).

Parameters: none; `rank` is the total latent rank (a multiple of kv_heads).

YAML:
    layers:
      - select: {type: global}
        v: {method: per_head_svd, rank: 128}
"""

from __future__ import annotations

import torch

from ..errors import TPAError
from ..layout import Component
from . import register
from .base import Factorization, LayerInputs, Method


@register("per_head_svd")
class PerHeadSVD(Method):
    def rank_step(self, cfg):
        return cfg.num_kv_heads

    def spectrum(self, inp: LayerInputs, target: str):
        c = inp.cfg
        w = inp.weight(target).view(c.num_kv_heads, c.head_dim, -1)
        s = torch.linalg.svdvals(w) ** 2  # (kv, D)
        # Ranks are spent evenly across heads: rank kv*j keeps j per head.
        return s.T.reshape(-1)

    def factorize(self, inp: LayerInputs, target: str, rank: int) -> Factorization:
        c = inp.cfg
        if rank % c.num_kv_heads:
            raise TPAError(
                f"layer {inp.layer} {target}: per_head_svd rank {rank} must be a multiple of kv_heads={c.num_kv_heads}"
            )
        r = rank // c.num_kv_heads
        w = inp.weight(target).view(c.num_kv_heads, c.head_dim, -1)
        down, up = [], torch.zeros(c.kv_size, rank, dtype=w.dtype)
        for h in range(c.num_kv_heads):
            u, s, vh = torch.linalg.svd(w[h], full_matrices=False)
            down.append(s[:r, None] * vh[:r])
            up[h * c.head_dim : (h + 1) * c.head_dim, h * r : (h + 1) * r] = u[:, :r]
        comp = Component("latent", c.num_kv_heads, c.head_dim, rank)
        return Factorization(
            comp, {"down.weight": torch.cat(down), "up.weight": up, "bias": torch.zeros(c.kv_size, dtype=w.dtype)}
        )
