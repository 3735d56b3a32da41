"""The decoder skeleton every family shares: embed -> blocks (the family's) -> norm -> LM head.

`Transformer.forward` is the no-cache reference forward (full causal / sliding
masks). The cached decoder lives in `tpa_compress.runtime` and reuses these modules.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..errors import TPAError
from .common import RMSNorm, attention_mask, embed_scale, rope_cos_sin


class Embedding(nn.Embedding):
    """nn.Embedding without its random init on the meta device, where `build_model` builds
    before loading the weights: meta's normal_ runs through torch._refs, which imports
    torch._dynamo (about a second) for values that do not exist."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size)
        block = cfg.family_spec.block
        self.layers = nn.ModuleList(block(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, zero_centered=cfg.family_spec.zero_centered_norms)
        self.lm_head = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.embed_scale = embed_scale(cfg)

    def head_weight(self) -> torch.Tensor:
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(ids)
        return h * torch.tensor(self.embed_scale, dtype=h.dtype) if self.embed_scale != 1.0 else h

    def rope(self, layer: int, positions: torch.Tensor, dtype: torch.dtype):
        c = self.cfg
        return rope_cos_sin(positions, c.head_dim, c.rope_base(layer), c.rope_scale(layer), dtype)

    def forward(self, ids: torch.Tensor, hooks=None) -> torch.Tensor:
        """Final hidden states (B, T, hidden) for `ids` (B, T), no cache.

        `hooks`, if given, is called as hooks(layer_index, block, h_in) before each
        block; calibration uses it to see each layer's input.
        """
        b, t = ids.shape
        pos = torch.arange(t, device=ids.device)
        h = self.embed(ids)
        masks, ropes = {}, {}
        for i, block in enumerate(self.layers):
            w = self.cfg.window(i)
            if w not in masks:
                # a window at least as long as the input is plain causal attention
                masks[w] = attention_mask(pos, pos, w) if w is not None and w < t else None
            key = (self.cfg.rope_base(i), self.cfg.rope_scale(i))
            if key not in ropes:
                ropes[key] = self.rope(i, pos, h.dtype)
            cos, sin = ropes[key]
            if hooks is not None:
                hooks(i, block, h)
            attn = lambda x, blk=block, c=cos, s=sin, m=masks[w]: blk.self_attn(x, c, s, m)  # noqa: E731
            h = block(h, attn)
        return self.norm(h)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.head_weight().T


def build_model(ckpt, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Transformer:
    """Instantiate the model of a Checkpoint, reading its tensors one at a time."""
    cfg = ckpt.config
    with torch.device("meta"):
        model = Transformer(cfg)
    layout = (ckpt.extra or {}).get("tpa")
    if layout:
        from ..methods.layers import install_layouts

        install_layouts(model, layout)
    model = model.to_empty(device=device).to(dtype)
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    want = {_canonical(n) for n in params}
    have = set(ckpt.weights.names())
    missing = sorted(want - have)
    if missing:
        raise TPAError(f"{ckpt.path}: missing tensors {missing[:3]}{' …' if len(missing) > 3 else ''}")
    with torch.no_grad():
        for n, p in params.items():
            t = ckpt.weights.get(_canonical(n), dtype)
            if tuple(t.shape) != tuple(p.shape):
                raise TPAError(
                    f"{ckpt.path}: tensor {_canonical(n)!r} has shape {tuple(t.shape)}, model expects {tuple(p.shape)}"
                )
            p.copy_(t)
    model.eval().requires_grad_(False)
    return model


def _canonical(param_name: str) -> str:
    """Module parameter name -> file tensor name (HF convention: `model.` prefix)."""
    return param_name if param_name.startswith("lm_head") else "model." + param_name
