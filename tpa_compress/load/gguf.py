"""GGUF (llama.cpp) files of every registered family (`general.architecture` = the family's
`gguf_arch`: `gemma3`, `llama`, `qwen2`).

The file is opened with our own reader (`gguf_reader.GGUFFile`: header and metadata in
well under a second, where `gguf.GGUFReader` needs 10-40 s for Gemma's 262k-token
vocabulary); each tensor's bytes are memory-mapped only while it is dequantised
(`gguf.quants.dequantize`, in row chunks, so a 262k-row embedding never needs
more than its own float32 copy).
The metadata keys every family shares are read here, the rest by the family
(`Family.gguf_fields`); the family also undoes llama.cpp's conventions for its tensors
(`Family.gguf_tensor`) so the canonical weights equal the Hugging Face ones: Gemma's
RMSNorm weights stored as 1 + w, Llama's Q/K rows permuted to interleaved RoPE pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..errors import TPAError
from ..models.family import all_families, family_by
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
# `ffn_norm` is the pre-MLP norm: its name is the family's (Family.gguf_ffn_norm).
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
    family = family_by("gguf_arch", arch)
    if family is None:
        supported = ", ".join(f.gguf_arch for f in all_families())
        raise TPAError(f"{path}: unsupported GGUF architecture {arch!r}; supported: {supported}")

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
    return ModelConfig(family=family.name, **family.gguf_fields(g, common), **common)


def _canonical_name(gguf_name: str, ffn_norm: str) -> str | None:
    stem, _, kind = gguf_name.rpartition(".")
    if stem.startswith("blk."):
        _, idx, leaf = stem.split(".", 2)
        suffix = ffn_norm if leaf == "ffn_norm" else _LAYER_NAMES.get(leaf)
        return f"model.layers.{idx}.{suffix}.{kind}" if suffix else None
    base = _GLOBAL_NAMES.get(stem)
    return f"{base}.{kind}" if base else None


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
    family = cfg.family_spec
    by_name = {}
    for t in reader.tensors:
        canon = _canonical_name(t.name, family.gguf_ffn_norm)
        if canon is not None:
            by_name[canon] = t

    def shape_of(t) -> tuple[int, ...]:
        return tuple(int(x) for x in reversed(t.shape))  # GGUF lists ne0 first

    check_shapes(cfg, {n: shape_of(t) for n, t in by_name.items()}, spath)

    def get(name: str) -> torch.Tensor:
        return family.gguf_tensor(name, dequantize_tensor(by_name[name]), cfg)

    tokenizer = None
    if "tokenizer.ggml.tokens" in reader.fields:
        from .tokenizer import tokenizer_from_gguf

        tokenizer = tokenizer_from_gguf(reader, spath)
    return Checkpoint(cfg, WeightSource(sorted(by_name), get, spath), tokenizer, spath, "gguf")
