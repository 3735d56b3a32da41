"""The hand-written CUDA decode kernel (runtime/cuda_decode.py) vs the torch tile path,
and the runner's decode through it vs the reference forward. GPU only
(pytest --device cuda): it is CUDA C++ compiled by torch's NVRTC, with no interpreter."""

import copy

import pytest
import torch

from test_runtime_kernels import kernel_vs_tiles
from test_runtime_sink import DEVICE, GPU, greedy_steps, prompts_of, sink_model
from tiny import orthonormal_blocks, random_state, tiny_config
from tpa_compress.layout import Component, LayerLayout
from tpa_compress.load.source import Checkpoint, WeightSource
from tpa_compress.methods.layers import make_proj
from tpa_compress.models import build_model
from tpa_compress.runtime import Runner, cuda_decode, kernels

pytestmark = pytest.mark.skipif(not (GPU and kernels.available()), reason="needs a CUDA GPU")

# head dim 256 (the kernel's), 2 KV heads, query heads per KV head 2 or 4
CASES = [
    # family, layer, sink, orthonormal, rk, rv, heads
    ("gemma3", 5, 1, False, 128, 128, 8),  # global layer, sink, any K basis
    ("gemma3", 5, 1, "blocks", 128, 128, 8),  # orthonormal blocks, bias in the span
    ("gemma3", 5, 1, "blocks, bias off the span", 128, 128, 4),
    ("gemma3", 0, 2, "blocks", 128, 128, 8),  # sliding window + 2 sink tokens
    ("gemma3", 5, 0, "blocks", 64, 256, 8),  # other ranks, no sink
    ("llama", 3, 1, False, 128, 128, 8),  # no QK-norm
    ("llama", 3, 0, False, 96, 128, 4),
    ("gemma3", 5, 1, "blocks", 48, 64, 8),  # V ranks below 128: the warp kernel only
    ("llama", 3, 1, False, 112, 96, 2),
    ("gemma3", 0, 1, False, 128, 16, 8),
    ("gemma3", 5, 1, "blocks", 96, 160, 8),  # V above 128: wg where its buffers fit
]


@pytest.fixture(params=["wg", "warp", "tile"])
def build(request):
    """Each test on every kernel of cuda_decode (CudaBuild.kernel)."""
    return cuda_decode.CudaBuild(kernel=request.param)


@pytest.mark.parametrize(
    "family,layer,sink,orthonormal,rk,rv,heads,t",
    [
        ("gemma3", 5, 1, False, 128, 128, 8, 150),
        ("gemma3", 0, 2, "blocks", 64, 128, 8, 150),
        ("gemma3", 5, 1, False, 128, 96, 4, 700),
        ("gemma3", 5, 1, "blocks", 80, 128, 8, 700),
        ("gemma3", 5, 1, False, 96, 112, 4, 300),  # balanced's ranks
        # V above 128 where the buffers fit: K 112 / V 160, K 96 / V 192, K 64 / V 256
        ("gemma3", 5, 1, "blocks", 112, 160, 8, 700),
        ("gemma3", 0, 2, False, 96, 192, 4, 300),
        ("gemma3", 5, 1, "blocks", 64, 256, 4, 300),
    ],
)
def test_cuda_kernel_key_scales(family, layer, sink, orthonormal, rk, rv, heads, t, build):
    """The wg kernel with each key's QK-norm factor read from a table (weight folded into U)."""
    if build.kernel != "wg":
        pytest.skip("the norm factors from the cache are the wg kernel's option")
    assert kernel_vs_tiles(
        family,
        layer,
        sink,
        "latent",
        "latent",
        torch.bfloat16,
        orthonormal=orthonormal,
        d=256,
        rk=rk,
        rv=rv,
        heads=heads,
        t=t,
        k_scale=True,
        backend="cuda",
        cuda_build=build,
    ).cuda


@pytest.mark.parametrize("family,layer,sink,orthonormal,rk,rv,heads", CASES)
def test_cuda_kernel_equals_torch_tiles(family, layer, sink, orthonormal, rk, rv, heads, build):
    if build.kernel == "tile" and rv % 128:
        pytest.skip("the tile kernel serves V ranks 128 and 256")
    if build.kernel == "warp" and rv > 128:
        pytest.skip("the warp kernel serves V ranks up to 128")
    kern = kernel_vs_tiles(
        family,
        layer,
        sink,
        "latent",
        "latent",
        torch.bfloat16,
        orthonormal=orthonormal,
        d=256,
        rk=rk,
        rv=rv,
        heads=heads,
        backend="cuda",
        cuda_build=build,
    )
    # the build's kernel is the one that ran (on Hopper; elsewhere "wg" is built as "warp")
    assert kern.cuda and (kern.cuda_kind == build.kernel or not cuda_decode.hopper())


@pytest.mark.parametrize("family,rk,rv", [("gemma3", 128, 128), ("llama", 64, 48)])
def test_cuda_kernel_long_cache(family, rk, rv, build):
    """700 slots in 2 chunks per (sequence, head): each warpgroup (warp) walks several tiles,
    through both stages of its buffers, and every tile has visible keys."""
    if build.kernel == "tile" and rv % 128:
        pytest.skip("the tile kernel serves V ranks 128 and 256")
    assert kernel_vs_tiles(
        family,
        5 if family == "gemma3" else 3,
        1,
        "latent",
        "latent",
        torch.bfloat16,
        d=256,
        rk=rk,
        rv=rv,
        heads=8,
        t=700,
        backend="cuda",
        cuda_build=build,
    ).cuda


@pytest.mark.parametrize("wslot", [0, 70, 140, 149])
@pytest.mark.parametrize("pdl", [True, False])
def test_wg_kernel_reads_the_step_write_after_the_wait(wslot, pdl):
    """The wg kernel reads its first tile before griddepcontrol.wait except the step's write
    slot, which it copies after: 150 slots in chunks of 128 keys, so the slot sits in a first
    tile of warpgroup 0 (0), 1 (70), a chunk's partial last tile (140, 149). Launched with
    programmatic dependent launch or torch's launcher."""
    for k_scale in (False, True):
        assert kernel_vs_tiles(
            "gemma3",
            5,
            1,
            "latent",
            "latent",
            torch.bfloat16,
            d=256,
            rk=128,
            rv=128,
            heads=8,
            k_scale=k_scale,
            wslot=wslot,
            backend="cuda",
            cuda_build=cuda_decode.CudaBuild(kernel="wg"),
            pdl=pdl,
        ).cuda


def test_cuda_backend_refuses_what_it_does_not_serve():
    """A head dim other than 256, or ranks it is not written for: backend 'cuda' says so
    (the plan asks cuda_decode.serves first and gives such a layer the Triton kernel)."""
    with pytest.raises(ValueError, match="does not serve"):
        kernel_vs_tiles("gemma3", 5, 1, "latent", "latent", torch.bfloat16, backend="cuda")  # head dim 64
    build = cuda_decode.CudaBuild()
    assert not cuda_decode.serves(64, 2, 24, 20, torch.bfloat16, build)  # kernel_vs_tiles' default shapes
    assert not cuda_decode.serves(256, 4, 120, 128, torch.bfloat16, build)
    assert not cuda_decode.serves(256, 4, 128, 100, torch.bfloat16, build)
    # above 128: the tile kernel, 128 / 256 only
    assert not cuda_decode.serves(256, 4, 128, 160, torch.bfloat16, build)
    assert cuda_decode.serves(256, 4, 128, 128, torch.bfloat16, build)


@pytest.mark.parametrize("rv", [160, 192])
def test_v_ranks_between_128_and_256_decode_right(rv, build):
    """A V rank the tile kernel is not written for (multiples of 16 between 128 and 256, as
    rank_limits without a max can choose), beside K rank 128 (too large for the wg kernel's
    buffers): no build serves it, so the plan gives it the Triton kernel, which decodes it
    correctly."""
    assert not cuda_decode.serves(256, 4, 128, rv, torch.bfloat16, build)
    kern = kernel_vs_tiles(
        "gemma3",
        5,
        1,
        "latent",
        "latent",
        torch.bfloat16,
        orthonormal="blocks",
        d=256,
        rk=128,
        rv=rv,
        heads=8,
        backend="triton",
    )
    assert not kern.cuda


def latent_model(family, sink):
    """6 layers, head dim 256, 2 KV heads x 4 query heads, latent K and V of rank 128,
    K's up-projection per-head orthonormal blocks (the norm from z), bf16 on the GPU."""
    cfg = tiny_config(family, head_dim=256, num_heads=8, num_kv_heads=2, hidden_size=64)
    model = build_model(Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 3)), None, "", "m"))
    g = torch.Generator().manual_seed(1)
    for blk in model.layers:
        for name in ("k_proj", "v_proj"):
            proj = make_proj(cfg.hidden_size, Component("latent", 2, 256, 128), sink)
            with torch.no_grad():
                for p in proj.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * (0.5 / p.shape[-1] ** 0.5))
                if name == "k_proj":
                    proj.up.weight.copy_(orthonormal_blocks(2, 256, 128, g))
            setattr(blk.self_attn, name, proj)
    return model.to(DEVICE, torch.bfloat16)


def test_l2_prefetch_changes_no_output():
    """The step's L2 prefetch of the next layer's cache (a side stream, rejoined before the
    logits; here forced for every layer) is only a hint: the same logits bit for bit, in the
    CUDA graph and with programmatic dependent launch."""
    model = latent_model("gemma3", 1)
    prompts = prompts_of([13, 1, 20])
    longest, new = max(map(len, prompts)), 12
    out = {}
    for pf in (False, True):
        r = Runner(model, len(prompts), longest + new, compile=False, prefetch=pf, prefetch_min=0)
        assert r.prefetch == (set(range(1, 6)) if pf else set()) and r.use_graph
        out[pf] = greedy_steps(r, prompts, new)
    assert torch.equal(out[False][0], out[True][0]) and out[False][1] == out[True][1]


@pytest.mark.parametrize("family,sink", [("gemma3", 1), ("llama", 0)])
def test_cuda_kernel_decode_path_as_accurate_as_triton(family, sink, build):
    """Decode (bf16, CUDA graph) with the CUDA kernel in every layer: each step's logits,
    teacher-forced on the runner's own tokens, against the fp32 no-cache forward. Every
    step within bf16 tolerance, and on average over the steps no worse than the Triton
    kernel (a single step's error depends on where each kernel rounds, up to 2x apart
    between kernels at one step of this random model; a wrong kernel moves every step).
    Two bf16 kernels may break a near-tie differently, so tokens are not compared."""
    model = latent_model(family, sink)
    ref_model = copy.deepcopy(model).float()
    prompts = prompts_of([13, 1, 20])
    longest, new = max(map(len, prompts)), 16
    errs = {}
    for backend in ("cuda", "triton"):
        r = Runner(model, len(prompts), longest + new, attention=backend, cuda_build=build, compile=False)
        assert len(r.kernels) == 6 and all(k.cuda == (backend == "cuda") for k in r.kernels.values())
        got, gen = greedy_steps(r, prompts, new)
        got = got.float()
        steps = []  # each step's largest logit error over the largest |logit|
        for b, pr in enumerate(prompts):
            with torch.no_grad():
                ref = ref_model.logits(ref_model(torch.tensor([pr + gen[b]], device=DEVICE)))[0]
            ref = ref[len(pr) - 1 : len(pr) - 1 + new]
            assert (got[b].argmax(-1) == ref.argmax(-1)).float().mean() >= 0.75
            steps.append((got[b] - ref).abs().amax(-1) / ref.abs().max())
        steps = torch.cat(steps)
        errs[backend] = (steps.max().item(), steps.mean().item())
    assert errs["cuda"][0] < 0.15 and errs["triton"][0] < 0.15, errs
    assert errs["cuda"][1] < 1.2 * errs["triton"][1] + 1e-3, errs


@pytest.mark.parametrize("block", [64, 128])
def test_cuda_kernel_tile_sizes(block):
    """The tile kernel's 128-key tiles (where the buffers fit; V rank 256 with 8 heads falls
    back to 64)."""
    build = cuda_decode.CudaBuild(kernel="tile", block=block)
    for rv, heads in ((128, 8), (256, 8)):
        kernel_vs_tiles(
            "gemma3",
            5,
            1,
            "latent",
            "latent",
            torch.bfloat16,
            orthonormal="blocks",
            d=256,
            rk=128,
            rv=rv,
            heads=heads,
            backend="cuda",
            cuda_build=build,
        )
    assert cuda_decode.block_for(128, 256, 8, 32768, build) == 64
    assert cuda_decode.block_for(128, 128, 4, 150, build) == block


def test_cuda_kernel_that_does_not_build_falls_back_to_triton(monkeypatch):
    """An NVRTC failure (a private torch API): DecodeAttention(backend="cuda") says why
    (BuildError); the cuda backend then plans the Triton kernel for the layer, with one
    warning."""

    def broken(*a, **k):
        raise RuntimeError("nvrtc: simulated failure")

    monkeypatch.setattr(cuda_decode, "compiled", broken)
    monkeypatch.setattr(cuda_decode, "_FAILED", {})
    model = latent_model("gemma3", 1)
    with pytest.warns(RuntimeWarning, match="simulated failure"):
        r = Runner(model, 3, 32, compile=False)
    assert [p.attention for p in r.plan] == ["triton"] * 6 and not any(k.cuda for k in r.kernels.values())
    with pytest.raises(cuda_decode.BuildError, match="does not build here"):
        kernel_vs_tiles("gemma3", 5, 1, "latent", "latent", torch.bfloat16, d=256, rk=128, rv=128, backend="cuda")


def test_cuda_chunks_are_whole_tiles(build):
    model = sink_model("gemma3", "latent_kv", 1)
    kern = kernels.DecodeAttention(
        model.layers[5].self_attn, LayerLayout(*(Component("latent", 2, 16, 8),) * 2, None, sink=1), 1
    )
    kern.n_sm = 132
    for b in (1, 3, 32):
        for t in (1, 63, 64, 65, 32768):
            blk = cuda_decode.block_for(128, 128, 4, t, build)
            assert blk == (128 if t >= cuda_decode.LONG or build.kernel in ("warp", "wg") else 64)
            chunk, n = kern.chunks(b, t, blk, build.per_sm)
            assert chunk % blk == 0 and (n - 1) * chunk < t <= n * chunk
