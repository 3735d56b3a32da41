"""Gemma 3 text decoder block.

Differences from Llama that matter for conversion (see the primer): per-head RMSNorm
on q and k *before* RoPE (so K cannot be factorized after RoPE with a fixed basis),
RoPE base 10k on sliding layers and 1M on global ones, 5 sliding : 1 global layers,
zero-centred norms around both attention and MLP, GeGLU, embeddings scaled by
sqrt(hidden), attention scaled by query_pre_attn_scalar**-0.5.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .common import MLP, Attention, RMSNorm


class Gemma3Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        norm = lambda: RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, zero_centered=True)  # noqa: E731
        self.self_attn = Attention(cfg, layer)
        self.mlp = MLP(cfg)
        self.input_layernorm = norm()
        self.post_attention_layernorm = norm()
        self.pre_feedforward_layernorm = norm()
        self.post_feedforward_layernorm = norm()

    def forward(self, h: torch.Tensor, attn) -> torch.Tensor:
        """`attn(x)` runs this layer's attention (cached or not) on normed input."""
        return self.finish(h, attn(self.input_layernorm(h)))

    def finish(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Everything after attention output `a` (the runtime compiles it as one unit)."""
        return self.finish_with(h, a, self.mlp)

    def finish_with(self, h: torch.Tensor, a: torch.Tensor, mlp) -> torch.Tensor:
        """`finish` with `mlp` (x -> the MLP's output) in place of the block's own: the
        runtime passes its fused gate|up matmul. Sandwich norms around attention and MLP."""
        h = h + self.post_attention_layernorm(a)
        return h + self.post_feedforward_layernorm(mlp(self.pre_feedforward_layernorm(h)))
