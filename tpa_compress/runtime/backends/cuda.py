"""cuda — the hand-written CUDA kernels for a latent K and a latent V (cuda_decode.py).

Serves what the kernels are written for (`cuda_decode.serves`: head dim 256, at most 8
query heads per KV head, K ranks multiples of 16 up to 128, V ranks as far as their shared
memory holds), a bf16 cache read by bf16 queries, on a CUDA device, with the latent V
combined once (`latent_combine`, the default). The kernel writes the same per-chunk
softmax states as the Triton one, whose combine finishes the step. Built when the layer is
planned; where NVRTC fails, the layer falls back to the Triton kernel (said once) and the
plan says "triton". `kernel_options={"backend": "triton"}` turns it off.
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


@register_attention("cuda")
class Cuda(AttentionBackend):
    def supports(self, ctx) -> bool:
        attn, lay, ko = ctx.attn, ctx.layout, ctx.options.kernel_options
        return (
            ctx.reads("cuda")
            and ctx.device.type == "cuda"
            and not kernels.INTERPRET
            and lay.k.kind == lay.v.kind == "latent"
            and ctx.dtype == torch.bfloat16
            and ko.get("backend", "auto") != "triton"
            and ko.get("latent_combine", True)
            and kernels.supports(attn, lay, ctx.cache.kv.dtype)
            and cuda_decode.serves(
                attn.head_dim,
                attn.n_heads // attn.n_kv,
                attn.k_proj.up.weight.shape[1],
                attn.v_proj.up.weight.shape[1],
                attn.k_proj.up.weight.dtype,
            )
        )

    def build(self, runner, i: int):
        return build_kernel(runner, i, "auto")
