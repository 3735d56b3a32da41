"""int2 — KIVI-style asymmetric 2-bit integers, an fp16 scale and zero per group of
`group` values (default 32: 2 + 1 = 3 bits a value), a bf16 recent window of
`recent` tokens (default 128), optional Hadamard rotation; `grouped.py` is the spec.
Stored unpacked, one code per uint8, by the CPU runtime (priced at 2 bits)."""

from . import register
from .grouped import GroupedFormat


@register("int2")
class Int2(GroupedFormat):
    bits = 2
