"""The decode plan (runtime/plan.py): which backend each layer takes, from one table, and
the options that steer it. CPU; the paths themselves are checked against the reference
forward elsewhere (test_runtime*.py)."""

import pytest

from test_runtime import LAYOUTS, install, tiny_model
from tpa_compress.errors import TPAError
from tpa_compress.runtime import CudaBuild, DecodeOptions, Runner, TritonTuning, fast_path_supports, kernels
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
    # the backend is the plan's (DecodeOptions.attention), not a tuning field
    with pytest.raises(TPAError, match="Triton tuning 'backend=cuda' is not valid; valid: name=value, names block_t"):
        TritonTuning.parse("backend=cuda")
    with pytest.raises(TPAError, match="decode option tuning=.* is not valid; valid: a kernels.TritonTuning"):
        DecodeOptions(tuning={"block_t": 64})
    with pytest.raises(TPAError, match="Triton tuning block_t=48 is not valid; valid: a power of two, at least 16"):
        TritonTuning(block_t=48)
    with pytest.raises(TPAError, match="combine_rv_block=8 is not valid; valid: a power of two, at least 16"):
        TritonTuning(combine_rv_block=8)
    with pytest.raises(TPAError, match="num_stages=0 is not valid; valid: None or a whole number >= 1"):
        TritonTuning(num_stages=0)
    with pytest.raises(TPAError, match="latent_combine=0 is not valid; valid: true or false"):
        TritonTuning(latent_combine=0)
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


def test_options_carry_the_triton_tuning():
    """The Triton kernels' tuning is one frozen field of the options; a benchmark's flag
    text parses into it (ints, true / false / none, 0 / 1 for the switches)."""
    assert DecodeOptions().tuning == TritonTuning(block_t=32, num_warps=4, per_sm=2, latent_combine=True)
    t = TritonTuning.parse("latent_combine=0,block_t=64,num_stages=none,fast_trig=true")
    assert t == TritonTuning(block_t=64, latent_combine=False, fast_trig=True)
    assert DecodeOptions.of(tuning=t).tuning.block_t == 64 and TritonTuning.parse("") == TritonTuning()
    with pytest.raises(AttributeError):
        t.block_t = 16  # frozen


def test_fast_path_supports():
    """convert's question: the Hopper kernel's ranks, with a cache format it reads."""
    assert fast_path_supports(256, 4, 128, 128, "bf16") and fast_path_supports(256, 4, 112, 160, "bf16")
    assert not fast_path_supports(256, 4, 120, 128, "bf16")  # K rank not a multiple of 16
    assert not fast_path_supports(128, 4, 128, 128, "bf16")  # head dim
    assert not fast_path_supports(256, 4, 128, 128, "int8")  # a cache it does not read
    assert not fast_path_supports(256, 4, 128, 128, "int4:group=32")


@pytest.mark.skipif(not kernels.available(), reason="triton is not installed")
def test_an_uncompiled_cuda_step_writes_entries_with_the_kernel():
    """Uncompiled on CUDA the step is Triton kernels of its own (entries, norms, head,
    advance); compiled, the entries kernel too; on the CPU the eager writer."""
    import torch

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert DecodeOptions(compile=False, pdl=False).resolved(cuda, 1).entries == "kernel"
    assert DecodeOptions(compile=True, pdl=False).resolved(cuda, 1).entries == "kernel"
    assert DecodeOptions(pdl=False).resolved(cpu, 1).entries == "eager"


def test_cuda_compiles_only_above_the_uncompiled_batch(monkeypatch):
    """On CUDA with Triton a batch up to UNCOMPILED_MAX_BATCH over a 16-bit cache runs
    uncompiled (a fast start, as fast a step); a larger batch or a lossy cache compiles, and so
    does CUDA without Triton (the uncompiled step would be eager); the CPU never does; an
    explicit choice is kept."""
    import torch

    from tpa_compress.runtime import plan

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(plan.kernels, "pdl_available", lambda device: False)
    monkeypatch.setattr(plan.kernels, "available", lambda: True)
    n = plan.UNCOMPILED_MAX_BATCH
    assert DecodeOptions().resolved(cuda, n).compile is False
    assert DecodeOptions().resolved(cuda, n + 1).compile is True
    assert DecodeOptions(compile=True).resolved(cuda, n).compile is True
    assert DecodeOptions(compile=False).resolved(cuda, n + 1).compile is False
    assert DecodeOptions().resolved(cuda, n, "fp16").compile is False
    assert DecodeOptions().resolved(cuda, n, "int8").compile is True
    assert DecodeOptions().resolved(cuda, n, "int4:group=32").compile is True
    assert DecodeOptions().resolved(cpu, n + 1).compile is False
    monkeypatch.setattr(plan.kernels, "available", lambda: False)
    assert DecodeOptions().resolved(cuda, n).compile is True
