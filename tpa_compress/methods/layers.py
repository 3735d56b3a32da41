"""The factorized K/V projections a converted model runs, one per Component kind.

Each maps the attention input x (B, T, hidden) to pre-norm K or V (B, T, heads*dim),
so `models.common.Attention` runs them unchanged (QK-norm and RoPE come after, as in
the original). Each also splits into `encode` (what the cache stores per token) and
`decode` (rebuild from the cache), which is what the cached runtime uses.

Tensor names inside a layer (`model.layers.{i}.self_attn.{k|v}_proj.<name>`):
- full:            weight                       (the original Linear)
- latent:          down.weight (r, hidden), up.weight (heads*dim, r), bias (heads*dim)
- tpa_fixed:       b.weight (R*dim, hidden), head_factor (R, heads), bias (heads*dim)
- tpa_contextual:  a.weight (R*heads, hidden), b.weight (R*dim, hidden), bias (heads*dim)
TPA scaling (1/R in the paper) is folded into the factors.
With a sink (LayerLayout.sink > 0) every factorized kind also holds `sink.weight`
(heads*dim, hidden): the original projection, used for the first `sink` positions.
A family with K/V biases (Qwen2, ModelConfig.attention_bias): `full` is the original
Linear with its `bias`; every factorized kind's `bias` holds the original bias plus the
method's own (methods.base.carry_bias), and the sink Linear has `sink.bias` too.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layout import Component, LayerLayout, k_scale_for, layouts_from_config


class _Sinked(nn.Module):
    """Shared by the factorized kinds: the exact projection for the leading sink positions.

    `forward(x)` assumes x (B, T, hidden) starts at position 0, as in the no-cache
    reference forward; the cached runtime calls `sink`/`encode`/`decode` itself."""

    def _init_sink(self, hidden: int, c: Component, sink: int, bias: bool):
        self.n_sink = sink
        self.sink = nn.Linear(hidden, c.heads * c.dim, bias=bias) if sink else None

    def factorized(self, x):
        """The factorized map alone, on rows that are not sequence positions (no sink)."""
        return self.decode(self.encode(x))

    def forward(self, x):
        y = self.factorized(x)
        n = min(self.n_sink, x.shape[-2])
        if n:
            y = torch.cat([self.sink(x[..., :n, :]).to(y.dtype), y[..., n:, :]], dim=-2)
        return y


class LatentProj(_Sinked):
    def __init__(self, hidden: int, c: Component, sink: int = 0, bias: bool = False):
        super().__init__()
        self._init_sink(hidden, c, sink, bias)
        self.down = nn.Linear(hidden, c.rank, bias=False)
        self.up = nn.Linear(c.rank, c.heads * c.dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(c.heads * c.dim))

    def encode(self, x):
        return self.down(x)

    def decode(self, z):
        return self.up(z) + self.bias


class TPAFixedProj(_Sinked):
    def __init__(self, hidden: int, c: Component, sink: int = 0, bias: bool = False):
        super().__init__()
        self._init_sink(hidden, c, sink, bias)
        self.R, self.heads, self.dim = c.rank, c.heads, c.dim
        self.b = nn.Linear(hidden, c.rank * c.dim, bias=False)
        self.head_factor = nn.Parameter(torch.zeros(c.rank, c.heads))
        self.bias = nn.Parameter(torch.zeros(c.heads * c.dim))

    def encode(self, x):
        return self.b(x)

    def decode(self, z):
        b = z.unflatten(-1, (self.R, self.dim))
        k = torch.einsum("...rd,rh->...hd", b, self.head_factor.to(b.dtype))
        return k.flatten(-2) + self.bias


class TPAContextualProj(_Sinked):
    def __init__(self, hidden: int, c: Component, sink: int = 0, bias: bool = False):
        super().__init__()
        self._init_sink(hidden, c, sink, bias)
        self.R, self.heads, self.dim = c.rank, c.heads, c.dim
        self.a = nn.Linear(hidden, c.rank * c.heads, bias=False)
        self.b = nn.Linear(hidden, c.rank * c.dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(c.heads * c.dim))

    def encode(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=-1)

    def decode(self, z):
        a = z[..., : self.R * self.heads].unflatten(-1, (self.R, self.heads))
        b = z[..., self.R * self.heads :].unflatten(-1, (self.R, self.dim))
        return torch.einsum("...rh,...rd->...hd", a, b).flatten(-2) + self.bias


PROJ_CLASSES = {"latent": LatentProj, "tpa_fixed": TPAFixedProj, "tpa_contextual": TPAContextualProj}


def make_proj(hidden: int, c: Component, sink: int = 0, bias: bool = False) -> nn.Module:
    """The projection of kind c.kind; `bias`: the model's K/V projections have biases
    (ModelConfig.attention_bias), so the exact ones (full, sink) carry theirs."""
    if c.kind == "full":
        return nn.Linear(hidden, c.heads * c.dim, bias=bias)
    return PROJ_CLASSES[c.kind](hidden, c, sink, bias)


def effective_weight(proj: nn.Module, hidden: int) -> torch.Tensor | None:
    """(out, in) matrix of a projection; for a factorized (affine) one, probe it with the
    identity. None for contextual TPA, which is not linear in x."""
    if isinstance(proj, nn.Linear):
        return proj.weight.detach()
    if isinstance(proj, TPAContextualProj):
        return None
    with torch.no_grad():
        eye = torch.eye(hidden, dtype=next(proj.parameters()).dtype)
        return (proj.factorized(eye) - proj.factorized(eye[:1] * 0)).T


def install_layouts(model, tpa: dict) -> None:
    """Swap the K/V projections of `model` for the ones its `tpa` config describes."""
    layouts = layouts_from_config(tpa)
    for block, lay in zip(model.layers, layouts):
        attn = block.self_attn
        bias = model.cfg.attention_bias
        attn.k_proj = make_proj(model.cfg.hidden_size, lay.k, lay.sink, bias)
        attn.v_proj = make_proj(model.cfg.hidden_size, lay.v, lay.sink, bias)
        set_k_scale(attn.k_proj, lay.k_scale)


def set_k_scale(k_proj, on: bool) -> None:
    """Record on a K projection whether its layout caches the norm factors (layout
    k_scale: a converted folder's or recipe's choice); layout_of_model reads it back. A
    projection without the record gets the default, layout.k_scale_for."""
    k_proj.k_scale = bool(on)


def replaced_weight_names(tpa: dict) -> set[str]:
    """Original tensor names a converted folder no longer has (for shape checks)."""
    out = set()
    for i, lay in enumerate(layouts_from_config(tpa)):
        for name, c in (("k", lay.k), ("v", lay.v)):
            if c.kind != "full":
                out.add(f"model.layers.{i}.self_attn.{name}_proj.weight")
    return out


def layout_of_model(model) -> list[LayerLayout]:
    """Recover the per-layer layout from the installed modules (for runtime checks)."""
    cfg = model.cfg
    out = []
    for i, block in enumerate(model.layers):
        comps, sink = [], 0
        for p in (block.self_attn.k_proj, block.self_attn.v_proj):
            sink = max(sink, getattr(p, "n_sink", 0))
            if isinstance(p, LatentProj):
                comps.append(Component("latent", cfg.num_kv_heads, cfg.head_dim, p.down.out_features))
            elif isinstance(p, TPAFixedProj):
                comps.append(Component("tpa_fixed", cfg.num_kv_heads, cfg.head_dim, p.R))
            elif isinstance(p, TPAContextualProj):
                comps.append(Component("tpa_contextual", cfg.num_kv_heads, cfg.head_dim, p.R))
            else:
                comps.append(Component("full", cfg.num_kv_heads, cfg.head_dim))
        ks = getattr(block.self_attn.k_proj, "k_scale", None)
        ks = k_scale_for(cfg, comps[0]) if ks is None else ks and k_scale_for(cfg, comps[0])
        out.append(LayerLayout(comps[0], comps[1], cfg.window(i), sink=sink, k_scale=ks))
    return out
