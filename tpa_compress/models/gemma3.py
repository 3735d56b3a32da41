"""Gemma 3 text decoder: its block and its family entry.

Differences from Llama that matter for conversion (see the primer): per-head RMSNorm
on q and k *before* RoPE (so K cannot be factorized after RoPE with a fixed basis),
RoPE base 10k on sliding layers and 1M on global ones, 5 sliding : 1 global layers,
zero-centred norms around both attention and MLP, GeGLU, embeddings scaled by
sqrt(hidden), attention scaled by query_pre_attn_scalar**-0.5.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from .common import MLP, Attention, RMSNorm
from .family import Family, register


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


def sliding_pattern(n_layers: int) -> list[str]:
    """Every 6th layer global, the others sliding (5 sliding : 1 global)."""
    return ["global" if (i + 1) % 6 == 0 else "sliding" for i in range(n_layers)]


def _num(x):
    """transformers' strict configs want an int where the value is integral."""
    return int(x) if x is not None and float(x).is_integer() else x


@register("gemma3")
class Gemma3(Family):
    """Gemma 3 (270M to 27B), text only; a multimodal folder is read as its language model."""

    block = Gemma3Block
    qk_norm = True
    gelu = True
    scale_embeddings = True
    zero_centered_norms = True
    extra_layer_weights = (
        "self_attn.q_norm.weight",
        "self_attn.k_norm.weight",
        "pre_feedforward_layernorm.weight",
        "post_feedforward_layernorm.weight",
    )
    # Gemma without its BOS scores perplexity 70 where it scores 26.5 with it
    bos_from_config = True
    sentencepiece_class = "GemmaTokenizer"
    gguf_ffn_norm = "pre_feedforward_layernorm"
    hf_model_type = "gemma3_text"
    hf_wrapper_type = "gemma3"
    hf_class = "Gemma3ForCausalLM"
    hf_tied_default = True

    def decode_finish(self, block, h, a, mlp, next_norm):
        """Two fused launches: post-attention norm + residual + pre-feedforward norm, then
        post-feedforward norm + residual + the next input norm."""
        from ..runtime.norms import norm_add_norm  # models/ imports nothing of the runtime at load

        h, x = norm_add_norm(h, a, block.post_attention_layernorm, block.pre_feedforward_layernorm)
        return norm_add_norm(h, mlp(x), block.post_feedforward_layernorm, next_norm)

    def gguf_fields(self, g, common: dict[str, Any]) -> dict[str, Any]:
        # The local RoPE base (10k) is fixed by the architecture and not stored in the
        # file. Only 27B has a query scale that differs from head_dim (hidden / heads = 168).
        n_layers, hidden, heads = common["num_layers"], common["hidden_size"], common["num_heads"]
        scalar = hidden // heads if n_layers == 62 else common["head_dim"]
        return dict(
            rope_theta=float(g("rope.freq_base", 1_000_000.0)),
            rope_local_theta=10_000.0,
            sliding_window=int(g("attention.sliding_window", 512)),
            layer_types=sliding_pattern(n_layers),
            query_pre_attn_scalar=float(scalar),
            rope_scaling_factor=float(g("rope.scaling.factor", 1.0)),
        )

    def gguf_tensor(self, name: str, w, cfg):
        """llama.cpp stores Gemma's RMSNorm weights as 1 + w."""
        return w - 1.0 if name.endswith("norm.weight") else w

    def hf_fields(self, d: dict, common: dict[str, Any]) -> dict[str, Any]:
        rp = d.get("rope_parameters") or {}
        glob = rp.get("full_attention", {}) if isinstance(rp.get("full_attention"), dict) else rp
        local = rp.get("sliding_attention", {}) if isinstance(rp.get("sliding_attention"), dict) else {}
        scaling = d.get("rope_scaling") or glob
        factor = float(scaling.get("factor", 1.0)) if scaling.get("rope_type", "linear") == "linear" else 1.0
        n = common["num_layers"]
        types = d.get("layer_types") or [
            "full_attention" if (i + 1) % int(d.get("sliding_window_pattern", 6)) == 0 else "sliding_attention"
            for i in range(n)
        ]
        return dict(
            rope_theta=float(d.get("rope_theta") or glob.get("rope_theta", 1_000_000.0)),
            rope_local_theta=float(d.get("rope_local_base_freq") or local.get("rope_theta", 10_000.0)),
            rope_scaling_factor=factor,
            sliding_window=int(d.get("sliding_window", 512)),
            layer_types=["sliding" if t == "sliding_attention" else "global" for t in types],
            query_pre_attn_scalar=float(d.get("query_pre_attn_scalar") or common["head_dim"]),
        )

    def hf_extra(self, cfg) -> dict[str, Any]:
        glob = {"rope_type": "default", "rope_theta": cfg.rope_theta}
        if cfg.rope_scaling_factor != 1.0:
            glob = {"rope_type": "linear", "rope_theta": cfg.rope_theta, "factor": cfg.rope_scaling_factor}
        return dict(
            hidden_activation="gelu_pytorch_tanh",
            sliding_window=cfg.sliding_window,
            query_pre_attn_scalar=_num(cfg.query_pre_attn_scalar),
            layer_types=["sliding_attention" if t == "sliding" else "full_attention" for t in cfg.layer_types],
            rope_parameters={
                "full_attention": glob,
                "sliding_attention": {"rope_type": "default", "rope_theta": cfg.rope_local_theta},
            },
            # transformers 4.x reads these instead of rope_parameters
            rope_theta=cfg.rope_theta,
            rope_local_base_freq=cfg.rope_local_theta,
            rope_scaling=None
            if cfg.rope_scaling_factor == 1.0
            else {"rope_type": "linear", "factor": cfg.rope_scaling_factor},
        )
