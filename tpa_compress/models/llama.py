"""Llama-family decoder (SmolLM2, Llama 2/3): pre-norm, SwiGLU, one RoPE base."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .common import MLP, Attention, RMSNorm
from .family import Family, register


class LlamaBlock(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.self_attn = Attention(cfg, layer)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, zero_centered=False)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, zero_centered=False)

    def forward(self, h: torch.Tensor, attn) -> torch.Tensor:
        return self.finish(h, attn(self.input_layernorm(h)))

    def finish(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Everything after attention output `a` (the runtime compiles it as one unit)."""
        return self.finish_with(h, a, self.mlp)

    def finish_with(self, h: torch.Tensor, a: torch.Tensor, mlp) -> torch.Tensor:
        """`finish` with `mlp` (x -> the MLP's output) in place of the block's own: the
        runtime passes its fused gate|up matmul. Pre-norm, residual around each."""
        h = h + a
        return h + mlp(self.post_attention_layernorm(h))


def unpermute_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (interleaved pairs -> half split)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


@register("llama")
class Llama(Family):
    """Llama 2/3 and SmolLM2: the defaults of `Family`."""

    block = LlamaBlock
    hf_model_type = "llama"
    hf_class = "LlamaForCausalLM"

    def decode_finish(self, block, h, a, mlp, next_norm):
        """Two fused launches: residual + pre-MLP norm, then residual + the next input norm."""
        from ..runtime.norms import add_norm  # models/ imports nothing of the runtime at load

        h, x = add_norm(h, a, block.post_attention_layernorm)
        return add_norm(h, mlp(x), next_norm)

    def gguf_tensor(self, name: str, w, cfg):
        """llama.cpp permutes Llama's Q/K rows to interleaved RoPE pairs; HF's rotate_half
        expects the half-split layout."""
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            return unpermute_rope_rows(w, cfg.num_heads if "q_proj" in name else cfg.num_kv_heads)
        return w
