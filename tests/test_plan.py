"""The decode plan (runtime/plan.py): which backend each layer takes, from one table, and
the options that steer it. CPU; the paths themselves are checked against the reference
forward elsewhere (test_runtime*.py)."""

import pytest

from test_runtime import LAYOUTS, install, tiny_model
from tpa_compress.errors import TPAError
from tpa_compress.runtime import CudaBuild, DecodeOptions, Runner, fast_path_supports, kernels
from tpa_compress.runtime.plan import describe


def test_cpu_defaults():
    _, model = tiny_model("gemma3")
    install(model, [2, 5], *LAYOUTS["latent_kv"])
    r = Runner(model, 2, 30)
    # original layers: SDPA over a short full cache; latent ones: the torch tiles; eager entries
    assert [(p.entries, p.attention) for p in r.plan] == [
        ("eager", "tiles") if i in (2, 5) else ("eager", "sdpa") for i in range(6)
    ]
    assert r.use_graph is False and r.w_qkv is None and r.kernels == {}
    assert "attention tiles" in describe(r.plan) and "layers 0,1,3,4" in describe(r.plan)


@pytest.mark.skipif(not kernels.available(), reason="triton is not installed")
def test_first_backend_tried_and_fallbacks():
    _, model = tiny_model("gemma3")
    install(model, range(6), *LAYOUTS["tpa_fixed"])
    install(model, [2, 5], *LAYOUTS["latent_kv"])
    r = Runner(model, 2, 30, attention="cuda", entries="kernel", compile=False)
    # no CUDA device: the Triton kernel (interpreted) for latent layers; TPA takes the tiles
    assert [p.attention for p in r.plan] == ["triton" if i in (2, 5) else "tiles" for i in range(6)]
    assert sorted(r.kernels) == [2, 5] and r.w_gu is not None
    # a grouped cache: only the torch backends read it, its entries go through the cache's write
    r = Runner(model, 2, 32, cache_dtype="int4:group=4", attention="cuda", entries="kernel", compile=False)
    assert {(p.entries, p.attention) for p in r.plan} == {("fused", "tiles")}


def test_bad_options_are_one_line_errors():
    with pytest.raises(TPAError, match="attention='flash' is not valid; valid: cuda, triton"):
        DecodeOptions(attention="flash")
    with pytest.raises(TPAError, match="decode option 'fusd' is not valid"):
        DecodeOptions.of(fusd=True)
    # the backend is the plan's (DecodeOptions.attention), not a kernel option
    with pytest.raises(TPAError, match="kernel option 'backend' is not valid; valid: block_t"):
        DecodeOptions(kernel_options={"backend": "cuda"})
    with pytest.raises(TPAError, match="kernel='wgmma' is not valid; valid: wg, warp, tile"):
        DecodeOptions.of(cuda_build=CudaBuild(kernel="wgmma"))
    with pytest.raises(TPAError, match="block=96 is not valid"):
        CudaBuild(block=96)
    with pytest.raises(TPAError, match="cuda_build='warp' is not valid"):
        DecodeOptions(cuda_build="warp")


def test_options_carry_the_cuda_build():
    """The CUDA kernels' build is one frozen field of the options, with the runtime's defaults."""
    o = DecodeOptions.of(cuda_build=CudaBuild(kernel="tile", block=128), prefetch_min=0)
    assert o.cuda_build == CudaBuild("tile", block=128) and o.prefetch_min == 0
    assert DecodeOptions().cuda_build == CudaBuild(kernel="wg", minb=1, warps=8, unroll=4, block=0, per_sm=1)
    with pytest.raises(AttributeError):
        o.cuda_build.kernel = "warp"  # frozen


def test_fast_path_supports():
    """convert's question: the Hopper kernel's ranks, with a cache format it reads."""
    assert fast_path_supports(256, 4, 128, 128, "bf16") and fast_path_supports(256, 4, 112, 160, "bf16")
    assert not fast_path_supports(256, 4, 120, 128, "bf16")  # K rank not a multiple of 16
    assert not fast_path_supports(128, 4, 128, 128, "bf16")  # head dim
    assert not fast_path_supports(256, 4, 128, 128, "int8")  # a cache it does not read
    assert not fast_path_supports(256, 4, 128, 128, "int4:group=32")
