"""One-byte KV caches (fp8 e4m3, int8 with per-token scales) in the runtime.

The storage path is checked exactly: a runner with an fp8/int8 cache must give the
logits of an fp32-cache runner whose writes are quantized and dequantized on the spot
(the same numbers, stored wide). Against the unquantized reference the error is only
bounded, and the allocated bytes must be `cache_bytes`' prediction.
"""

import functools

import pytest
import torch

from test_runtime import LAYOUTS, install, prompts_of, tiny_model
from test_runtime_sink import DEVICE
from tiers import each
from tpa_compress.layout import cache_bytes
from tpa_compress.runtime import Runner, SamplingParams, kernels
from tpa_compress.runtime import cache as cache_mod
from tpa_compress.runtime.cache import dequantize, dequantize_kv, quantize

QUANT = ["fp8", "int8"]


@pytest.mark.parametrize("name", QUANT)
def test_quantize_round_trip(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 24, generator=g) * torch.logspace(-3, 2, 7)[None, :, None]
    x[1, 2] = 0.0  # an all-zero entry: no NaN, stays 0
    qz, sc = quantize(x, name, nk=10)
    assert qz.dtype == (torch.int8 if name == "int8" else torch.float8_e4m3fn)
    if name == "int8":
        assert sc.shape == (3, 7, 2) and sc.dtype == torch.float16
        back = torch.cat(dequantize_kv(qz[..., :10], qz[..., 10:], sc, torch.float32), -1)
        step = torch.cat([sc[..., :1].float().expand(-1, -1, 10), sc[..., 1:].float().expand(-1, -1, 14)], -1)
        assert ((back - x).abs() <= step / 2 + 1e-12).all()
    else:
        assert sc is None
        back = dequantize(qz, None, torch.float32)
        big = x.abs() > 2.0**-6  # e4m3 normals: 3 mantissa bits
        assert ((back - x).abs()[big] <= x.abs()[big] * 2.0**-4).all()
    assert torch.isfinite(back).all() and (back[1, 2] == 0).all()


def fake_quant_runner(model, prompts, new, name, monkeypatch):
    """fp32-cache runner whose cache writes go through quantize -> dequantize (entries
    "eager": every write passes LayerCache.write_kv; CUDA's default writer, the Triton epilogue
    kernel, writes a plain cache itself)."""
    real = cache_mod.LayerCache.write_kv

    def write_kv(self, slots, kv):
        qz, sc = quantize(kv, name, self.nk)
        kv = torch.cat(dequantize_kv(qz[..., : self.nk], qz[..., self.nk :], sc, torch.float32), -1)
        real(self, slots, kv)

    monkeypatch.setattr(cache_mod.LayerCache, "write_kv", write_kv)
    try:
        r = Runner(model, len(prompts), max(map(len, prompts)) + new, cache_dtype="fp32", entries="eager")
        return step_logits(r, prompts, new)
    finally:
        monkeypatch.setattr(cache_mod.LayerCache, "write_kv", real)


def step_logits(runner, prompts, new):
    runner.eos = -1
    p = SamplingParams()
    runner.prepare(p)  # CUDA: capture the decode graph
    got = [runner.prefill(prompts, p).clone()]
    for _ in range(new - 1):
        runner.step(p)
        got.append(runner.last_logits.clone())
    return torch.stack(got, 1), runner


@pytest.mark.parametrize("kind,name", each(["original", "latent_kv", "latent_v_only", "tpa_contextual"], QUANT))
def test_one_byte_cache_is_exactly_fake_quantization(kind, name, monkeypatch):
    _, model = tiny_model("gemma3")
    install(model, range(model.cfg.num_layers), *LAYOUTS[kind])
    prompts = prompts_of([13, 5, 20])  # window 8: the ring wraps
    want, _ = fake_quant_runner(model, prompts, 8, name, monkeypatch)
    got, r = step_logits(Runner(model, 3, 28, cache_dtype=name), prompts, 8)
    assert r.cache.layers[0].kv.dtype == (torch.int8 if name == "int8" else torch.float8_e4m3fn)
    assert (got - want).abs().max().item() < 1e-4
    # and close to the unquantized model: bounded, not equal. Only the first decode
    # step compares (prefill never reads the cache; later steps' inputs may differ)
    full, _ = step_logits(Runner(model, 3, 28, cache_dtype="fp32"), prompts, 2)
    err = (got[:, 1] - full[:, 1]).abs().max().item()
    assert 0 < err < (0.02 if name == "int8" else 0.1) * full[:, 1].abs().max().item()
    assert r.cache.kv_bytes == cache_bytes(r.layouts, 28, 3)


@pytest.mark.parametrize("name", QUANT)
def test_one_byte_cache_with_sink_tokens(name, monkeypatch):
    from test_runtime_sink import sink_model

    model = sink_model("gemma3", "latent_kv", 1)
    prompts = prompts_of([13, 1, 20])
    want, _ = fake_quant_runner(model, prompts, 8, name, monkeypatch)
    got, r = step_logits(Runner(model, 3, 28, cache_dtype=name, compile=False), prompts, 8)
    # the sink rows are bf16 here, fp32 in the fake-quantized runner
    assert (got - want).abs().max().item() < 1e-2 * want.abs().max().item()
    assert r.cache.layers[0].sk.dtype == torch.bfloat16  # exact tokens stay unquantized
    assert r.cache.kv_bytes == cache_bytes(r.layouts, 28, 3)


@pytest.mark.skipif(not kernels.available(), reason="triton is not installed")
@pytest.mark.interpreter
@pytest.mark.parametrize("name", QUANT)
@pytest.mark.parametrize("kind", ["original", "latent_kv"])
def test_one_byte_cache_kernel_path(kind, name, monkeypatch):
    """The Triton decode path (CUDA, or triton's CPU interpreter) reads the one-byte
    cache as the fake-quantized fp32 one."""
    # two layers off the GPU (one sliding, one global): the interpreter's time is per layer
    _, model = tiny_model("gemma3", **({} if DEVICE != "cpu" else {"num_layers": 2}))
    model = install(model, range(model.cfg.num_layers), *LAYOUTS[kind]).to(DEVICE)
    prompts = prompts_of([13, 5, 20])
    monkeypatch.setattr(Runner, "__init__", functools.partialmethod(Runner.__init__, attention="cuda", compile=False))
    want, _ = fake_quant_runner(model, prompts, 6, name, monkeypatch)
    got, r = step_logits(Runner(model, 3, 26, cache_dtype=name), prompts, 6)
    assert len(r.kernels) == model.cfg.num_layers
    assert (got - want).abs().max().item() < 1e-4


@pytest.mark.skipif(not kernels.available(), reason="triton is not installed")
@pytest.mark.interpreter
@pytest.mark.parametrize("name", QUANT)
@pytest.mark.parametrize("kind", ["latent_kv", "latent_k_only"])
def test_one_byte_cache_with_sink_tokens_kernel_path(kind, name):
    """The Triton decode path reads the exact sink tile (bf16 beside a one-byte cache) as the
    torch path does: the same logits on every step."""
    from test_runtime_sink import sink_model

    model = sink_model("gemma3", kind, 1, **({} if DEVICE != "cpu" else {"num_layers": 2}))
    prompts = prompts_of([13, 1, 20])
    got, r = step_logits(Runner(model, 3, 28, cache_dtype=name, attention="cuda", compile=False), prompts, 4)
    want, _ = step_logits(Runner(model, 3, 28, cache_dtype=name, attention="tiles", compile=False), prompts, 4)
    assert all(p.attention in ("cuda", "triton") for p in r.plan)
    assert (got - want).abs().max().item() < 1e-3 * want.abs().max().item()


@pytest.mark.parametrize("kind", ["original", "latent_kv"])
def test_perplexity_through_the_cache(kind):
    """eval --cache-dtype: an fp32 cache scores exactly what the no-cache forward does;
    a one-byte cache scores a little differently."""
    from tpa_compress.evaluate.cached import cached_perplexity
    from tpa_compress.evaluate.perplexity import perplexity

    _, model = tiny_model("gemma3")
    install(model, range(model.cfg.num_layers), *LAYOUTS[kind])
    windows = torch.tensor(prompts_of([24, 24, 24], seed=2))  # window 8 < 24: the ring wraps
    ref = perplexity(model, windows, bos=False)
    got = cached_perplexity(model, windows, False, "fp32")
    assert got.tokens == ref.tokens == 3 * 23
    assert abs(got.nll - ref.nll) < 1e-5
    q = cached_perplexity(model, windows, False, "int8")
    assert 0 < abs(q.nll - ref.nll) < 0.02 * ref.nll


def test_eval_cache_dtype_is_checked(cli_run):
    from checks import assert_one_line_error

    code, _, err = cli_run("eval", "--cache-dtype", "int5")
    assert_one_line_error(code, err, "--cache-dtype 'int5'", "valid: fp32, bf16, fp16, fp8, int8, int4")
