"""fp8 — entries stored as float8 e4m3 with saturation at +-448: 8 bits a value, no scales.
Each entry is rounded when it is written (no recent window); exact sink tokens stay bf16."""

import torch

from . import CacheFormat, register

FP8_MAX = 448.0


@register("fp8")
class Fp8(CacheFormat):
    storage, bits = torch.float8_e4m3fn, 8

    def quantize(self, x, dim=-1):
        return x.float().clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), None, None
