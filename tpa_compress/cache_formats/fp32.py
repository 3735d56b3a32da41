"""fp32 — entries stored as float32: 32 bits a value, no scales. The CPU runtime's default
with float32 weights; scores exactly what the no-cache forward does."""

import torch

from . import CacheFormat, register


@register("fp32")
class Fp32(CacheFormat):
    storage, bits = torch.float32, 32
