"""fp16 — entries stored as float16: 16 bits a value, no scales."""

import torch

from . import CacheFormat, register


@register("fp16")
class Fp16(CacheFormat):
    storage, bits = torch.float16, 16
