"""The cache-entry writers: a decode step's queries and new K/V entries, into the cache.

kernel   the Q/K/V matmul (gemv.py at a small batch), then one Triton kernel for its
         epilogue: norms, RoPE, the cache write and a latent K's norm factors
         (entries_kernel.py). A plain cache (fp32, bf16, fp16), a power-of-two head dim,
         norm factors (if any) in the "diag" form.
written  the Q/K/V matmul and its epilogue with the cache write as one function
         (attention.entries_written; compiled with the step on CUDA, so the write fuses into
         the matmul's epilogue). A plain cache.
fused    the Q/K/V matmul and its epilogue (attention.new_entries_fused), then the cache's
         own write (LayerCache.write_kv: quantizes a one-byte cache, appends to a grouped one).
         Any cache.
eager    the three projections one by one (attention.new_entries), then LayerCache.write.
         Any cache; the reference.

All but eager read the runner's fused weights ([W_q; W_k-encode; W_v-encode], fuse_weights).
"""

from __future__ import annotations

from ..attention import new_entries
from ..entries_kernel import EntriesKernel
from .base import EntriesBackend, layer_of, register_entries


@register_entries("kernel")
class Kernel(EntriesBackend):
    def supports(self, ctx) -> bool:
        lc = ctx.cache
        return lc.quant is None and EntriesKernel.serves(ctx.attn, ctx.layout, lc.kv.dtype, lc.ks_terms)

    def build(self, runner, i: int):
        attn, lay, lc = layer_of(runner, i)
        w, b = runner.w_qkv[i], runner.b_qkv[i]
        kern = EntriesKernel(attn, lay, lc.ks_terms, pdl=runner.options.pdl)

        def write(x, cos_sin, slot):
            y = runner.mm(x, w)
            return kern(y if b is None else y + b, *cos_sin, lc.kv, slot, lc.ks)

        write.kernel = kern
        return write


@register_entries("written")
class Written(EntriesBackend):
    def supports(self, ctx) -> bool:
        return ctx.cache.quant is None

    def build(self, runner, i: int):
        attn, lay, lc = layer_of(runner, i)
        w, b = runner.w_qkv[i], runner.b_qkv[i]

        def write(x, cos_sin, slot):
            return runner.entries_written(attn, lay, w, x, *cos_sin, lc.kv, slot, lc.ks, lc.ks_terms, b)

        return write


@register_entries("fused")
class Fused(EntriesBackend):
    def supports(self, ctx) -> bool:
        return True

    def build(self, runner, i: int):
        attn, lay, lc = layer_of(runner, i)
        w, b = runner.w_qkv[i], runner.b_qkv[i]

        def write(x, cos_sin, slot):
            q, kv = runner.entries(attn, lay, w, x, *cos_sin, b)
            lc.write_kv(slot, kv)
            return q

        return write


@register_entries("eager")
class Eager(EntriesBackend):
    def supports(self, ctx) -> bool:
        return True

    def build(self, runner, i: int):
        attn, lay, lc = layer_of(runner, i)

        def write(x, cos_sin, slot):
            q, ke, ve = new_entries(attn, lay, x, *cos_sin)
            lc.write(slot, ke, ve)
            return q

        return write
