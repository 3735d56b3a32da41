"""Pieces every model family shares: RMSNorm, RoPE, masks, the attention block.

The attention block takes its K and V projections as modules mapping
x -> (B, T, kv_heads * head_dim) *before* QK-norm and RoPE (bias included where the
family has one: Qwen2's k = W x + b). The original model uses
`nn.Linear`; a converted model plugs in the factorized projections from
`tpa_compress.methods.layers` without any other change, which is what makes the
identity conversion exact by construction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


class RMSNorm(nn.Module):
    """RMSNorm; Gemma stores zero-centred weights and scales by (1 + w)."""

    def __init__(self, dim: int, eps: float, zero_centered: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim) if zero_centered else torch.ones(dim))
        self.eps = eps
        self.offset = 1.0 if zero_centered else 0.0

    def gain(self) -> torch.Tensor:
        """The fp32 factor the normalized row is multiplied by (Gemma: 1 + w)."""
        return self.offset + self.weight.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.gain(), self.eps)


def rms_norm(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm from its fp32 gain (RMSNorm.gain): fp32 math, rounded to x's dtype. The decode
    kernels that fuse a norm (runtime/) take the same gain and round the same way."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * gain).to(x.dtype)


def rope_inv_freq(head_dim: int, base: float, device=None) -> torch.Tensor:
    """(head_dim / 2,) fp32 frequencies; the angle of position p is (p / scale) * inv_freq."""
    return 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, base: float, scale: float = 1.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (*positions.shape, head_dim) for the half-split layout."""
    inv_freq = rope_inv_freq(head_dim, base, positions.device)
    ang = (positions.float()[..., None] / scale) * inv_freq
    emb = torch.cat([ang, ang], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, heads, T, D); cos/sin: (B, T, D) or (T, D)."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Boolean (…, Tq, Tk) mask: causal, and within `window` tokens when given.

    A sliding layer with window W lets token i see j when i - W < j <= i (W tokens,
    itself included), as in Gemma 3.
    """
    d = q_pos[..., :, None] - k_pos[..., None, :]
    ok = d >= 0
    if window is not None:
        ok = ok & (d < window)
    return ok


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        self.n_heads, self.n_kv, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.q_size, bias=bias)
        self.k_proj: nn.Module = nn.Linear(cfg.hidden_size, cfg.kv_size, bias=bias)
        self.v_proj: nn.Module = nn.Linear(cfg.hidden_size, cfg.kv_size, bias=bias)
        self.o_proj = nn.Linear(cfg.q_size, cfg.hidden_size, bias=False)
        self.qk_norm = cfg.qk_norm
        if self.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, zero_centered=True)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, zero_centered=True)
        self.window = cfg.window(layer)
        self.scale = cfg.attn_scale

    def split_heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n, self.head_dim).transpose(1, 2)

    def prepare_q(self, x, cos, sin):
        return self.finish_q(self.q_proj(x), cos, sin)

    def finish_q(self, q_pre, cos, sin):
        """Projected Q (B, T, H*D) -> attention-ready Q (B, H, T, D)."""
        q = self.split_heads(q_pre, self.n_heads)
        if self.qk_norm:
            q = self.q_norm(q)
        return apply_rope(q, cos, sin)

    def prepare_k(self, k_pre, cos, sin):
        """Pre-norm K (B, T, kv*D) -> attention-ready K (B, kv, T, D)."""
        k = self.split_heads(k_pre, self.n_kv)
        if self.qk_norm:
            k = self.k_norm(k)
        return apply_rope(k, cos, sin)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """`mask` None means plain causal: SDPA's is_causal path skips the masked blocks
        (~20% faster on CPU than the same mask as a tensor, identical output)."""
        q = self.prepare_q(x, cos, sin)
        k = self.prepare_k(self.k_proj(x), cos, sin)
        v = self.split_heads(self.v_proj(x), self.n_kv)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale, enable_gqa=self.n_heads != self.n_kv
        )
        b, _, t, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    """Gated MLP: GeGLU (tanh GELU) where the family says `gelu` (Gemma), else SwiGLU."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.gelu = cfg.family_spec.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.gate_proj(x)
        g = F.gelu(g, approximate="tanh") if self.gelu else F.silu(g)
        return self.down_proj(g * self.up_proj(x))


def embed_scale(cfg: ModelConfig) -> float:
    return math.sqrt(cfg.hidden_size) if cfg.family_spec.scale_embeddings else 1.0
