"""Hugging Face folders: `config.json` + `model.safetensors` (or a sharded index).

Reads both plain HF configs (`model_type` gemma3_text / gemma3 / llama / qwen2) and the
folders this tool writes (which are HF configs plus a `tpa` section). Multimodal
Gemma 3 folders are read as their language model; the vision tower is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import TPAError
from .source import Checkpoint, WeightSource, check_shapes

_LM_PREFIXES = ("model.language_model.", "language_model.model.")
# family -> (the original's model_type, a converted folder's model_type, the class-name prefix
# in the modeling code the folder carries: save/modeling_tpa.py). A converted folder names a
# model_type of its own so that transformers without trust_remote_code refuses it.
HF_TYPES = {
    "gemma3": ("gemma3_text", "tpa_gemma3", "TPAGemma3"),
    "llama": ("llama", "tpa_llama", "TPALlama"),
    "qwen2": ("qwen2", "tpa_qwen2", "TPAQwen2"),
}
_CONVERTED_TYPES = {conv: plain for plain, conv, _ in HF_TYPES.values()}


def config_from_hf(d: dict, path: str) -> ModelConfig:
    mt = _CONVERTED_TYPES.get(d.get("model_type"), d.get("model_type"))
    if mt == "gemma3" and "text_config" in d:  # multimodal wrapper
        d = {**d["text_config"], "model_type": "gemma3_text"}
        mt = "gemma3_text"
    if mt not in ("gemma3_text", "llama", "qwen2"):
        raise TPAError(f"{path}: unsupported model_type {mt!r}; supported: gemma3_text, gemma3, llama, qwen2")
    if mt == "qwen2" and d.get("use_sliding_window"):
        raise TPAError(
            f"{path}: use_sliding_window = true (Qwen2 sliding-window layers) is not supported; "
            "valid: false (every layer full attention, as in the released Qwen2/2.5 models)"
        )
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
            tie_word_embeddings=bool(d.get("tie_word_embeddings", mt == "gemma3_text")),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=_first(d.get("eos_token_id")),
            pad_token_id=d.get("pad_token_id"),
            name=str(d.get("_name_or_path", "")),
        )
    except KeyError as e:
        raise TPAError(f"{path}: config.json lacks key {e.args[0]!r}") from e
    rp = d.get("rope_parameters") or {}
    if mt in ("llama", "qwen2"):
        theta = d.get("rope_theta") or rp.get("rope_theta", 10000.0)
        return ModelConfig(family=mt, rope_theta=float(theta), **common)
    glob = rp.get("full_attention", {}) if isinstance(rp.get("full_attention"), dict) else rp
    local = rp.get("sliding_attention", {}) if isinstance(rp.get("sliding_attention"), dict) else {}
    scaling = d.get("rope_scaling") or glob
    factor = float(scaling.get("factor", 1.0)) if scaling.get("rope_type", "linear") == "linear" else 1.0
    n = common["num_layers"]
    types = d.get("layer_types") or [
        "full_attention" if (i + 1) % int(d.get("sliding_window_pattern", 6)) == 0 else "sliding_attention"
        for i in range(n)
    ]
    return ModelConfig(
        family="gemma3",
        rope_theta=float(d.get("rope_theta") or glob.get("rope_theta", 1_000_000.0)),
        rope_local_theta=float(d.get("rope_local_base_freq") or local.get("rope_theta", 10_000.0)),
        rope_scaling_factor=factor,
        sliding_window=int(d.get("sliding_window", 512)),
        layer_types=["sliding" if t == "sliding_attention" else "global" for t in types],
        query_pre_attn_scalar=float(d.get("query_pre_attn_scalar") or common["head_dim"]),
        **common,
    )


def _num(x):
    """transformers' strict configs want an int where the value is integral."""
    return int(x) if x is not None and float(x).is_integer() else x


def _first(x):
    return x[0] if isinstance(x, list) else x


_HF_NAMES = {
    "gemma3": ("Gemma3ForCausalLM", "gemma3_text"),
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
}


def config_to_hf(cfg: ModelConfig) -> dict:
    """An HF `config.json` (loadable by transformers) for `cfg`."""
    arch, model_type = _HF_NAMES[cfg.family]
    d = {
        "architectures": [arch],
        "model_type": model_type,
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
    if cfg.family == "llama":
        d.update(rope_theta=cfg.rope_theta, hidden_act="silu")
        return d
    if cfg.family == "qwen2":
        d.update(
            rope_theta=cfg.rope_theta,
            hidden_act="silu",
            use_sliding_window=False,
            layer_types=["full_attention"] * cfg.num_layers,
        )
        return d
    glob = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling_factor != 1.0:
        glob = {"rope_type": "linear", "rope_theta": cfg.rope_theta, "factor": cfg.rope_scaling_factor}
    d.update(
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
