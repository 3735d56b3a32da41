"""tucker_shared and contextual_t6 on tiny random layers: exactness, monotonicity, runtime modules, refusals."""

import pytest
import torch

from tiny import random_state, tiny_config
from tpa_compress.calibrate import LayerStats
from tpa_compress.errors import TPAError
from tpa_compress.methods import LayerInputs, all_methods, get_method
from tpa_compress.methods.contextual_t6 import t6_apply
from tpa_compress.methods.layers import make_proj


def stats_from(x: torch.Tensor) -> LayerStats:
    xd = x.double()
    return LayerStats(x.shape[0], xd.sum(0), xd.T @ xd, x.float())


def layer(kv_heads=2, head_dim=16, hidden=48, m=400, seed=0, const_col=False, w_k=None):
    cfg = tiny_config("llama", hidden_size=hidden, num_heads=4, num_kv_heads=kv_heads, head_dim=head_dim)
    sd = random_state(cfg, seed)
    g = torch.Generator().manual_seed(seed + 1)
    # Anisotropic, non-zero-mean attention inputs, so whitening matters.
    x = (
        torch.randn(m, hidden, generator=g)
        @ (torch.randn(hidden, hidden, generator=g) / hidden**0.5 * torch.logspace(0, -1.5, hidden))
        + 0.3
    )
    if const_col:
        x[:, 0] = 1.0
    w = lambda n: sd[f"model.layers.0.self_attn.{n}_proj.weight"].double()  # noqa: E731
    return LayerInputs(cfg, 0, w("q"), w_k if w_k is not None else w("k"), w("v"), w("o"), stats_from(x))


def proj_of(inp, fz):
    p = make_proj(inp.cfg.hidden_size, fz.component).double()
    p.load_state_dict(fz.tensors)
    return p


def act_err(inp, target, p):
    x = inp.stats.sample.double()
    ref = x @ inp.weight(target).T
    with torch.no_grad():
        return float((p(x) - ref).norm() / ref.norm())


def test_registered():
    names = all_methods()
    assert "tucker_shared" in names and "contextual_t6" in names
    assert get_method("contextual_t6").needs_calibration


@pytest.mark.parametrize("whiten", [True, False])
@pytest.mark.parametrize("target", ["k", "v"])
def test_tucker_full_rank_is_exact(whiten, target):
    inp = layer()
    fz = get_method("tucker_shared")({"whiten": whiten}).factorize(inp, target, inp.cfg.kv_size)
    assert fz.component.kind == "latent" and fz.component.rank == inp.cfg.kv_size
    assert act_err(inp, target, proj_of(inp, fz)) < 1e-6


def test_tucker_error_falls_with_rank_whitening_helps_and_spectrum_is_exact():
    inp = layer()
    H = inp.cfg.num_kv_heads
    m_w = get_method("tucker_shared")({"ridge": 0.0})
    m_raw = get_method("tucker_shared")({"whiten": False})
    spec = m_w.spectrum(inp, "k")
    assert spec.shape == (inp.cfg.kv_size,) and bool((spec[:-1] >= spec[1:] - 1e-12).all())
    prev = float("inf")
    for r in range(H, inp.cfg.kv_size + 1, H):
        e_w = act_err(inp, "k", proj_of(inp, m_w.factorize(inp, "k", r)))
        e_raw = act_err(inp, "k", proj_of(inp, m_raw.factorize(inp, "k", r)))
        assert e_w <= prev + 1e-12 and e_w <= e_raw + 1e-9
        # The discarded eigenvalue tail is exactly the (uncentred) activation error.
        predicted = float((spec[r:].sum() / spec.sum()).clamp_min(0).sqrt())
        assert e_w == pytest.approx(predicted, rel=1e-4, abs=1e-7)
        prev = e_w
    # A non-multiple of kv_heads is floored, and says so.
    fz = m_w.factorize(inp, "k", 2 * H + 1)
    assert fz.component.rank == 2 * H and fz.info["rank_requested"] == 2 * H + 1
    with pytest.raises(TPAError, match="layer 0 k"):
        m_w.factorize(inp, "k", H - 1)


def test_tucker_latent_tensors_match_layout_and_math():
    inp = layer()
    c = inp.cfg
    fz = get_method("tucker_shared")().factorize(inp, "v", 2 * c.num_kv_heads * 3)
    t = fz.tensors
    r_d = 6
    assert t["down.weight"].shape == (c.num_kv_heads * r_d, c.hidden_size)
    assert t["up.weight"].shape == (c.kv_size, c.num_kv_heads * r_d)
    # up is block diagonal with one shared U_D.
    up = t["up.weight"].view(c.num_kv_heads, c.head_dim, c.num_kv_heads, r_d)
    assert torch.equal(up[0, :, 1], torch.zeros(c.head_dim, r_d, dtype=up.dtype))
    assert torch.allclose(up[0, :, 0], up[1, :, 1])
    x = inp.stats.sample.double()[:7]
    with torch.no_grad():
        got = proj_of(inp, fz)(x)
    assert torch.allclose(got, x @ t["down.weight"].T @ t["up.weight"].T + t["bias"], atol=1e-12)
    again = get_method("tucker_shared")().factorize(inp, "v", 2 * c.num_kv_heads * 3)
    assert all(torch.equal(t[k], again.tensors[k]) for k in t)


def test_tucker_head_rank():
    inp = layer(kv_heads=4, hidden=64)
    c = inp.cfg
    m = get_method("tucker_shared")({"head_rank": 2})
    assert m.max_rank(c) == 2 * c.head_dim and m.spectrum(inp, "k") is None
    # Whole feature mode: exactly the tpa_fixed form.
    fz = m.factorize(inp, "k", 2 * c.head_dim)
    assert fz.component.kind == "tpa_fixed" and fz.component.rank == 2
    t = fz.tensors
    assert t["b.weight"].shape == (2 * c.head_dim, c.hidden_size) and t["head_factor"].shape == (2, 4)
    x = inp.stats.sample.double()[:5]
    b = (x @ t["b.weight"].T).view(5, 2, c.head_dim)
    want = torch.einsum("nrd,rh->nhd", b, t["head_factor"]).flatten(1) + t["bias"]
    with torch.no_grad():
        assert torch.allclose(proj_of(inp, fz)(x), want, atol=1e-12)
    e_fixed = act_err(inp, "k", proj_of(inp, fz))
    # Feature mode truncated too: a latent of rank R * r_d, worse than keeping it whole.
    fz2 = m.factorize(inp, "k", 2 * 5)
    assert fz2.component.kind == "latent" and fz2.component.rank == 10
    assert act_err(inp, "k", proj_of(inp, fz2)) >= e_fixed - 1e-9
    # Exact when W's head mode really has rank 2.
    w = inp.w_k.view(4, c.head_dim, -1)
    mix = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -1.0], [2.0, 0.3]], dtype=w.dtype)
    inp2 = layer(kv_heads=4, hidden=64, w_k=torch.einsum("hr,rdx->hdx", mix, w[:2]).reshape(c.kv_size, -1))
    assert act_err(inp2, "k", proj_of(inp2, m.factorize(inp2, "k", 2 * c.head_dim))) < 1e-6
    with pytest.raises(TPAError, match="head_rank 5 out of range"):
        get_method("tucker_shared")({"head_rank": 5}).factorize(inp, "k", 8)


def t6(inp, rank, seed=0, **params):
    return get_method("contextual_t6")(params, seed=seed).factorize(inp, "k", rank)


def test_t6_init_is_exact_when_x_has_a_constant_direction_and_heads_have_rank_r():
    base = layer(kv_heads=4, head_dim=16, hidden=32)
    c = base.cfg
    w = base.w_k.view(4, c.head_dim, -1)
    mix = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, -1.0], [2.0, 0.3]], dtype=w.dtype)
    w_k = torch.einsum("hr,rdx->hdx", mix, w[:2]).reshape(c.kv_size, -1)
    inp = layer(kv_heads=4, head_dim=16, hidden=32, const_col=True, w_k=w_k)
    for steps in (0, 40):
        fz = t6(inp, 2, steps=steps, dtype="float64")
        assert fz.component.kind == "tpa_contextual" and fz.component.rank == 2
        assert fz.info["fit_rel_error"] < 1e-6 and fz.info["heldout_rel_error"] < 1e-6


def test_t6_runtime_module_matches_math_and_errors_fall_with_steps():
    inp = layer(kv_heads=4, head_dim=16, hidden=32, m=300)
    c = inp.cfg
    errs = [t6(inp, 2, steps=s).info for s in (0, 20, 150)]
    fits = [e["fit_rel_error"] for e in errs]
    assert fits[0] > fits[1] > fits[2]
    assert errs[2]["heldout_rel_error"] < errs[0]["heldout_rel_error"]
    fz = t6(inp, 2, steps=20)
    t = fz.tensors
    assert t["a.weight"].shape == (2 * 4, c.hidden_size) and t["b.weight"].shape == (2 * c.head_dim, c.hidden_size)
    x = inp.stats.sample.double()
    with torch.no_grad():
        got = proj_of(inp, fz)(x)
    want = t6_apply(x, t["a.weight"], t["b.weight"], t["bias"], 4, c.head_dim)
    assert torch.allclose(got, want, atol=1e-10)
    n_fit = x.shape[0] - round(0.2 * x.shape[0])
    ref = x[:n_fit] @ inp.w_k.T
    assert fz.info["fit_rel_error"] == pytest.approx(float((want[:n_fit] - ref).norm() / ref.norm()), rel=1e-9)


def test_t6_is_deterministic_for_a_seed():
    inp = layer(kv_heads=4, head_dim=16, hidden=32, m=200)
    a, b = t6(inp, 2, seed=7, steps=30), t6(inp, 2, seed=7, steps=30)
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert a.info == b.info


def test_t6_refuses_layouts_that_never_shrink():
    one = layer(kv_heads=1)
    with pytest.raises(TPAError, match=r"layer 0 k: contextual_t6 rank 1 refused.*never shrinks"):
        t6(one, 1)
    two = layer(kv_heads=2, head_dim=16)
    with pytest.raises(TPAError, match="not fewer than the original 32"):
        t6(two, 2)  # 2 * (2 + 16) >= 32
    nostats = layer()
    nostats.stats = None
    with pytest.raises(TPAError, match="needs calibration data"):
        t6(nostats, 1)
