"""triton — the decode attention straight from the cache, flash-decoding in Triton.

Serves K and V each `full` or `latent`, a power-of-two head dim, and a latent K cached in
its up-projection's dtype or in one byte (fp8, int8: converted on load); any per-token
cache format. The kernel (kernels.DecodeAttention) splits the cache into chunks over every
SM, rebuilds a latent K in registers and merges the chunks' softmax states in a second
kernel. Runs on CUDA, or in triton's CPU interpreter (the tests). `DecodeOptions.tuning`
(kernels.TritonTuning: block_t, num_warps, per_sm, latent_combine, ...) tunes it.
"""

from __future__ import annotations

from .. import kernels
from ..attention import sink_of
from .base import AttentionBackend, layer_of, register_attention


class KernelAttend:
    """A layer's DecodeAttention (`kernel`) called with its cache: the attention callable of
    the triton and cuda backends. `backend`: which of them computes the partial states."""

    def __init__(self, kernel, lc, positions):
        self.kernel, self.lc, self.positions = kernel, lc, positions
        self.backend = "cuda" if kernel.cuda else "triton"

    def __call__(self, q, q_pos, mask, slot, sink):
        lc = self.lc
        return self.kernel(q, lc.k, lc.v, self.positions, q_pos, sink, lc.scale, lc.ks, slot)


def build_kernel(runner, i: int, backend: str) -> KernelAttend:
    """The layer's DecodeAttention computing with `backend` ("triton" or "cuda", as planned),
    with the runner's options (pdl, tuning, cuda_build)."""
    attn, lay, lc = layer_of(runner, i)
    o = runner.options
    kern = kernels.DecodeAttention(
        attn, lay, sink_of(lay), backend=backend, tuning=o.tuning, cuda_build=o.cuda_build, pdl=o.pdl
    )
    return KernelAttend(kern, lc, runner.cache.positions[lc.capacity])


@register_attention("triton")
class Triton(AttentionBackend):
    def supports(self, ctx) -> bool:
        return ctx.reads("triton") and kernels.supports(ctx.attn, ctx.layout, ctx.cache.kv.dtype)

    def build(self, runner, i: int):
        return build_kernel(runner, i, "triton")
