"""gemma_pytorch checkpoints (`model.ckpt`): a torch file whose top key is
`model_state_dict`.

Loaded with `weights_only=True` (no pickled code runs) and `mmap=True` (tensors stay
on disk until read). Fused `qkv_proj` rows are Q, then K, then V. The file carries no
config, so the variant (270m, 1b, 4b, 12b, 27b) comes from `--variant` or is inferred
from the tensor shapes. Its tokenizer is the tokenizer.json or the SentencePiece
tokenizer.model (as gemma_pytorch ships it) beside it, or `--tokenizer`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import TPAError
from ..models.gemma3 import sliding_pattern
from .source import Checkpoint, WeightSource, check_shapes


def _gemma3(hidden, layers, heads, kv, head_dim, inter, window, max_pos, scale, scalar=None):
    return dict(
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        intermediate_size=inter,
        sliding_window=window,
        max_position_embeddings=max_pos,
        rope_scaling_factor=scale,
        query_pre_attn_scalar=float(scalar or head_dim),
    )


# gemma_pytorch's Gemma 3 configs (27B: head_dim 128, query scale hidden/heads = 168).
VARIANTS = {
    "270m": _gemma3(640, 18, 4, 1, 256, 2048, 512, 32768, 1.0),
    "1b": _gemma3(1152, 26, 4, 1, 256, 6912, 512, 32768, 1.0),
    "4b": _gemma3(2560, 34, 8, 4, 256, 10240, 1024, 131072, 8.0),
    "12b": _gemma3(3840, 48, 16, 8, 256, 15360, 1024, 131072, 8.0),
    "27b": _gemma3(5376, 62, 32, 16, 128, 21504, 1024, 131072, 8.0, scalar=168),
}


def variant_config(variant: str, vocab_size: int = 262144) -> ModelConfig:
    if variant not in VARIANTS:
        raise TPAError(f"unknown --variant {variant!r}; valid: {', '.join(VARIANTS)}")
    v = VARIANTS[variant]
    return ModelConfig(
        family="gemma3",
        vocab_size=vocab_size,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        rope_local_theta=10_000.0,
        tie_word_embeddings=True,
        layer_types=sliding_pattern(v["num_layers"]),
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
        name=f"gemma3-{variant}",
        **v,
    )


_RENAMES = {"self_attn.query_norm": "self_attn.q_norm", "self_attn.key_norm": "self_attn.k_norm"}


def load_ckpt(path: Path, variant: str | ModelConfig | None = None) -> Checkpoint:
    """`variant`: a name from VARIANTS, None (infer from the embedding width), or a
    ModelConfig (used as is; tests build tiny models this way)."""
    try:
        obj = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:
        raise TPAError(
            f"{path}: not a readable torch checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    if not isinstance(obj, dict) or "model_state_dict" not in obj:
        raise TPAError(f"{path}: expected a gemma_pytorch checkpoint with top key 'model_state_dict'")
    sd = obj["model_state_dict"]
    emb_key = next((k for k in ("embedder.weight", "text_token_embedder.weight") if k in sd), None)
    if emb_key is None:
        raise TPAError(f"{path}: no 'embedder.weight' or 'text_token_embedder.weight' tensor")
    vocab, hidden = sd[emb_key].shape
    if isinstance(variant, ModelConfig):
        cfg = variant
    elif variant is None:
        variant = next((k for k, v in VARIANTS.items() if v["hidden_size"] == hidden), None)
        if variant is None:
            raise TPAError(
                f"{path}: hidden size {hidden} matches no Gemma 3 variant; pass --variant ({', '.join(VARIANTS)})"
            )
    if not isinstance(variant, ModelConfig):
        cfg = variant_config(variant, vocab)
    q, kv = cfg.q_size, cfg.kv_size
    # canonical name -> function producing the tensor
    where: dict[str, tuple[str, slice | None]] = {
        "model.embed_tokens.weight": (emb_key, None),
        "model.norm.weight": ("model.norm.weight", None),
    }
    for k in sd:
        if not k.startswith("model.layers."):
            continue
        if k.endswith("self_attn.qkv_proj.weight"):
            base = k[: -len("qkv_proj.weight")]
            where[base + "q_proj.weight"] = (k, slice(0, q))
            where[base + "k_proj.weight"] = (k, slice(q, q + kv))
            where[base + "v_proj.weight"] = (k, slice(q + kv, q + 2 * kv))
            continue
        canon = k
        for old, new in _RENAMES.items():
            canon = canon.replace(old, new)
        where[canon] = (k, None)
    shapes = {}
    for canon, (k, rows) in where.items():
        if k not in sd:
            raise TPAError(f"{path}: tensor {k!r} is missing")
        s = tuple(sd[k].shape)
        shapes[canon] = ((rows.stop - rows.start),) + s[1:] if rows is not None else s
    if hidden != cfg.hidden_size:
        raise TPAError(
            f"{path}: embedding width {hidden} does not fit --variant {cfg.name} "
            f"(hidden {cfg.hidden_size}); valid variants: {', '.join(VARIANTS)}"
        )
    check_shapes(cfg, shapes, str(path))

    def get(name: str) -> torch.Tensor:
        k, rows = where[name]
        t = sd[k]
        return (t[rows] if rows is not None else t).float().clone()

    from .model_tokenizer import tokenizer_from_folder

    tok = tokenizer_from_folder(path.parent)  # tokenizer.json or gemma_pytorch's tokenizer.model beside it
    return Checkpoint(cfg, WeightSource(sorted(where), get, str(path)), tok, str(path), "ckpt")
