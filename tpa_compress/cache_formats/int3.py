"""int3 — KIVI-style asymmetric 3-bit integers, an fp16 scale and zero per group of
`group` values (default 32: 3 + 1 = 4 bits a value), a bf16 recent window of
`recent` tokens (default 128), optional Hadamard rotation; `grouped.py` is the spec.
Stored unpacked, one code per uint8, by the CPU runtime (priced at 3 bits)."""

from . import register
from .grouped import GroupedFormat


@register("int3")
class Int3(GroupedFormat):
    bits = 3
