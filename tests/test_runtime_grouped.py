"""Grouped integer caches (int4, int3, int2) decode on the test device: the runner with the
device's default plan (on CUDA: compiled step, fused entries, torch attention backends;
no CUDA graph, since a grouped cache appends on the host) gives the logits of the
simulated cache (evaluate/simulate.py) teacher-forced on the runner's own tokens.
CPU by default; TPA_TEST_DEVICE=cuda runs it on the GPU against the CPU simulation."""

import copy

import pytest
import torch

from test_runtime import LAYOUTS, install, prompts_of, tiny_model
from test_runtime_quant import step_logits
from test_runtime_sink import DEVICE
from tpa_compress.evaluate.simulate import simulated_cache
from tpa_compress.runtime import Runner


@pytest.mark.parametrize("spec", ["int4:group=4,recent=2", "int3:group=2,recent=0,sink=1,rotate=hadamard"])
@pytest.mark.parametrize("kind", ["original", "latent_kv"])
def test_grouped_cache_decodes_on_the_device_as_simulated(kind, spec):
    _, model = tiny_model("gemma3")
    install(model, range(model.cfg.num_layers), *LAYOUTS[kind])
    ref = copy.deepcopy(model)  # the simulation, on the CPU
    prompt = prompts_of([13], seed=4)
    r = Runner(model.to(DEVICE), 1, 13 + 9, cache_dtype=spec)
    assert not r.use_graph and all(p.attention in ("sdpa", "direct", "tiles") for p in r.plan)
    got, r = step_logits(r, prompt, 9)
    seq = r.ids[:, : 13 + 8].cpu()
    with torch.no_grad(), simulated_cache(ref, spec, prefill=13):
        want = ref.logits(ref(seq))[:, 12:]
    assert (got.cpu() - want).abs().max().item() < 1e-4 * want.abs().max().item()


def test_grouped_cache_bf16_model_on_the_device():
    """A bf16 model with an int4 cache (generate's case on a GPU): greedy tokens follow the
    fp32 simulation's top-1 on most steps (bf16 may break near-ties), logits finite."""
    _, model = tiny_model("gemma3")
    install(model, range(model.cfg.num_layers), *LAYOUTS["latent_kv"])
    ref = copy.deepcopy(model)
    prompts = prompts_of([20, 20, 20], seed=1)  # unpadded: the simulation reads r.ids as they are
    spec = "int4:group=4,recent=2"
    got, r = step_logits(Runner(copy.deepcopy(model).to(DEVICE, torch.bfloat16), 3, 28, cache_dtype=spec), prompts, 8)
    assert torch.isfinite(got).all()
    seq = r.ids[:, :27].cpu()
    with torch.no_grad(), simulated_cache(ref, spec, prefill=20):
        want = ref.logits(ref(seq))
    agree = [(got[b].float().cpu().argmax(-1) == want[b, 19:27].argmax(-1)).float().mean().item() for b in range(3)]
    assert min(agree) >= 0.75, agree
