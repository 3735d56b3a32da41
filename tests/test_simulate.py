"""The simulated cache (evaluate/simulate.py) scores exactly what teacher-forced decoding
through the runtime cache scores, for every layout kind, with and without exact sinks."""

import pytest
import torch

from test_runtime import LAYOUTS, install, prompts_of, tiny_model
from tiers import each
from tpa_compress.evaluate.cached import cached_perplexity
from tpa_compress.evaluate.perplexity import perplexity
from tpa_compress.evaluate.simulate import simulated_cache

KINDS = ["original", "latent_kv", "tpa_fixed", "tpa_contextual"]


def model_of(kind, sink=0):
    if sink:
        from test_runtime_sink import sink_model

        return sink_model("gemma3", kind, sink)
    _, model = tiny_model("gemma3")
    return install(model, range(model.cfg.num_layers), *LAYOUTS[kind])


WINDOWS = torch.tensor(prompts_of([24, 24, 24], seed=2))  # sliding window 8 < 24: the ring wraps


@pytest.mark.parametrize("kind,name", each(KINDS, ["fp32", "bf16", "fp8", "int8"]))
def test_simulation_equals_the_runtime_cache(kind, name):
    model = model_of(kind)
    sim = perplexity(model, WINDOWS, bos=False, cache=name)
    run = cached_perplexity(model, WINDOWS, False, name)
    assert sim.tokens == run.tokens == 3 * 23
    assert abs(sim.nll - run.nll) < 2e-5 * run.nll, (sim.nll, run.nll)
    plain = perplexity(model, WINDOWS, bos=False)
    if name == "fp32":
        assert abs(sim.nll - plain.nll) < 1e-5
    else:  # the format costs something: the simulation is not the plain forward
        assert abs(sim.nll - plain.nll) > 1e-6


@pytest.mark.parametrize("name", ["fp8", "int8"])
def test_simulation_with_exact_sinks(name):
    model = model_of("latent_kv", sink=1)
    sim = perplexity(model, WINDOWS, bos=False, cache=name)
    run = cached_perplexity(model, WINDOWS, False, name)
    assert abs(sim.nll - run.nll) < 2e-5 * run.nll, (sim.nll, run.nll)


def test_simulation_is_removed_afterwards():
    model = model_of("latent_kv")
    x = WINDOWS[:1]
    with torch.no_grad():
        before = model(x)
        with simulated_cache(model, "int2:group=4,recent=0"):
            during = model(x)
        after = model(x)
    assert torch.equal(before, after) and not torch.allclose(before, during, atol=1e-4)


def test_eval_cache_path_is_checked(cli_run):
    from checks import assert_one_line_error

    code, _, err = cli_run("eval", "--cache-dtype", "int4", "--cache-path", "fast")
    assert_one_line_error(code, err, "--cache-path 'fast'", "valid: simulate, decode")
    code, _, err = cli_run("eval", "--cache-dtype", "int4:recent=-2")
    assert_one_line_error(code, err, "--cache-dtype 'int4:recent=-2'", "recent -2 is not valid")


GROUPED = [
    "int4:group=4,recent=0",
    "int4:group=4,recent=3",
    "int3:group=2,recent=5,rotate=hadamard",
    "int2:group=8,recent=1,values=token",
    "int4:group=4,recent=0,sink=1",
    "int2:group=2,recent=1,sink=3",
]


# per-token values run on the original layout only (skipped elsewhere): kept in the fast set
@pytest.mark.parametrize("kind,spec", each(KINDS, GROUPED, keep=[("original", "int2:group=8,recent=1,values=token")]))
def test_grouped_runtime_cache_equals_the_simulation(kind, spec):
    """Teacher-forced decoding through the runtime's grouped cache (packed codes, scales,
    the bf16 ring) scores what the simulation does; the ring of the sliding layers wraps."""
    model = model_of(kind)
    if "values=token" in spec and kind != "original":
        pytest.skip("a factorized V's width need not divide by the group")
    sim = perplexity(model, WINDOWS, bos=False, cache=spec)
    run = cached_perplexity(model, WINDOWS, False, spec)
    assert abs(sim.nll - run.nll) < 2e-5 * run.nll, (sim.nll, run.nll)
    plain = perplexity(model, WINDOWS, bos=False)
    assert sim.nll != plain.nll  # the quantization is seen


@pytest.mark.parametrize("spec", ["int4:group=4,recent=2", "int2:group=4,recent=0,rotate=hadamard"])
def test_grouped_runtime_cache_with_exact_sinks(spec):
    model = model_of("latent_kv", sink=1)
    sim = perplexity(model, WINDOWS, bos=False, cache=spec)
    run = cached_perplexity(model, WINDOWS, False, spec)
    assert abs(sim.nll - run.nll) < 2e-5 * run.nll, (sim.nll, run.nll)


@pytest.mark.parametrize("spec", ["int4:group=4", "int3:group=4,recent=2", "int2:group=8,recent=0,sink=2"])
def test_grouped_runtime_bytes_are_the_pricing(spec):
    from test_runtime_quant import step_logits
    from tpa_compress.layout import cache_bytes
    from tpa_compress.runtime import Runner

    model = model_of("original")  # K and V rows of 32 values: whole bytes at every width
    prompts = prompts_of([13, 5, 20])  # left-padded: pads stay out of the groups' ranges
    logits, r = step_logits(Runner(model, 3, 28, cache_dtype=spec), prompts, 8)
    assert torch.isfinite(logits).all()
    assert r.cache.kv_bytes == cache_bytes(r.layouts, 28, 3)
    again, _ = step_logits(Runner(model, 3, 28, cache_dtype=spec), prompts, 8)
    assert torch.equal(logits, again)


@pytest.mark.parametrize("spec", ["int4:group=4,recent=2", "int3:group=2,recent=0,sink=1,rotate=hadamard"])
@pytest.mark.parametrize("kind", ["original", "latent_kv"])
def test_long_prefill_then_decode_equals_the_simulation(kind, spec):
    """A prompt longer than the sliding window, prefilled at once (its reads exact, whole
    groups quantized on the way into the cache), then decode steps: each step's logits are
    the simulation's with `prefill` = the prompt length."""
    from test_runtime_quant import step_logits
    from tpa_compress.runtime import Runner

    model = model_of(kind)
    prompt = prompts_of([13], seed=4)
    got, r = step_logits(Runner(model, 1, 13 + 9, cache_dtype=spec), prompt, 9)
    seq = r.ids[:, : 13 + 8]
    with torch.no_grad(), simulated_cache(model, spec, prefill=13):
        want = model.logits(model(seq))[:, 12:]
    assert (got - want).abs().max().item() < 1e-4 * want.abs().max().item()
