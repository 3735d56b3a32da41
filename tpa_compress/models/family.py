"""Model families: a plain registry, one file per family in this folder.

    @register("llama")
    class Llama(Family): ...

A family's file holds its decoder block and a `Family` subclass that says everything the
rest of the package needs to know about it: the block class, the switches of the shared
modules (QK-norm, Q/K/V biases, MLP activation, embedding scale, zero-centred norms), the
tensors its layers have beyond Llama's, its BOS rule, how its config is read from GGUF
metadata and from a Hugging Face config.json (and written back), and how GGUF stores its
tensors. `ModelConfig.family` names the family; `ModelConfig.family_spec` is the registered
object. `models/__init__.py` imports every module of the folder, so a new family is one new
file: the transformers classes a converted folder carries are rendered from its entry
(`save/hf.py`, `modeling_source`).

This module imports nothing of the package but errors: `config.py` reads the registry.
"""

from __future__ import annotations

from typing import Any

from ..errors import TPAError

FAMILIES: dict[str, Family] = {}


class Family:
    """What is specific to one model family (the defaults are Llama's)."""

    name: str = ""
    block: type = object  # nn.Module class, built as block(cfg, layer_index)

    # -- the forward (models/common.py reads these through ModelConfig) -------------------
    qk_norm: bool = False  # per-head RMSNorm of Q and K before RoPE
    attention_bias: bool = False  # Q, K and V projections carry a bias: k = W x + b
    gelu: bool = False  # MLP activation: tanh-GELU (GeGLU) if True, else SiLU (SwiGLU)
    scale_embeddings: bool = False  # embeddings multiplied by sqrt(hidden_size)
    zero_centered_norms: bool = False  # RMSNorm weights stored as w, applied as 1 + w
    # per-layer tensors beyond Llama's (names after "model.layers.{i}.")
    extra_layer_weights: tuple[str, ...] = ()

    # -- the decode step (runtime/runner.py) --------------------------------------------------
    def decode_finish(self, block, h, a, mlp, next_norm):
        """A decode step's layer tail after attention output `a` (o_proj applied): the
        block's `finish_with(h, a, mlp)` and the next layer's input norm -> (h, next_norm(h)).
        Eager here; a family overrides it with the fused kernels of runtime/norms.py."""
        h = block.finish_with(h, a, mlp)
        return h, next_norm(h)

    # -- tokenizer --------------------------------------------------------------------------
    bos_from_config: bool = False  # trained with BOS first: the config's BOS, always added
    sentencepiece_class: str | None = None  # transformers' class for a tokenizer.model, if not Llama's

    # -- GGUF (llama.cpp) ---------------------------------------------------------------------
    gguf_ffn_norm: str = "post_attention_layernorm"  # what `blk.{i}.ffn_norm` (the pre-MLP norm) is

    @property
    def gguf_arch(self) -> str:
        """`general.architecture`, also the prefix of the family's metadata keys."""
        return self.name

    def gguf_fields(self, g, common: dict[str, Any]) -> dict[str, Any]:
        """ModelConfig fields beyond the `common` ones, read from metadata: g(key, default)
        reads `{gguf_arch}.{key}` (a key without a default is required)."""
        return {"rope_theta": float(g("rope.freq_base", 10000.0))}

    def gguf_tensor(self, name: str, w, cfg):
        """A dequantised GGUF tensor under its canonical `name` -> the Hugging Face tensor."""
        return w

    # -- Hugging Face config.json -------------------------------------------------------------
    hf_model_type: str = ""  # the original's model_type (read and written)
    hf_wrapper_type: str | None = None  # a multimodal model_type whose `text_config` is this family
    hf_class: str = ""  # transformers' *ForCausalLM class; a converted folder subclasses it and its config_class
    hf_tied_default: bool = False  # tie_word_embeddings when config.json does not say

    @property
    def tpa_model_type(self) -> str:
        """A converted folder's model_type (its own, so transformers without
        trust_remote_code refuses it)."""
        return f"tpa_{self.name}"

    @property
    def tpa_class_prefix(self) -> str:
        """Prefix of the classes a converted folder's modeling_tpa.py defines for the
        family (save/hf.py renders them): {prefix}Config (model_type = tpa_model_type) and
        {prefix}ForCausalLM."""
        return "TPA" + self.hf_class.removesuffix("ForCausalLM")

    def check_hf(self, d: dict, path: str) -> None:
        """Refuse a config.json this family's forward does not implement (before reading it)."""

    def hf_fields(self, d: dict, common: dict[str, Any]) -> dict[str, Any]:
        """ModelConfig fields beyond the `common` ones, read from config.json `d`."""
        rp = d.get("rope_parameters") or {}
        return {"rope_theta": float(d.get("rope_theta") or rp.get("rope_theta", 10000.0))}

    def hf_extra(self, cfg) -> dict[str, Any]:
        """config.json keys beyond the common ones, for `cfg`."""
        return {"rope_theta": cfg.rope_theta, "hidden_act": "silu"}


def register(name: str):
    def deco(cls):
        missing = [a for a in ("block", "hf_model_type", "hf_class") if getattr(cls, a) in (object, "")]
        if missing:
            raise TypeError(f"family {name!r} must set {', '.join(missing)}")
        cls.name = name
        FAMILIES[name] = cls()
        return cls

    return deco


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise TPAError(f"unknown architecture {name!r}; supported: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def all_families() -> list[Family]:
    """Every registered family, by name."""
    return [FAMILIES[n] for n in sorted(FAMILIES)]


def family_by(attr: str, value) -> Family | None:
    """The family whose `attr` (gguf_arch, hf_model_type, tpa_model_type, ...) is `value`."""
    return next((f for f in all_families() if value is not None and getattr(f, attr) == value), None)
