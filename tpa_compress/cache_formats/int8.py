"""int8 — symmetric int8 with one fp16 scale per token and component (K, V): scale =
absmax / 127 of the token's K (or V) values, codes round(x / scale) in -127..127. 8 bits
a value plus 2 bytes per token and component. Each entry is quantized when written."""

import torch

from . import CacheFormat, register


@register("int8")
class Int8(CacheFormat):
    storage, bits, stat_bytes = torch.int8, 8, 2

    def quantize(self, x, dim=-1):
        x = x.float()
        tiny = torch.finfo(torch.float16).tiny
        # the fp16-rounded scale is the one stored, so quantize with exactly it
        sc = (x.abs().amax(dim, keepdim=True) / 127).to(torch.float16).clamp_min(tiny)
        return (x / sc.float()).round().clamp(-127, 127).to(torch.int8), sc, None

    def dequantize(self, codes, scale, zero):
        return codes.float() * scale.float()
