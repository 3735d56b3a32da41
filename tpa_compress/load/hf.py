"""Hugging Face folders: `config.json` + `model.safetensors` (or a sharded index).

Reads both plain HF configs (a registered family's `model_type`: gemma3_text / gemma3 /
llama / qwen2) and the folders this tool writes (which are HF configs plus a `tpa`
section). The keys every family shares are read and written here, the rest by the
family (`Family.hf_fields`, `Family.hf_extra`). Multimodal Gemma 3 folders are read as
their language model; the vision tower is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import TPAError
from ..models.family import Family, all_families, family_by
from .source import Checkpoint, WeightSource, check_shapes

_LM_PREFIXES = ("model.language_model.", "language_model.model.")


def _family_of(d: dict, path: str) -> tuple[Family, dict]:
    """The family config.json `d` names (plain, converted or a multimodal wrapper) and the
    config to read it from (a wrapper's `text_config`)."""
    mt = d.get("model_type")
    family = family_by("hf_model_type", mt) or family_by("tpa_model_type", mt)
    if family is not None:
        return family, d
    wrapper = family_by("hf_wrapper_type", mt)
    if wrapper is not None and "text_config" in d:  # multimodal: its language model
        return wrapper, {**d["text_config"], "model_type": wrapper.hf_model_type}
    supported = ", ".join(t for f in all_families() for t in (f.hf_model_type, f.hf_wrapper_type) if t)
    raise TPAError(f"{path}: unsupported model_type {mt!r}; supported: {supported}")


def config_from_hf(d: dict, path: str) -> ModelConfig:
    family, d = _family_of(d, path)
    family.check_hf(d, path)
    try:
        hidden, heads = int(d["hidden_size"]), int(d["num_attention_heads"])
        common = dict(
            vocab_size=int(d["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(d["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(d.get("num_key_value_heads", heads)),
            head_dim=int(d.get("head_dim") or hidden // heads),
            intermediate_size=int(d["intermediate_size"]),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(d.get("max_position_embeddings", 8192)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", family.hf_tied_default)),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=_first(d.get("eos_token_id")),
            pad_token_id=d.get("pad_token_id"),
            name=str(d.get("_name_or_path", "")),
        )
    except KeyError as e:
        raise TPAError(f"{path}: config.json lacks key {e.args[0]!r}") from e
    return ModelConfig(family=family.name, **family.hf_fields(d, common), **common)


def _first(x):
    return x[0] if isinstance(x, list) else x


def config_to_hf(cfg: ModelConfig) -> dict:
    """An HF `config.json` (loadable by transformers) for `cfg`."""
    family = cfg.family_spec
    d = {
        "architectures": [family.hf_class],
        "model_type": family.hf_model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.intermediate_size,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "_name_or_path": cfg.name,
        "torch_dtype": "float32",
    }
    d.update(family.hf_extra(cfg))
    return d


def _safetensor_files(folder: Path) -> dict[str, Path]:
    """tensor name -> file that holds it."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            wm = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise TPAError(f"{index}: not a valid safetensors index ({e})") from e
        return {k: folder / v for k, v in wm.items()}
    single = folder / "model.safetensors"
    if not single.exists():
        raise TPAError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    from safetensors import safe_open

    try:
        with safe_open(str(single), "pt") as f:
            return {k: single for k in f.keys()}
    except Exception as e:
        raise TPAError(f"{single}: not a readable safetensors file ({e})") from e


def load_hf_folder(folder: Path) -> Checkpoint:
    from safetensors import safe_open

    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise TPAError(f"{folder}: no config.json (expected a Hugging Face model folder)")
    try:
        raw = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise TPAError(f"{cfg_path}: invalid JSON ({e})") from e
    try:
        cfg = config_from_hf(raw, str(cfg_path))
    except TPAError as e:
        msg = str(e)
        raise TPAError(msg if msg.startswith(str(cfg_path)) else f"{cfg_path}: {msg}") from None
    files = _safetensor_files(folder)
    # canonical name -> (file, name in file); multimodal prefixes are mapped to "model."
    where: dict[str, tuple[Path, str]] = {}
    for name, f in files.items():
        canon = name
        for p in _LM_PREFIXES:
            if name.startswith(p):
                canon = "model." + name[len(p) :]
        if canon.startswith(("model.", "lm_head.")) and not canon.startswith("model.vision"):
            where[canon] = (f, name)
    if cfg.tie_word_embeddings:
        where.pop("lm_head.weight", None)
    handles: dict[Path, object] = {}

    def handle(f: Path):
        if f not in handles:
            if not f.exists():
                raise TPAError(f"{f}: shard listed in the index is missing")
            try:
                handles[f] = safe_open(str(f), "pt")
            except Exception as e:
                raise TPAError(f"{f}: not a readable safetensors file ({e})") from e
        return handles[f]

    shapes = {}
    for canon, (f, name) in where.items():
        shapes[canon] = tuple(handle(f).get_slice(name).get_shape())
    tpa = raw.get("tpa")
    skip = set()
    if tpa:
        from ..layout import check_tpa_section
        from ..methods.layers import replaced_weight_names

        check_tpa_section(tpa, cfg, str(cfg_path))
        skip = replaced_weight_names(tpa)
    check_shapes(cfg, shapes, str(folder), skip=skip)

    def get(name: str) -> torch.Tensor:
        f, inner = where[name]
        return handle(f).get_tensor(inner)

    from .model_tokenizer import tokenizer_from_folder

    tok = tokenizer_from_folder(folder)
    extra = {k: raw[k] for k in ("tpa", "tpa_source") if k in raw}
    return Checkpoint(cfg, WeightSource(sorted(where), get, str(folder), handles.clear), tok, str(folder), "hf", extra)
