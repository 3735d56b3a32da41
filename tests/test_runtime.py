"""The cached runner equals the no-cache reference forward, for every cache layout.

Tiny random models (fp32, CPU). Greedy generation is checked token by token against
the reference forward of each sequence alone (no padding), and the logits of every
generated position must agree, so a wrong mask, position, ring slot or rebuild shows.
"""

import pytest
import torch

from tiers import each
from tiny import CharTok, random_state, tiny_config
from tpa_compress.convert import convert
from tpa_compress.errors import TPAError
from tpa_compress.layout import Component, cache_bytes
from tpa_compress.load.source import Checkpoint, WeightSource
from tpa_compress.methods.layers import make_proj
from tpa_compress.models import build_model
from tpa_compress.recipe import parse_recipe
from tpa_compress.runtime import Runner, SamplingParams


def tiny_model(family, **over):
    cfg = tiny_config(family, **over)
    ck = Checkpoint(cfg, WeightSource.from_dict(random_state(cfg, 3)), CharTok(), "", "memory")
    return ck, build_model(ck)


def install(model, layers, k: Component | None, v: Component | None, seed=0):
    """Random factorized projections (factors scaled like the original weights)."""
    g = torch.Generator().manual_seed(seed)
    hidden = model.cfg.hidden_size
    for i in layers:
        attn = model.layers[i].self_attn
        for name, c in (("k_proj", k), ("v_proj", v)):
            if c is None:
                continue
            proj = make_proj(hidden, c, bias=model.cfg.attention_bias)
            with torch.no_grad():
                for p in proj.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * (0.5 / p.shape[-1] ** 0.5))
            setattr(attn, name, proj)
    return model


def check_against_reference(model, prompts, new=10, runner=None):
    runner = runner or Runner(model, len(prompts), max(map(len, prompts)) + new)
    res = runner.generate(prompts, new, stop_at_eos=False)
    for p, gen in zip(prompts, res.tokens, strict=True):
        assert len(gen) == new
        seq = torch.tensor([p + gen])
        with torch.no_grad():
            ref_logits = model.logits(model(seq))[0]
        # the token after position j of the prompt+generated sequence
        ref_next = ref_logits[len(p) - 1 : len(p) - 1 + new].argmax(-1).tolist()
        assert gen == ref_next
    return runner, res


def prompts_of(lengths, seed=0, vocab=90):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


N_KV, D = 2, 16
LAYOUTS = {
    "original": (None, None),
    "latent_kv": (Component("latent", N_KV, D, 12), Component("latent", N_KV, D, 10)),
    "latent_v_only": (None, Component("latent", N_KV, D, 7)),
    "tpa_fixed": (Component("tpa_fixed", N_KV, D, 1), Component("tpa_fixed", N_KV, D, 1)),
    "tpa_contextual": (Component("tpa_contextual", N_KV, D, 1), Component("tpa_contextual", N_KV, D, 2)),
}


@pytest.mark.parametrize("kind,family", each(list(LAYOUTS), ["gemma3", "llama", "qwen2"]))
def test_greedy_equals_reference_batch_of_lengths(family, kind):
    _, model = tiny_model(family)
    k, v = LAYOUTS[kind]
    install(model, range(model.cfg.num_layers), k, v)
    # sliding window 8 < prompts: the ring buffer wraps during prefill and decode
    prompts = prompts_of([13, 5, 20])
    runner, _ = check_against_reference(model, prompts, new=12)
    # a small tile splits the rebuilt keys into several tiles (online-softmax merge)
    runner.tile = 4
    runner.query_tile = 6
    check_against_reference(model, prompts, new=12, runner=runner)


def test_cached_logits_match_reference_each_step():
    _, model = tiny_model("gemma3")
    install(model, [1, 5], *LAYOUTS["latent_kv"])
    prompt = prompts_of([11])[0]
    r = Runner(model, 1, 30, tile=4)
    r.eos = -1  # no EOS forcing: every step's logits are the model's
    p = SamplingParams()
    got = [r.prefill([prompt], p)[0]]
    for _ in range(6):
        r.step(p)
        got.append(r.last_logits[0].clone())
    seq = r.ids[:, : len(prompt) + 7]
    with torch.no_grad():
        ref = model.logits(model(seq))[0, len(prompt) - 1 : len(prompt) + 6]
    assert (torch.stack(got) - ref).abs().max() < 1e-4
    assert int(r.col) == len(prompt) + 6


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_identity_conversion_generates_as_original(family):
    ck, model = tiny_model(family)
    ref_model = build_model(ck)
    rec = parse_recipe(
        {
            "calibration": {"tokens": 256, "seq_len": 32, "heldout_tokens": 32},
            "eval": {"seq_len": 32, "max_windows": 1},
            "layers": [{"select": "all", "k": {"method": "identity"}, "v": {"method": "identity"}}],
        },
        "t.yaml",
    )
    convert(ck, model, rec, eval_model=False, log=lambda m: None)
    assert type(model.layers[0].self_attn.k_proj).__name__ == "TPAFixedProj"
    prompts = prompts_of([9, 17], seed=4)
    _, res = check_against_reference(model, prompts, new=8)
    _, ref = check_against_reference(ref_model, prompts, new=8)
    assert res.tokens == ref.tokens


@pytest.mark.parametrize("kind", ["original", "latent_kv", "tpa_contextual"])
def test_allocated_bytes_equal_layout_prediction(kind):
    _, model = tiny_model("gemma3", sliding_window=16)
    install(model, [5], *LAYOUTS[kind])
    r = Runner(model, batch=3, max_len=40)
    predicted = cache_bytes(r.layouts, 40, 3)
    assert r.cache.kv_bytes == predicted
    assert abs(r.cache.kv_bytes + r.cache.index_bytes - predicted) <= 0.05 * predicted
    # sliding layers hold their window, the global one the max length
    caps = [lc.capacity for lc in r.cache.layers]
    assert caps == [16] * 5 + [40]


def test_sampling_is_seeded_and_respects_top_k():
    _, model = tiny_model("llama")
    prompts = prompts_of([6, 6])
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        r = Runner(model, 2, 20)
        outs.append(r.generate(prompts, 8, SamplingParams(temperature=1.0, top_k=1), stop_at_eos=False).tokens)
    greedy = Runner(model, 2, 20).generate(prompts, 8, stop_at_eos=False).tokens
    assert outs[0] == outs[1] == greedy  # top-k 1 is greedy whatever the seed


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(temperature=-1.0), "--temperature -1.0"),
        (dict(top_p=0.0), "--top-p 0.0"),
        (dict(top_p=1.5), "--top-p 1.5"),
        (dict(top_k=-2), "--top-k -2"),
    ],
)
def test_invalid_sampling(kw, needle):
    with pytest.raises(TPAError, match=needle):
        SamplingParams(**kw)


def test_prompt_too_long_for_runner():
    _, model = tiny_model("llama")
    r = Runner(model, 1, 16)
    with pytest.raises(TPAError, match="exceeds the max length 16"):
        r.generate(prompts_of([12]), 5)
    with pytest.raises(TPAError, match="exceeds the model's 256 positions"):
        Runner(model, 1, 300)


@pytest.mark.parametrize("kind", ["original", "latent_kv", "tpa_fixed", "tpa_contextual"])
def test_fused_projection_path_equals_reference(kind):
    """The CUDA decode path's single Q/K/V matmul (run eagerly here) for each encoder kind."""
    _, model = tiny_model("gemma3")
    install(model, range(6), *LAYOUTS[kind])
    prompts = prompts_of([10, 4], seed=3)
    r = Runner(model, 2, 24, entries="fused")
    assert all(p.entries == "fused" for p in r.plan)
    check_against_reference(model, prompts, new=10, runner=r)


def test_direct_decode_path_for_long_full_caches(monkeypatch):
    """Above SDPA_MAX_KEYS the full-K caches use plain matmuls over the whole cache."""
    import tpa_compress.runtime.backends.sdpa as sdpa

    monkeypatch.setattr(sdpa, "SDPA_MAX_KEYS", 4)
    for kind in ("original", "latent_v_only"):
        _, model = tiny_model("gemma3")
        install(model, range(6), *LAYOUTS[kind])
        r, _ = check_against_reference(model, prompts_of([12, 3], seed=5), new=10)
        assert all(p.attention == "direct" for p in r.plan)


@pytest.mark.parametrize(
    "family,cache_dtype,written",
    [("gemma3", "fp32", False), ("gemma3", "bf16", True), ("gemma3", "int8", False), ("llama", "fp32", False)],
)
def test_latent_k_caches_its_norm_factors(family, cache_dtype, written):
    """A latent K with QK-norm keeps each entry's 1 / rms(U z + b) beside z (layout k_scale),
    from z as stored (int8: dequantized); priced by the layout; none without QK-norm.
    written: through the compiled decode step's entries function (run eagerly here)."""
    from tpa_compress.layout import LayerLayout
    from tpa_compress.runtime.cache import dequantize

    _, model = tiny_model(family, sliding_window=16)
    install(model, [2, 5], *LAYOUTS["latent_kv"])
    prompts = prompts_of([9, 17, 4], seed=2)
    r = Runner(model, 3, 30, cache_dtype=cache_dtype, entries="written" if written else None)
    r.generate(prompts, 5, stop_at_eos=False)
    assert r.cache.kv_bytes == cache_bytes(r.layouts, 30, 3)
    for i, (lay, lc) in enumerate(zip(r.layouts, r.cache.layers, strict=True)):
        assert lay.k_scale == (family == "gemma3" and i in (2, 5))
        if not lay.k_scale:
            assert lc.ks is None
            continue
        plain = LayerLayout(lay.k, lay.v, lay.window, lay.cache_dtype)
        assert lay.bytes_per_token() == plain.bytes_per_token() + 4 * N_KV
        attn = model.layers[i].self_attn
        n = min(17 + 5 - 1, lc.capacity)  # slots written: the longest prompt + decode inputs (ring: all)
        z = lc.k[:, :n].float() if lc.scale is None else dequantize(lc.k[:, :n], lc.scale[:, :n, :1], torch.float32)
        with torch.no_grad():  # the rebuilt (pre-norm) key in float64
            k = (z.double() @ attn.k_proj.up.weight.double().T + attn.k_proj.bias.double()).view(3, n, N_KV, D)
        want = torch.rsqrt(k.pow(2).mean(-1) + attn.k_norm.eps)
        assert torch.allclose(lc.ks[:, :n].double(), want, rtol=1e-5)
    with pytest.raises(TPAError, match="k_scale"):
        LayerLayout(Component("full", N_KV, D), Component("full", N_KV, D), k_scale=True)
    assert (
        LayerLayout.from_dict(
            {"k": {"kind": "full", "heads": 1, "dim": 4}, "v": {"kind": "full", "heads": 1, "dim": 4}}
        ).k_scale
        is False
    )


@pytest.mark.parametrize("kv", [1, 2])
def test_norm_factors_from_the_gram_diagonal(kv):
    """An orthonormal K basis (per head, rounded to bf16 as the cache's U is) takes the
    pointwise form sum_r g_r (z_r + e_r)^2 + const (no matmul: it fuses into the projection's
    epilogue) and matches 1 / rms(U z + b) in float64 to ~1e-3; a random basis keeps U."""
    from types import SimpleNamespace as NS

    from tpa_compress.runtime.attention import key_scale_terms, key_scales

    g = torch.Generator().manual_seed(0)
    r, d = 64, 256
    z = torch.randn(2, 300, r, generator=g) * 2

    def attn(up):
        lin = NS(weight=up.to(torch.bfloat16))
        return NS(k_proj=NS(up=lin, bias=torch.randn(kv * d, generator=g) * 0.3), n_kv=kv, k_norm=NS(eps=1e-6))

    heads = [torch.linalg.qr(torch.randn(d, r, generator=g))[0] * 3 for _ in range(kv)]
    for up, form in ((torch.cat(heads), "diag"), (torch.randn(kv * d, r, generator=g) * 0.1, "up")):
        a = attn(up)
        terms = key_scale_terms(a)
        assert terms[0] == form
        u = a.k_proj.up.weight.double()
        want = torch.rsqrt((z.double() @ u.T + a.k_proj.bias.double()).unflatten(-1, (kv, d)).pow(2).mean(-1) + 1e-6)
        got = key_scales(z, terms, step=128).double()
        assert got.shape == (2, 300, kv)
        assert ((got - want).abs() / want).max() < (2e-3 if form == "diag" else 1e-5)


def test_recipe_can_turn_the_norm_factors_off():
    """Recipe `k_scale: false`: a converted Gemma latent K caches no norm factors; the
    layouts (config.json's tpa) record it, so a model rebuilt from them allocates none. The
    default caches them, priced. A value that is not a boolean is a one-line error."""
    from tpa_compress.layout import layouts_to_config
    from tpa_compress.methods.layers import install_layouts, layout_of_model

    base = {
        "calibration": {"tokens": 256, "seq_len": 32, "heldout_tokens": 32},
        "eval": {"seq_len": 32, "max_windows": 1},
        "layers": [
            {
                "select": "all",
                "k": {"method": "activation_svd", "rank": 4},
                "v": {"method": "activation_svd", "rank": 4},
            }
        ],
    }
    per_token = {}
    for on in (True, False):
        ck, model = tiny_model("gemma3")
        res, _ = convert(
            ck, model, parse_recipe({**base, "k_scale": on}, "t.yaml"), eval_model=False, log=lambda m: None
        )
        assert [lay.k_scale for lay in res.layouts] == [on] * len(res.layouts)
        assert [lay.k_scale for lay in layout_of_model(model)] == [on] * len(res.layouts)
        per_token[on] = sum(lay.bytes_per_token() for lay in res.layouts)
        rebuilt = build_model(ck)  # as a converted folder loads: modules from its tpa config
        install_layouts(rebuilt, layouts_to_config(res.layouts))
        r = Runner(rebuilt, 2, 20)
        assert all((lc.ks is not None) == on for lc in r.cache.layers)
        assert r.cache.kv_bytes == cache_bytes(r.layouts, 20, 2)
    assert per_token[True] == per_token[False] + 4 * N_KV * len(res.layouts)
    with pytest.raises(TPAError, match="k_scale"):
        parse_recipe({**base, "k_scale": "yes"}, "t.yaml")
