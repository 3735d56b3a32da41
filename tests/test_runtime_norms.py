"""The fused residual-add + RMSNorm kernels (runtime/norms.py) vs the eager ops, each
family's fused decode tail (Family.decode_finish) vs its block's `finish_with` + the next
norm, and the runner's decode with the fused tail vs its eager tail.

On CUDA (pytest --device cuda) or in triton's CPU interpreter; skipped where triton is absent.
Exactness: the residual add is bit for bit in fp32 (and in bf16 on CUDA); a norm's output
is within an ulp or two of the eager one (its sum of squares is reduced in another order).
Triton's interpreter rounds fp32 -> bf16 toward zero where the GPU (and torch) round to
nearest, so off the GPU bf16 is held to bf16's tolerance, not to equality.
"""

import functools

import pytest
import torch

from test_runtime_sink import DEVICE, GPU, greedy_steps, prompts_of, runner_for
from tiny import CharTok, random_state, tiny_config
from tpa_compress.load.source import Checkpoint, WeightSource
from tpa_compress.models import build_model
from tpa_compress.models.common import RMSNorm
from tpa_compress.models.family import Family
from tpa_compress.runtime import kernels, norms
from tpa_compress.runtime.runner import _tail, fused_tail

pytestmark = [pytest.mark.skipif(not kernels.available(), reason="triton is not installed"), pytest.mark.interpreter]


def close(got, want):
    """fp32: within an ulp or two of `want`; bf16: within two ulps of the largest value of
    `want` (a residual add can cancel: an ulp of its terms is many of its sum's)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=4e-6, atol=1e-6)
    else:
        torch.testing.assert_close(got, want, rtol=2**-7, atol=2**-6 * want.abs().max().item())


def _norm(n, zero_centered, eps, g):
    norm = RMSNorm(n, eps, zero_centered)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(n, generator=g) * 0.5)
    return norm.to(DEVICE)


def _rows(n, dtype, g, scale=1.0):
    return (torch.randn(3, 1, n, generator=g) * scale).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [32, 40, 640])
@pytest.mark.parametrize("eps", [1e-6, 0.25])  # 0.25: as large as the rows' mean square, so it counts
def test_add_norm_equals_eager(n, dtype, eps):
    g = torch.Generator().manual_seed(n)
    for zero_centered in (False, True):
        norm = _norm(n, zero_centered, eps, g)
        h, a = _rows(n, dtype, g, 0.5), _rows(n, dtype, g, 0.3)
        s, x = norms.triton_add_norm(h, a, norm)
        s_ref, x_ref = norms.torch_add_norm(h, a, norm)
        assert s.dtype == x.dtype == dtype and s.shape == x.shape == h.shape
        if dtype == torch.float32 or GPU:  # one add, rounded once
            assert torch.equal(s, s_ref)
        close(s, s_ref)
        close(x, x_ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [32, 40, 640])
@pytest.mark.parametrize("eps", [1e-6, 0.25])
def test_norm_add_norm_equals_eager(n, dtype, eps):
    g = torch.Generator().manual_seed(n + 1)
    for zero_centered in (False, True):
        norm_a, norm_n = _norm(n, zero_centered, eps, g), _norm(n, zero_centered, eps, g)
        h, a = _rows(n, dtype, g, 2.0), _rows(n, dtype, g, 0.3)
        s, x = norms.triton_norm_add_norm(h, a, norm_a, norm_n)
        s_ref, x_ref = norms.torch_norm_add_norm(h, a, norm_a, norm_n)
        assert s.dtype == x.dtype == dtype and s.shape == x.shape == h.shape
        close(s, s_ref)
        close(x, x_ref)


def test_non_contiguous_rows_and_the_eager_fallback():
    """Rows of a strided view are read as rows; CPU tensors off the interpreter take the
    eager ops (what `add_norm` dispatches to is the kernel wherever triton runs)."""
    g = torch.Generator().manual_seed(5)
    norm = _norm(40, True, 1e-6, g)
    h, a = _rows(80, torch.float32, g)[..., ::2], _rows(40, torch.float32, g)
    s, x = norms.add_norm(h, a, norm)
    s_ref, x_ref = norms.torch_add_norm(h, a, norm)
    assert torch.equal(s, s_ref)
    close(x, x_ref)
    assert norms.kernel_serves(h)


def _model(family, **over):
    cfg = tiny_config(family, num_layers=2, **over)
    return build_model(Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 3)), CharTok(), "", "m")).to(DEVICE)


@pytest.mark.parametrize("family", ["gemma3", "llama", "qwen2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_family_decode_finish_equals_finish_with_and_next_norm(family, dtype):
    model = _model(family).to(dtype)
    spec = model.cfg.family_spec
    assert type(spec).decode_finish is not Family.decode_finish  # the fused override, not the default
    g = torch.Generator().manual_seed(7)
    n = model.cfg.hidden_size
    h, a = _rows(n, dtype, g), _rows(n, dtype, g, 0.3)
    block, nxt = model.layers[0], model.layers[1].input_layernorm
    with torch.no_grad():
        h_ref = block.finish_with(h, a, block.mlp)
        x_ref = nxt(h_ref)
        got = spec.decode_finish(block, h, a, block.mlp, nxt)
        base = Family.decode_finish(spec, block, h, a, block.mlp, nxt)
    assert torch.equal(base[0], h_ref) and torch.equal(base[1], x_ref)
    close(got[0], h_ref)
    close(got[1], x_ref)


@pytest.mark.parametrize("family", ["gemma3", "llama"])
@pytest.mark.parametrize("entries", [None, "fused"])  # "fused": the MLP's gate|up as one matmul in the tail
def test_runner_fused_tail_decodes_as_eager_tail(family, entries):
    """The runner's decode step with the fused tail (as CUDA without compile takes it; set by
    hand off the GPU, where the runner keeps the eager tail) gives the eager tail's tokens and
    logits."""
    model = _model(family)
    prompts = prompts_of([7, 1, 4], seed=2)
    kw = {} if entries is None else {"entries": entries}
    eager = runner_for(model, prompts, 8, **kw)
    fused = runner_for(model, prompts, 8, **kw)
    if GPU:
        assert isinstance(fused.tail, functools.partial) and fused.tail.func is fused_tail
        eager.tail = _tail
    else:
        assert fused.tail is _tail
        fused.tail = functools.partial(fused_tail, model.cfg.family_spec)
    assert (fused.w_gu is not None) == (entries == "fused" or GPU)  # CUDA's default entries kernel fuses too
    want_logits, want = greedy_steps(eager, prompts, 8)
    got_logits, got = greedy_steps(fused, prompts, 8)
    assert got == want
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4)


def test_uncompiled_runner_sets_no_compile_stance(monkeypatch):
    """Without torch.compile the runner never touches its stack: prefill's force_eager
    stance (which imports dynamo and inductor) is for compiled steps only."""

    def refuse(*a, **k):
        raise AssertionError("torch.compiler.set_stance called by an uncompiled runner")

    monkeypatch.setattr(torch.compiler, "set_stance", refuse)
    model = _model("llama")
    prompts = prompts_of([5, 2], seed=4)
    r = runner_for(model, prompts, 3)
    assert not r.options.compile
    greedy_steps(r, prompts, 3)
