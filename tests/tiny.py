"""Tiny random models built in-process, and writers for every input format.

For fast tests of shapes and plumbing; numbers are tested on the real weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tpa_compress.config import ModelConfig, weight_shapes


def tiny_config(family: str = "gemma3", **over) -> ModelConfig:
    """Six layers by default; Gemma 3's every sixth layer and its last are global, so
    `num_layers=2` is one sliding and one global layer (the interpreter tests' size)."""
    n = over.get("num_layers", 6)
    base = dict(
        family=family,
        vocab_size=97,
        hidden_size=32,
        num_layers=6,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=48,
        rms_norm_eps=1e-6,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
        name=f"tiny-{family}",
    )
    if family == "gemma3":
        base.update(
            rope_theta=1_000_000.0,
            rope_local_theta=10_000.0,
            sliding_window=8,
            layer_types=["global" if (i + 1) % 6 == 0 or i == n - 1 else "sliding" for i in range(n)],
            query_pre_attn_scalar=16.0,
        )
    else:
        base.update(rope_theta=10_000.0)
    base.update(over)
    return ModelConfig(**base)


def orthonormal_blocks(kv: int, d: int, r: int, g: torch.Generator) -> torch.Tensor:
    """A latent K up-projection (kv * d, r) of per-head orthonormal blocks, r / kv columns
    each (per_head_svd's form; its Gram matrix is diagonal)."""
    up, c = torch.zeros(kv * d, r), r // kv
    for h in range(kv):
        up[h * d : (h + 1) * d, h * c : (h + 1) * c] = torch.linalg.qr(torch.randn(d, c, generator=g))[0]
    return up


def random_state(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in weight_shapes(cfg).items():
        # biases (Qwen2's Q/K/V) as large as the rows they shift, so dropping one shows
        scale = 0.1 if "norm" in name else 0.5 if name.endswith(".bias") else 0.5 / shape[-1] ** 0.5
        sd[name] = torch.randn(shape, generator=g) * scale
    return sd


def write_gguf(path: Path, cfg: ModelConfig, sd: dict[str, torch.Tensor]) -> Path:
    """A float32 GGUF as llama.cpp's converter writes it (norm +1 for Gemma, permuted Q/K for
    Llama, Qwen2's Q/K/V biases as attn_{q,k,v}.bias)."""
    import gguf

    arch = cfg.family
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_layers)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_heads)
    w.add_head_count_kv(cfg.num_kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_uint32(f"{arch}.vocab_size", cfg.vocab_size)
    if arch == "gemma3":
        w.add_sliding_window(cfg.sliding_window)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    leaf = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "input_layernorm": "attn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "post_attention_layernorm": "post_attention_norm" if arch == "gemma3" else "ffn_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
    }
    for name, t in sd.items():
        t = t.clone()
        if name.startswith("model.layers."):
            _, _, i, rest = name.split(".", 3)
            module, kind = rest.rsplit(".", 1)
            gname = f"blk.{i}.{leaf[module]}.{kind}"
        else:
            gname = names[name]
        if arch == "gemma3" and name.endswith("norm.weight"):
            t = t + 1.0
        if arch == "llama" and name.endswith(("q_proj.weight", "k_proj.weight")):
            n = cfg.num_heads if "q_proj" in name else cfg.num_kv_heads
            t = t.reshape(n, 2, t.shape[0] // n // 2, *t.shape[1:]).transpose(1, 2).reshape(t.shape)
        w.add_tensor(gname, t.numpy().astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_ckpt(path: Path, cfg: ModelConfig, sd: dict[str, torch.Tensor], multimodal: bool = False) -> Path:
    """A gemma_pytorch-style checkpoint: fused qkv_proj, query_norm/key_norm, embedder."""
    out = {}
    for name, t in sd.items():
        if name == "model.embed_tokens.weight":
            out["text_token_embedder.weight" if multimodal else "embedder.weight"] = t
        elif name.endswith(("k_proj.weight", "v_proj.weight")):
            continue
        elif name.endswith("q_proj.weight"):
            base = name[: -len("q_proj.weight")]
            out[base + "qkv_proj.weight"] = torch.cat([t, sd[base + "k_proj.weight"], sd[base + "v_proj.weight"]])
        else:
            out[name.replace("q_norm", "query_norm").replace("k_norm", "key_norm")] = t
    if multimodal:
        out["siglip_vision_model.dummy.weight"] = torch.zeros(3)
    torch.save({"model_state_dict": out}, str(path))
    return path


# --- stand-ins for a tokenizer and a checkpoint, and a recipe for tiny models ---------

CHARS = "etaoinshrdlcumwfgypbvkjxqz .,"


def char_tokenizer(chars: str = CHARS):
    """A real (tokenizers) tokenizer, one token per character of `chars`; saved with a folder.

    A BPE model with no merges and no pre-tokenizer: each character is its own token (any
    other one is <unk>), and a whole calibration file encodes several times faster than
    through a pre-tokenizer that splits it into characters first."""
    from tokenizers import Tokenizer, models

    from tpa_compress.load.tokenizer import TextTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    vocab.update({c: 4 + i for i, c in enumerate(chars)})
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<unk>"))
    return TextTokenizer(tok, 2, 1, 0, True)


class CharTok:
    """A stand-in tokenizer: bytes -> ids (enough for plumbing tests)."""

    bos_id, eos_id, pad_id, add_bos = 2, 1, 0, True

    def encode(self, text, add_bos=None):
        ids = [3 + (b % 90) for b in text.encode()]
        return ([2] if (self.add_bos if add_bos is None else add_bos) else []) + ids

    def save(self, folder):
        pass


def tiny_ckpt(family="gemma3", **over):
    from tpa_compress.load.source import Checkpoint, WeightSource

    cfg = tiny_config(family, **over)
    return Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 3)), CharTok(), "", "memory")


def recipe(layers, **top):
    """float32 weights unless a test asks otherwise: these tests check exactness (saving in
    the default bfloat16 and its cost: tests/test_issue31.py)."""
    from tpa_compress.recipe import parse_recipe

    top.setdefault("weight_dtype", "float32")
    d = {
        "calibration": {"tokens": 512, "seq_len": 32, "heldout_tokens": 64},
        "eval": {"seq_len": 32, "max_windows": 4},
        "layers": layers,
        **top,
    }
    return parse_recipe(d, "test.yaml")


IDS = torch.randint(3, 90, (1, 40), generator=torch.Generator().manual_seed(1))


def logp(model):
    """Log-probabilities of the model on a fixed 40-token sequence."""
    with torch.no_grad():
        return model.logits(model(IDS)).log_softmax(-1)
