"""GGUF (llama.cpp) files: Gemma 3 (`gemma3`), Llama (`llama`) and Qwen2 (`qwen2`) architectures.

The file is opened with our own reader (`gguf_reader.GGUFFile`: header and metadata in
well under a second, where `gguf.GGUFReader` needs 10-40 s for Gemma's 262k-token
vocabulary); each tensor's bytes are memory-mapped only while it is dequantised
(`gguf.quants.dequantize`, in row chunks, so a 262k-row embedding never needs
more than its own float32 copy).
Two conventions of llama.cpp's converter are undone here so the canonical weights
equal the Hugging Face ones:
- Gemma RMSNorm weights are stored as (1 + w): we subtract 1 (zero-centred, as HF).
- Llama Q/K rows are permuted to interleaved RoPE pairs: we permute them back to
  the half-split layout that HF's `rotate_half` expects. Qwen2 files keep HF's row
  order (llama.cpp runs them with NEOX-style RoPE) and hold Q/K/V biases
  (`attn_{q,k,v}.bias`), read as they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..errors import TPAError
from .source import Checkpoint, WeightSource, check_shapes

# GGUF tensor name (after "blk.{i}.") -> canonical suffix after "model.layers.{i}."
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# `ffn_norm` is the pre-MLP norm: Llama calls it post_attention_layernorm.
_FFN_NORM = {
    "gemma3": "pre_feedforward_layernorm",
    "llama": "post_attention_layernorm",
    "qwen2": "post_attention_layernorm",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def _field(reader, key: str, default=None, required: bool = False, path: str = ""):
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise TPAError(f"{path}: GGUF metadata key {key!r} is missing")
        return default
    return f.contents()


def _config_from_metadata(reader, path: str) -> ModelConfig:
    arch = _field(reader, "general.architecture", required=True, path=path)
    if arch not in ("gemma3", "llama", "qwen2"):
        raise TPAError(f"{path}: unsupported GGUF architecture {arch!r}; supported: gemma3, llama, qwen2")

    def g(key, default=None, required=True):
        return _field(reader, f"{arch}.{key}", default, required and default is None, path)

    n_layers = int(g("block_count"))
    hidden = int(g("embedding_length"))
    heads = int(g("attention.head_count"))
    kv_heads = int(g("attention.head_count_kv", heads))
    head_dim = int(
        g("attention.key_length", None, required=False)
        or g("rope.dimension_count", None, required=False)
        or hidden // heads
    )
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(g("vocab_size", None, required=False) or (len(tokens.value) if tokens else 0))
    names = {t.name for t in reader.tensors}
    common = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=n_layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=int(g("feed_forward_length")),
        rms_norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-6)),
        max_position_embeddings=int(g("context_length", 8192)),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=_field(reader, "tokenizer.ggml.bos_token_id"),
        eos_token_id=_field(reader, "tokenizer.ggml.eos_token_id"),
        pad_token_id=_field(reader, "tokenizer.ggml.padding_token_id"),
        name=str(_field(reader, "general.name", "")),
    )
    if arch in ("llama", "qwen2"):
        return ModelConfig(family=arch, rope_theta=float(g("rope.freq_base", 10000.0)), **common)
    # Gemma 3: every 6th layer is global (5 sliding : 1 global); the local RoPE base
    # (10k) is fixed by the architecture and not stored in the file. Only 27B has a
    # query scale that differs from head_dim (hidden / heads = 168).
    window = int(g("attention.sliding_window", 512))
    scalar = hidden // heads if n_layers == 62 else head_dim
    return ModelConfig(
        family="gemma3",
        rope_theta=float(g("rope.freq_base", 1_000_000.0)),
        rope_local_theta=10_000.0,
        sliding_window=window,
        layer_types=["global" if (i + 1) % 6 == 0 else "sliding" for i in range(n_layers)],
        query_pre_attn_scalar=float(scalar),
        rope_scaling_factor=float(g("rope.scaling.factor", 1.0)),
        **common,
    )


def _canonical_name(gguf_name: str, family: str) -> str | None:
    stem, _, kind = gguf_name.rpartition(".")
    if stem.startswith("blk."):
        _, idx, leaf = stem.split(".", 2)
        suffix = _FFN_NORM[family] if leaf == "ffn_norm" else _LAYER_NAMES.get(leaf)
        return f"model.layers.{idx}.{suffix}.{kind}" if suffix else None
    base = _GLOBAL_NAMES.get(stem)
    return f"{base}.{kind}" if base else None


def _unpermute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K row permutation (interleaved pairs -> half split)."""
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


# Dequantise at most this many values at a time (gguf's dequantisers build float32
# temporaries a few times the size of their input).
_CHUNK_VALUES = 1 << 22


def dequantize_tensor(t) -> torch.Tensor:
    """One GGUF tensor (GGUFFile or GGUFReader entry) as float32, shape ne0-last (torch order)."""
    import gguf

    shape = tuple(int(x) for x in reversed(list(t.shape)))
    data = t.data
    if t.tensor_type in (gguf.GGMLQuantizationType.F32,):
        return torch.from_numpy(np.array(data, dtype=np.float32, copy=True)).reshape(shape)
    out = torch.empty(shape, dtype=torch.float32)
    flat_out = out.view(-1, shape[-1]) if len(shape) > 1 else out.view(1, -1)
    rows = data.reshape(flat_out.shape[0], -1)  # one row of blocks per output row
    step = max(1, _CHUNK_VALUES // max(1, flat_out.shape[1]))
    for r in range(0, rows.shape[0], step):
        part = gguf.quants.dequantize(np.asarray(rows[r : r + step]), t.tensor_type)
        flat_out[r : r + step] = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32)).view(
            -1, flat_out.shape[1]
        )
    del data, rows
    return out


def load_gguf(path: Path) -> Checkpoint:
    from .gguf_reader import GGUFFile

    spath = str(path)
    try:
        reader = GGUFFile(spath)
    except TPAError:
        raise
    except ModuleNotFoundError as e:  # a broken install, not a broken file
        pkg = (e.name or "gguf").split(".")[0]
        raise TPAError(
            f"{path}: reading GGUF needs the Python package '{pkg}', which is not "
            f"installed (pip install {pkg}; `make demo` installs it)"
        ) from e
    except Exception as e:
        raise TPAError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e
    cfg = _config_from_metadata(reader, spath)
    by_name = {}
    for t in reader.tensors:
        canon = _canonical_name(t.name, cfg.family)
        if canon is not None:
            by_name[canon] = t
    if cfg.family != "gemma3" and cfg.tie_word_embeddings:
        by_name.pop("lm_head.weight", None)

    def shape_of(t) -> tuple[int, ...]:
        return tuple(int(x) for x in reversed(t.shape))  # GGUF lists ne0 first

    check_shapes(cfg, {n: shape_of(t) for n, t in by_name.items()}, spath)

    def get(name: str) -> torch.Tensor:
        w = dequantize_tensor(by_name[name])
        if cfg.family == "gemma3" and name.endswith("norm.weight"):
            w = w - 1.0
        if cfg.family == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            w = _unpermute(w, cfg.num_heads if "q_proj" in name else cfg.num_kv_heads)
        return w

    tokenizer = None
    if "tokenizer.ggml.tokens" in reader.fields:
        from .tokenizer import tokenizer_from_gguf

        tokenizer = tokenizer_from_gguf(reader, spath)
    return Checkpoint(cfg, WeightSource(sorted(by_name), get, spath), tokenizer, spath, "gguf")
