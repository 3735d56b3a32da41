"""transformers modeling code for a tpa-compress converted folder (copied into every one).

A converted folder keeps the original architecture except the K/V projections of its
converted layers, which are factorized. Its config.json names a model_type of its own
(`tpa_{family}`: `tpa_gemma3`, `tpa_llama`, ...) and points `auto_map` here, so

    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

builds the original transformers class (Gemma3ForCausalLM, LlamaForCausalLM, ...) with each
converted layer's `k_proj` / `v_proj` swapped for the module below that computes exactly
what tpa-compress computes, and transformers without `trust_remote_code` refuses the folder
instead of loading it with random K/V weights. Needs only torch and transformers.

The projections map the attention input x (B, T, hidden) to pre-norm K or V
(B, T, kv_heads * head_dim); QK-norm and RoPE follow in transformers' attention as in the
original. Tensors of `model.layers.{i}.self_attn.{k|v}_proj` (config.json `tpa.layers[i]`
gives each one's kind and rank):
- full:            weight                                  (the original Linear)
- latent:          down.weight (r, hidden), up.weight (heads*dim, r), bias   -> up(down x) + bias
- tpa_fixed:       b.weight (R*dim, hidden), head_factor (R, heads), bias
                   -> per head h: sum_r head_factor[r, h] * b_r(x) + bias
- tpa_contextual:  a.weight (R*heads, hidden), b.weight (R*dim, hidden), bias
                   -> per head h: sum_r a_{r,h}(x) * b_r(x) + bias
With `sink` > 0 a factorized projection also holds `sink.weight` (heads*dim, hidden), the
original projection (with `sink.bias` where the original K/V projections have biases), used
for the tokens at positions < sink of each sequence (their K/V are kept exact). Positions
come from the `position_ids` transformers passes to the attention module (a forward
pre-hook records them), so prefill, cached decoding in `generate` and left-padded batches
all pick the right rows.

This file is family-independent. The writer (tpa_compress/save/hf.py, `modeling_source`)
appends the two classes of the folder's own family, rendered from its registered `Family`:
{prefix}Config, the transformers config class of `hf_class` with model_type
`tpa_{family}`, and {prefix}ForCausalLM, `_TPAModel` mixed into `hf_class`; config.json's
`auto_map` names them.

The cache is transformers' own: it holds full K and V for every token, as the original
model does. The compressed cache is tpa-compress's runtime (`tpa-compress generate`).
"""

from __future__ import annotations

import torch
from torch import nn


class _Sinked(nn.Module):
    def _init_sink(self, hidden: int, out: int, sink: int, bias: bool):
        self.n_sink = sink
        self.sink = nn.Linear(hidden, out, bias=bias) if sink else None
        self.positions = None  # (B or 1, T) positions of the current call, set by _record_positions

    def forward(self, x):
        y = self.decode(self.encode(x))
        if self.sink is None:
            return y
        pos = self.positions
        if pos is None:  # no positions given: a plain forward from position 0
            pos = torch.arange(x.shape[-2], device=x.device)
        near = (pos < self.n_sink).to(x.device)
        if not bool(near.any()):  # decode steps past the sink
            return y
        return torch.where(near[..., None], self.sink(x).to(y.dtype), y)


class LatentProj(_Sinked):
    def __init__(self, hidden: int, heads: int, dim: int, rank: int, sink: int, bias: bool):
        super().__init__()
        self._init_sink(hidden, heads * dim, sink, bias)
        self.down = nn.Linear(hidden, rank, bias=False)
        self.up = nn.Linear(rank, heads * dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(heads * dim))

    def encode(self, x):
        return self.down(x)

    def decode(self, z):
        return self.up(z) + self.bias


class TPAFixedProj(_Sinked):
    def __init__(self, hidden: int, heads: int, dim: int, rank: int, sink: int, bias: bool):
        super().__init__()
        self._init_sink(hidden, heads * dim, sink, bias)
        self.R, self.heads, self.dim = rank, heads, dim
        self.b = nn.Linear(hidden, rank * dim, bias=False)
        self.head_factor = nn.Parameter(torch.zeros(rank, heads))
        self.bias = nn.Parameter(torch.zeros(heads * dim))

    def encode(self, x):
        return self.b(x)

    def decode(self, z):
        b = z.unflatten(-1, (self.R, self.dim))
        k = torch.einsum("...rd,rh->...hd", b, self.head_factor.to(b.dtype))
        return k.flatten(-2) + self.bias


class TPAContextualProj(_Sinked):
    def __init__(self, hidden: int, heads: int, dim: int, rank: int, sink: int, bias: bool):
        super().__init__()
        self._init_sink(hidden, heads * dim, sink, bias)
        self.R, self.heads, self.dim = rank, heads, dim
        self.a = nn.Linear(hidden, rank * heads, bias=False)
        self.b = nn.Linear(hidden, rank * dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(heads * dim))

    def encode(self, x):
        return torch.cat([self.a(x), self.b(x)], dim=-1)

    def decode(self, z):
        a = z[..., : self.R * self.heads].unflatten(-1, (self.R, self.heads))
        b = z[..., self.R * self.heads :].unflatten(-1, (self.R, self.dim))
        return torch.einsum("...rh,...rd->...hd", a, b).flatten(-2) + self.bias


PROJ_CLASSES = {"latent": LatentProj, "tpa_fixed": TPAFixedProj, "tpa_contextual": TPAContextualProj}


def _record_positions(attn, args, kwargs):
    """Forward pre-hook on an attention module: hand this call's positions to its sinked
    projections (transformers passes `position_ids`; `cache_position` where it does not)."""
    pos = kwargs.get("position_ids")
    if pos is None:
        pos = kwargs.get("cache_position")
    for proj in (attn.k_proj, attn.v_proj):
        if isinstance(proj, _Sinked):
            proj.positions = pos


def _clear_positions(attn, args, kwargs, output):
    for proj in (attn.k_proj, attn.v_proj):
        if isinstance(proj, _Sinked):
            proj.positions = None


def install_projections(layers: nn.ModuleList, config) -> None:
    """Swap the K/V projections of each converted layer for the kind `config.tpa` names."""
    tpa = getattr(config, "tpa", None)
    entries = tpa.get("layers") if isinstance(tpa, dict) else None
    if not isinstance(entries, list) or len(entries) != len(layers):
        raise ValueError(
            f"config.json: tpa.layers must list one entry per layer ({len(layers)}); "
            "this folder was not written by tpa-compress or is damaged"
        )
    for layer, entry in zip(layers, entries):
        attn, sinked = layer.self_attn, False
        for name in ("k", "v"):
            c = entry[name]
            if c["kind"] == "full":
                continue
            if c["kind"] not in PROJ_CLASSES:
                raise ValueError(
                    f"config.json: tpa component kind {c['kind']!r} is not known to this "
                    f"modeling file; known: full, {', '.join(PROJ_CLASSES)}"
                )
            sink = int(entry.get("sink", 0))
            exact = getattr(attn, f"{name}_proj")  # the original Linear: its bias says the sink's
            setattr(
                attn,
                f"{name}_proj",
                PROJ_CLASSES[c["kind"]](
                    config.hidden_size, int(c["heads"]), int(c["dim"]), int(c["rank"]), sink, exact.bias is not None
                ),
            )
            sinked |= sink > 0
        if sinked:
            attn.register_forward_pre_hook(_record_positions, with_kwargs=True)
            attn.register_forward_hook(_clear_positions, with_kwargs=True)


class _TPAModel:
    """Mixin for a transformers *ForCausalLM: the original model, converted projections installed."""

    def __init__(self, config):
        super().__init__(config)
        install_projections(self.model.layers, config)
