"""cuda — the hand-written CUDA kernels for a latent K and a latent V (cuda_decode.py).

Serves what the kernels are written for (`cuda_decode.serves`: head dim 256, at most 8
query heads per KV head, K ranks multiples of 16 up to 128, V ranks as far as their shared
memory holds), a bf16 cache read by bf16 queries, on a CUDA device, with the latent V
combined once (`latent_combine`, the default). The kernel writes the same per-chunk
softmax states as the Triton one, whose combine finishes the step. Built (with
`DecodeOptions.cuda_build`) when the layer is planned; where NVRTC fails, the layer takes
the Triton kernel (said once) and the plan says "triton". `DecodeOptions(attention="triton")`
starts the table below it.
"""

from __future__ import annotations

import torch

from .. import cuda_decode, kernels
from .base import AttentionBackend, register_attention
from .triton import build_kernel


def serves_shapes(head_dim: int, group: int, rk: int, rv: int) -> bool:
    """The latent ranks and head shapes the Hopper kernel is written for (no device check):
    what `convert` asks through runtime.fast_path_supports."""
    return cuda_decode.wg_shape(head_dim, group, rk, rv)


def serves_layer(attn, lay, dtype: torch.dtype, cache_dtype: torch.dtype, options) -> bool:
    """A layer the kernels serve with these options (plan.DecodeOptions), computing in dtype
    over a cache stored in cache_dtype (no device or cache-format check)."""
    return (
        lay.k.kind == lay.v.kind == "latent"
        and dtype == torch.bfloat16
        and options.tuning.latent_combine
        and kernels.supports(attn, lay, cache_dtype)
        and cuda_decode.serves(
            attn.head_dim,
            attn.n_heads // attn.n_kv,
            attn.k_proj.up.weight.shape[1],
            attn.v_proj.up.weight.shape[1],
            attn.k_proj.up.weight.dtype,
            options.cuda_build,
        )
    )


@register_attention("cuda")
class Cuda(AttentionBackend):
    def supports(self, ctx) -> bool:
        return (
            ctx.reads("cuda")
            and ctx.device.type == "cuda"
            and not kernels.INTERPRET
            and serves_layer(ctx.attn, ctx.layout, ctx.dtype, ctx.cache.kv.dtype, ctx.options)
        )

    def build(self, runner, i: int):
        try:
            return build_kernel(runner, i, "cuda")
        except cuda_decode.BuildError:  # (try_build warned, once) the next backend of the table
            return build_kernel(runner, i, "triton")
