"""Exact sink tokens in the cached runner: greedy tokens and every step's logits equal the
no-cache reference forward (whose factorized projections use their exact `.sink` weight
for positions < sink) for sink layouts of every factorized kind.

The sink weights are random and unrelated to the factors, so a runner that read a sink
position from the factorized cache, or missed it, or saw it twice, gets other logits.
CPU by default; pytest --device cuda runs the same checks through the CUDA-graph decode
(the benchmark run on the GPU machine does).
"""

import pytest
import torch

import run_options
from tiers import each, pairs
from tiny import CharTok, random_state, recipe, tiny_ckpt, tiny_config
from tpa_compress.convert import convert
from tpa_compress.errors import TPAError
from tpa_compress.layout import Component, cache_bytes
from tpa_compress.load.source import Checkpoint, WeightSource
from tpa_compress.methods.layers import make_proj
from tpa_compress.models import build_model
from tpa_compress.runtime import Runner, SamplingParams

DEVICE, GPU = run_options.DEVICE, run_options.GPU
TOL = 2e-3 if GPU else 1e-4
N_KV, D = 2, 16
LAYOUTS = {
    "latent_kv": (Component("latent", N_KV, D, 12), Component("latent", N_KV, D, 10)),
    "latent_k_only": (Component("latent", N_KV, D, 9), None),  # exact V of sinks from the full cache
    "latent_v_only": (None, Component("latent", N_KV, D, 7)),  # exact K of sinks from the full cache
    "tpa_fixed": (Component("tpa_fixed", N_KV, D, 1), Component("tpa_fixed", N_KV, D, 1)),
    "tpa_contextual": (Component("tpa_contextual", N_KV, D, 1), Component("tpa_contextual", N_KV, D, 2)),
}
FAMILIES = ["gemma3", "llama", "qwen2"]


def sink_model(family, kind, sink, layers=None, seed=0, **over):
    cfg = tiny_config(family, **over)
    model = build_model(Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 3)), CharTok(), "", "m"))
    g = torch.Generator().manual_seed(seed)
    k, v = LAYOUTS.get(kind, (None, None))
    for i in range(cfg.num_layers) if layers is None else layers:
        attn = model.layers[i].self_attn
        for name, c in (("k_proj", k), ("v_proj", v)):
            if c is not None:
                proj = make_proj(cfg.hidden_size, c, sink, cfg.attention_bias)
                with torch.no_grad():
                    for p in proj.parameters():
                        p.copy_(torch.randn(p.shape, generator=g) * (0.5 / p.shape[-1] ** 0.5))
                setattr(attn, name, proj)
    return model.to(DEVICE)


def prompts_of(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 90, (n,), generator=g).tolist() for n in lengths]


def runner_for(model, prompts, new, **kw):
    kw.setdefault("compile", False)  # the compiled pieces: one test below (slow to build)
    if GPU:
        kw.setdefault("cache_dtype", "fp32")
    return Runner(model, len(prompts), max(map(len, prompts)) + new, **kw)


def greedy_steps(runner, prompts, new, eos=-1):
    """Prefill + `new - 1` greedy decode steps (EOS `eos`, -1: none): each step's logits
    (B, new, vocab) and the generated tokens per sequence."""
    runner.eos = eos
    p = SamplingParams()
    runner.prepare(p)
    got = [runner.prefill(prompts, p).clone()]
    for _ in range(new - 1):
        runner.step(p)
        got.append(runner.last_logits.clone())
    longest = max(map(len, prompts))
    return torch.stack(got, 1), runner.ids[:, longest : longest + new].tolist()


def check_steps(model, prompts, new, runner):
    """Prefill + `new - 1` decode steps; greedy tokens and each step's logits vs the
    reference forward of each sequence alone (no padding)."""
    got, gen = greedy_steps(runner, prompts, new)
    for b, pr in enumerate(prompts):
        with torch.no_grad():
            ref = model.logits(model(torch.tensor([pr + gen[b]], device=DEVICE)))[0]
        ref = ref[len(pr) - 1 : len(pr) - 1 + new]
        assert gen[b] == ref.argmax(-1).tolist()
        err = (got[b].float() - ref).abs().max().item()
        assert err < TOL, (b, err)


# fast share: every kind, both sink lengths and every family
@pytest.mark.parametrize("family,kind,sink", each(FAMILIES, list(LAYOUTS), [1, 2]))
def test_sink_layouts_equal_reference(family, kind, sink):
    model = sink_model(family, kind, sink)
    # window 8 < the longer prompts: the ring wraps and the sinks leave the window; a
    # 1-token prompt is shorter than sink 2, so decode writes its second sink row
    prompts = prompts_of([13, 1, 20])
    check_steps(model, prompts, 12, runner_for(model, prompts, 12))
    # several key tiles and query chunks around the sink tile
    check_steps(model, prompts, 12, runner_for(model, prompts, 12, tile=4, query_tile=6))


def test_sink_only_on_some_layers_and_single_sequence():
    model = sink_model("gemma3", "latent_kv", 2, layers=[0, 5])
    check_steps(model, prompts_of([2]), 9, runner_for(model, prompts_of([2]), 9))


@pytest.mark.skipif(not GPU, reason="the compiled + fused-kernel path is the CUDA decode path")
@pytest.mark.parametrize("kind", ["latent_kv", "latent_v_only"])
def test_sink_compiled_cuda_path(kind):
    model = sink_model("gemma3", kind, 2)
    prompts = prompts_of([13, 1, 20])
    check_steps(model, prompts, 10, runner_for(model, prompts, 10, compile=True))


FUSED_KINDS = ["original", "latent_kv", "latent_v_only", "tpa_contextual"]


@pytest.mark.parametrize(
    "written,kind,family",
    pairs([False, True], FUSED_KINDS, FAMILIES)
    + [pytest.param("kernel", k, f, marks=pytest.mark.interpreter) for k in FUSED_KINDS for f in FAMILIES],
)
def test_fused_weights_decode_path(family, kind, written):
    """The CUDA decode step's one Q/K/V matmul with one K|V cache write, and the MLP's
    gate|up as one matmul in the tail (run eagerly here): every family's `finish`; Qwen2's
    Q/K/V biases through the fused matmul's bias (attention.fused_qkv_bias).
    written: the entries function writes the cache itself (and a latent K's norm factors);
    "kernel": the Triton entries kernel does (entries_kernel.py), where it serves the layer."""
    from tpa_compress.runtime import kernels

    if written == "kernel" and not kernels.available():
        pytest.skip("triton is not installed")
    # the kernel in the interpreter off the GPU: two layers (its time is per layer)
    small = {"num_layers": 2} if written == "kernel" and not GPU else {}
    model = sink_model(family, kind, 2, layers=[] if kind == "original" else None, **small)
    prompts = prompts_of([10, 1, 4], seed=3)
    r = runner_for(model, prompts, 10, entries={False: "fused", True: "written", "kernel": "kernel"}[written])
    assert r.w_gu is not None and {p.entries for p in r.plan} <= {"kernel", "written", "fused"}
    if written == "kernel":  # all but a random latent K basis with QK-norm (its norm factors need U)
        assert sorted(r.entry_kernels) == (
            [] if kind == "latent_kv" and family == "gemma3" else list(range(model.cfg.num_layers))
        )
    check_steps(model, prompts, 10, r)


def test_converted_with_sink_generates_as_reference():
    """A real conversion (activation SVD rank 4, recipe sink_tokens 2), not random factors."""
    ck = tiny_ckpt("gemma3")
    model = build_model(ck)
    layers = [
        {"select": "all", "k": {"method": "activation_svd", "rank": 4}, "v": {"method": "activation_svd", "rank": 4}}
    ]
    res, _ = convert(ck, model, recipe(layers, sink_tokens=2), eval_model=False, log=lambda m: None)
    assert all(lay.sink == 2 for lay in res.layouts)
    model = model.to(DEVICE)
    prompts = prompts_of([11, 3, 17], seed=2)
    check_steps(model, prompts, 10, runner_for(model, prompts, 10))


@pytest.mark.parametrize("kind", ["latent_kv", "latent_v_only", "tpa_contextual"])
def test_allocated_bytes_with_sink_equal_layout_prediction(kind):
    model = sink_model("gemma3", kind, 2, layers=[1, 5], sliding_window=16)
    r = Runner(model, batch=3, max_len=40, compile=False)
    assert [lay.sink for lay in r.layouts] == [0, 2, 0, 0, 0, 2]
    assert r.cache.kv_bytes == cache_bytes(r.layouts, 40, 3)
    # sink buffers for both components of a layer with a sink (a full one too: no gather
    # per step), none elsewhere: 3 sequences x 2 tokens x 32 values
    lc = r.cache.layers[1]
    assert lc.sk.shape == lc.sv.shape == (3, 2, N_KV * D)
    assert r.cache.layers[0].sk is None and r.cache.layers[0].sv is None


def test_missing_sink_weights_is_an_error():
    model = sink_model("llama", "latent_kv", 1)
    model.layers[2].self_attn.v_proj.sink = None
    with pytest.raises(TPAError, match="layer 2: layout has 1 sink tokens"):
        Runner(model, 1, 16, compile=False)
