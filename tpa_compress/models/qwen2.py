"""Qwen2 / Qwen2.5 decoder block: the Llama block with biases on the Q, K and V projections.

Everything else (pre-norm, SwiGLU, one RoPE base, no QK-norm, embeddings unscaled) is
Llama's; the biases live in `common.Attention` (ModelConfig.attention_bias), so this
block only names the family. A converted K/V keeps the original bias inside its
factorized projection's `bias` (methods/layers.py), so k = W x + b survives conversion.
"""

from __future__ import annotations

from .llama import LlamaBlock


class Qwen2Block(LlamaBlock):
    """Same modules and forward as LlamaBlock; the config gives Q/K/V their biases."""
