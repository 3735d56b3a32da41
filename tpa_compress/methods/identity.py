"""identity — the exact GQA-as-TPA form; reproduces the original model.

Factorizes: K or V as TPA with a *fixed* one-hot head factor A (R = kv_heads, A = I)
and feature factors b_r = W_r x (the original rows of KV head r). Caches R * head_dim
values per token, exactly the original; the logits match the original to float
tolerance. It is the correctness check of the whole pipeline.

Parameters: none (rank is always kv_heads).

YAML:
    layers:
      - select: all
        k: {method: identity}
        v: {method: identity}
"""

from __future__ import annotations

import torch

from ..layout import Component
from . import register
from .base import Factorization, LayerInputs, Method


@register("identity")
class Identity(Method):
    def max_rank(self, cfg):
        return cfg.num_kv_heads

    def factorize(self, inp: LayerInputs, target: str, rank: int | None = None) -> Factorization:
        c = inp.cfg
        comp = Component("tpa_fixed", c.num_kv_heads, c.head_dim, c.num_kv_heads)
        return Factorization(
            comp,
            {
                "b.weight": inp.weight(target).clone(),
                "head_factor": torch.eye(c.num_kv_heads, dtype=inp.w_k.dtype),
                "bias": torch.zeros(c.kv_size, dtype=inp.w_k.dtype),
            },
        )
