"""int4 — KIVI-style asymmetric 4-bit integers, an fp16 scale and zero per group of
`group` values (default 32: 4 + 1 = 5 bits a value), a bf16 recent window of
`recent` tokens (default 128), optional Hadamard rotation; `grouped.py` is the spec.
Stored unpacked, one code per uint8, by the CPU runtime (priced at 4 bits)."""

from . import register
from .grouped import GroupedFormat


@register("int4")
class Int4(GroupedFormat):
    bits = 4
