"""bf16 — entries stored as bfloat16: 16 bits a value, no scales (the bf16 original's cache;
every KV fraction is relative to it)."""

import torch

from . import CacheFormat, register


@register("bf16")
class Bf16(CacheFormat):
    storage, bits = torch.bfloat16, 16
    backends = ("torch", "triton", "cuda")
