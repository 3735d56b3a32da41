"""The one in-memory description of a model, whatever file it came from.

Every loader (GGUF, Hugging Face folder, gemma_pytorch checkpoint) produces a
`ModelConfig`; the runtime, converter and analyzer read nothing else. Weight
names follow the Hugging Face convention (`model.layers.{i}.self_attn.q_proj.weight`)
so that an HF folder is read and written without renaming. Gemma's RMSNorm weights
are kept zero-centred (the layer scales by 1 + w), as in HF checkpoints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import TPAError


@dataclass
class ModelConfig:
    family: str  # a registered family (models/<family>.py): "gemma3", "llama", "qwen2"
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float  # global (full-attention) layers
    max_position_embeddings: int
    tie_word_embeddings: bool = True
    # Gemma 3 only: sliding-window layers use their own RoPE base and window.
    rope_local_theta: float | None = None
    rope_scaling_factor: float = 1.0  # linear RoPE scaling on global layers (Gemma 3 4B+)
    sliding_window: int | None = None
    layer_types: list[str] = field(default_factory=list)  # "sliding" | "global" per layer
    query_pre_attn_scalar: float | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    name: str = ""

    def __post_init__(self) -> None:
        from .models.family import get_family

        get_family(self.family)  # an unknown family is a TPAError
        if not self.layer_types:
            self.layer_types = ["global"] * self.num_layers
        if len(self.layer_types) != self.num_layers:
            raise TPAError(f"config has {len(self.layer_types)} layer types for {self.num_layers} layers")
        if self.num_heads % self.num_kv_heads:
            raise TPAError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")

    # -- derived facts ---------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def family_spec(self):
        """The registered `Family` (models/family.py) named by `family`."""
        from .models.family import get_family

        return get_family(self.family)

    @property
    def attention_bias(self) -> bool:
        """Q, K and V projections carry a bias (Qwen2): k = W x + b."""
        return self.family_spec.attention_bias

    @property
    def qk_norm(self) -> bool:
        """Per-head RMSNorm of Q and K before RoPE (Gemma 3)."""
        return self.family_spec.qk_norm

    def window(self, layer: int) -> int | None:
        """Tokens a layer can attend to (None: unbounded)."""
        return self.sliding_window if self.layer_types[layer] == "sliding" else None

    def rope_base(self, layer: int) -> float:
        if self.layer_types[layer] == "sliding" and self.rope_local_theta is not None:
            return self.rope_local_theta
        return self.rope_theta

    def rope_scale(self, layer: int) -> float:
        return 1.0 if self.layer_types[layer] == "sliding" else self.rope_scaling_factor

    def check_length(self, tokens: int, what: str, source: str = "the model") -> None:
        """Refuse, before any work, a sequence longer than the model's positions (`what`
        names the option or input that asked for it); eval, validate and generate share it."""
        if tokens > self.max_position_embeddings:
            raise TPAError(
                f"{what} asks for {tokens} positions; {source} supports at most {self.max_position_embeddings}"
            )

    @property
    def attn_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    def n_params(self) -> int:
        d, h = self.hidden_size, self.intermediate_size
        per_layer = d * (self.q_size + 2 * self.kv_size) + self.q_size * d + 3 * d * h
        if self.attention_bias:
            per_layer += self.q_size + 2 * self.kv_size
        emb = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return emb + self.num_layers * per_layer

    # -- serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TPAError(f"unknown config keys {unknown}; valid: {sorted(names)}")
        return cls(**d)


def weight_names(cfg: ModelConfig) -> list[str]:
    """Every tensor a model of this config must have (canonical HF names)."""
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not cfg.tie_word_embeddings:
        names.append("lm_head.weight")
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        names += [p + f"self_attn.{n}_proj.weight" for n in "qkvo"]
        if cfg.attention_bias:
            names += [p + f"self_attn.{n}_proj.bias" for n in "qkv"]
        names += [p + f"mlp.{n}_proj.weight" for n in ("gate", "up", "down")]
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
        names += [p + n for n in cfg.family_spec.extra_layer_weights]
    return names


def weight_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Expected shape of every tensor, to reject configs that do not fit their weights."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {}
    for n in weight_names(cfg):
        leaf = n.split(".")[-2]
        if n.endswith(".bias"):  # q/k/v biases: one value per output row
            shapes[n] = (cfg.q_size if leaf == "q_proj" else cfg.kv_size,)
            continue
        shapes[n] = {
            "embed_tokens": (cfg.vocab_size, d),
            "lm_head": (cfg.vocab_size, d),
            "q_proj": (cfg.q_size, d),
            "k_proj": (cfg.kv_size, d),
            "v_proj": (cfg.kv_size, d),
            "o_proj": (d, cfg.q_size),
            "gate_proj": (f, d),
            "up_proj": (f, d),
            "down_proj": (d, f),
            "q_norm": (cfg.head_dim,),
            "k_norm": (cfg.head_dim,),
        }.get(leaf, (d,))
    return shapes
