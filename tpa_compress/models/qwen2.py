"""Qwen2 / Qwen2.5 decoder: the Llama block with biases on the Q, K and V projections.

Everything else (pre-norm, SwiGLU, one RoPE base, no QK-norm, embeddings unscaled) is
Llama's; the biases live in `common.Attention` (ModelConfig.attention_bias), so the
block only names the family. A converted K/V keeps the original bias inside its
factorized projection's `bias` (methods/layers.py), so k = W x + b survives conversion.
"""

from __future__ import annotations

from typing import Any

from ..errors import TPAError
from .family import register
from .llama import Llama, LlamaBlock


class Qwen2Block(LlamaBlock):
    """Same modules and forward as LlamaBlock; the config gives Q/K/V their biases."""


@register("qwen2")
class Qwen2(Llama):
    """Qwen2 and Qwen2.5 (every layer full attention, as released)."""

    block = Qwen2Block
    attention_bias = True
    hf_model_type = "qwen2"
    hf_class = "Qwen2ForCausalLM"

    def gguf_tensor(self, name: str, w, cfg):
        """Qwen2 files keep HF's row order (llama.cpp runs them with NEOX-style RoPE) and
        hold the Q/K/V biases (`attn_{q,k,v}.bias`) as they are."""
        return w

    def check_hf(self, d: dict, path: str) -> None:
        if d.get("use_sliding_window"):
            raise TPAError(
                f"{path}: use_sliding_window = true (Qwen2 sliding-window layers) is not supported; "
                "valid: false (every layer full attention, as in the released Qwen2/2.5 models)"
            )

    def hf_extra(self, cfg) -> dict[str, Any]:
        return {
            **super().hf_extra(cfg),
            "use_sliding_window": False,
            "layer_types": ["full_attention"] * cfg.num_layers,
        }
