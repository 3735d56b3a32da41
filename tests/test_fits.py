"""score_aware_svd and attn_refit: the RoPE algebra, optimality in their own metric, a
tiny end-to-end conversion (deterministic, refit never worse held-out), refusals."""

import pytest
import torch

from tiny import recipe, tiny_ckpt
from tpa_compress.calibrate import collect_stats
from tpa_compress.convert import convert, layer_inputs
from tpa_compress.errors import TPAError
from tpa_compress.methods import get_method
from tpa_compress.models import build_model
from tpa_compress.models.common import apply_rope, rope_cos_sin


def _rope(x, pos, D, base):
    c, s = rope_cos_sin(torch.tensor([float(pos)]), D, base, dtype=torch.float64)
    return apply_rope(x[None, None, None], c, s)[0, 0, 0]


def test_rotations_are_rope_by_the_offset():
    m = get_method("score_aware_svd")({"offsets": 8, "max_offset": 300}, seed=3)
    D, base = 16, 10000.0
    rot, delta = m.rotations(D, base, 1.0), m.offset_sample()
    assert delta.min() >= 0 and delta.max() <= 300 and len(set(delta.tolist())) > 4
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(D, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
    for r, d in zip(rot, delta.tolist(), strict=True):
        assert torch.allclose(r @ q, _rope(q, d, D, base), atol=1e-5)  # rope_cos_sin: fp32 angles
    # the score of a query at p_q and a key at p_k is (R_{p_q - p_k} q) . k
    for p_q, p_k in [(7, 3), (300, 0), (41, 41)]:
        score = _rope(q, p_q, D, base) @ _rope(k, p_k, D, base)
        assert float(score) == pytest.approx(float(_rope(q, p_q - p_k, D, base) @ k), rel=1e-5)  # fp32 angles


def _converted_inputs(family):
    ck = tiny_ckpt(family)
    model = build_model(ck)
    ids = torch.randint(3, 90, (6, 32), generator=torch.Generator().manual_seed(2))
    ids[:, 0] = 2
    stats = collect_stats(model, ids, skip=1, windows_kept=5)
    return model, stats


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_score_aware_minimises_its_metric(family):
    model, stats = _converted_inputs(family)
    inp = layer_inputs(model, 1, stats[1])
    assert stats[1].qtq is not None and stats[1].windows.shape[:2] == (5, 32)
    sa = get_method("score_aware_svd")({"ridge": 0.0})
    plain = get_method("activation_svd")()
    a = sa.score_metric(inp)
    cov = stats[1].covariance.double()
    for r in (1, 3, inp.cfg.kv_size // 2):
        errs = []
        for m in (sa, plain):
            fz = m.factorize(inp, "k", r)
            t = fz.tensors
            w_eff = t["up.weight"] @ t["down.weight"]
            d = w_eff - inp.w_k
            errs.append(float((d @ cov @ d.T * a).sum()))  # E[δkᵀ A δk], mean error is zero
        assert errs[0] <= errs[1] * (1 + 1e-9) + 1e-12
    # and the two differ: the metric is not a multiple of the identity
    assert not torch.allclose(
        sa.factorize(inp, "k", 2).tensors["down.weight"], plain.factorize(inp, "k", 2).tensors["down.weight"]
    )


def test_sqrt_pair_and_its_product_work_one_head_block_at_a_time():
    from tpa_compress.methods.base import block_diag_matmul, sqrt_pair

    g = torch.Generator().manual_seed(0)
    blocks = []
    for scale in (1.0, 1e-3, 30.0):  # heads of very different scales share one floor and ridge
        a = torch.randn(6, 4, generator=g, dtype=torch.float64) * scale
        blocks.append(a @ a.T)  # rank 4 of 6: the floor and the ridge both matter
    m = torch.block_diag(*blocks)
    root, inv = sqrt_pair(m, 1e-6, 6)
    want = m + 1e-6 * m.diagonal().mean() * torch.eye(18, dtype=m.dtype)
    evals, evecs = torch.linalg.eigh(want)
    evals = evals.clamp_min(evals.max() * 1e-12)
    assert torch.allclose(root, (evecs * evals.sqrt()) @ evecs.T, rtol=1e-9, atol=1e-12)
    assert torch.allclose(inv @ root, torch.eye(18, dtype=m.dtype), atol=1e-6)
    assert root[:6, 6:].abs().max() == 0  # exactly block-diagonal
    x = torch.randn(18, 5, generator=g, dtype=torch.float64)
    assert torch.allclose(block_diag_matmul(root, x, 6), root @ x, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["activation_svd", "score_aware_svd"])
def test_spectrum_is_the_factorization_eigenvalues(method):
    model, stats = _converted_inputs("gemma3")
    inp = layer_inputs(model, 1, stats[1])
    m = get_method(method)()
    for target in ("k", "v"):
        spectrum = m.spectrum(inp, target)
        evals = m._pca(inp, target)[0]
        assert spectrum.shape == evals.shape and bool((spectrum[:-1] >= spectrum[1:]).all())
        assert torch.allclose(spectrum, evals, rtol=1e-9, atol=1e-12 * float(evals[0]))


def test_attn_refit_converts_deterministically_and_never_ends_worse():
    runs = []
    for _ in range(2):
        ck = tiny_ckpt("gemma3")
        model = build_model(ck)
        rule = {"method": "attn_refit", "rank": 4, "params": {"windows": 5, "heldout": 2, "steps": 30}}
        rec = recipe([{"select": {"layers": "1"}, "k": rule, "v": rule}])
        res, tensors = convert(ck, model, rec, eval_model=False, log=lambda m: None)
        for t in ("k", "v"):
            info = getattr(res.layers[1], t)
            assert info["refit_heldout_loss"] <= info["start_heldout_loss"]
        runs.append(tensors)
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    # the refit moved the factors off the closed-form start on this layer (K or V)
    assert any(
        getattr(res.layers[1], t)["refit_heldout_loss"] < getattr(res.layers[1], t)["start_heldout_loss"]
        for t in ("k", "v")
    )


@pytest.mark.parametrize(
    "name,params,msg",
    [
        ("score_aware_svd", {"offsets": 0}, "offsets"),
        ("attn_refit", {"base": "tucker"}, "base 'tucker'"),
        ("attn_refit", {"windows": 2, "heldout": 2}, "heldout < windows"),
    ],
)
def test_bad_params(name, params, msg):
    with pytest.raises(TPAError, match=msg):
        get_method(name)(params)


def test_budget_by_kl_spends_the_same_bytes_by_measured_effect(monkeypatch):
    import tpa_compress.convert as conv

    seen = {}
    real = conv._kl_weights

    def spy(*a, **kw):
        seen["w"] = real(*a, **kw)
        return seen["w"]

    monkeypatch.setattr(conv, "_kl_weights", spy)
    results = {}
    for by in ("error", "kl"):
        ck = tiny_ckpt("llama")
        model = build_model(ck)
        rule = {"method": "activation_svd", "rank": "budget"}
        rec = recipe([{"select": "all", "k": rule, "v": rule}], budget={"fraction": 0.5, "context": 64, "by": by})
        res, _ = convert(ck, model, rec, eval_model=False, log=lambda m: None)
        results[by] = res
    w = seen["w"]
    assert len(w) == 2 * ck.config.num_layers and all(v > 0 for v in w.values())
    assert len(set(round(v, 12) for v in w.values())) > 1  # measured, not uniform
    # the same byte budget (the sink token's full K/V lies outside it, so both sit a
    # little above 0.5 on this 64-token context), spent to within one step of rank
    r_err, r_kl = (results[b].totals["64"]["ratio"] for b in ("error", "kl"))
    assert abs(r_kl - r_err) < 0.03 and r_kl < 0.55


def test_budget_by_unknown_is_refused():
    with pytest.raises(TPAError, match="budget.by 'fisher' is not valid; valid: error, kl"):
        recipe(
            [{"select": "all", "k": {"method": "activation_svd", "rank": "budget"}}],
            budget={"fraction": 0.5, "by": "fisher"},
        )


def test_budget_kl_windows_must_be_a_positive_integer():
    for bad in (0, -1, 2.5, "4"):
        with pytest.raises(TPAError, match=r"budget.kl_windows: .* is not valid; expected an integer >= 1"):
            recipe(
                [{"select": "all", "k": {"method": "activation_svd", "rank": "budget"}}],
                budget={"fraction": 0.5, "by": "kl", "kl_windows": bad},
            )


def test_kl_weights_share_the_reference_and_measure_each_probe_alone():
    """ranks/kl.py: each probe's KL equals the KL of the model with that projection swapped,
    computed directly from whole logits; a probe equal to the original measures zero (its
    weight floored); the model is left as it was."""
    import copy

    import torch.nn.functional as F

    from tpa_compress.ranks.kl import final_hidden, kl_weights, mean_kls, probe_hidden

    model = build_model(tiny_ckpt("llama")).eval()
    windows = torch.randint(0, model.cfg.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    attn = model.layers[0].self_attn
    same, noisy = copy.deepcopy(attn.k_proj), copy.deepcopy(attn.v_proj)
    with torch.no_grad():
        noisy.weight.add_(0.5 * torch.randn(noisy.weight.shape, generator=torch.Generator().manual_seed(1)))
    before = [p.clone() for p in model.parameters()]
    ref, swapped = final_hidden(model, windows), probe_hidden(model, windows, attn, "v_proj", noisy)
    with torch.no_grad():
        lr = torch.cat([F.log_softmax(model.logits(h).float(), -1) for h in ref])
        lp = torch.cat([F.log_softmax(model.logits(h).float(), -1) for h in swapped])
    want = float((lr.exp() * (lr - lp)).sum(-1).mean())
    assert want > 1e-4 and mean_kls(model, ref, {"v": swapped}, chunk=5)["v"] == pytest.approx(want, rel=1e-5)
    w = kl_weights(model, windows, {"k": (attn, "k_proj", same), "v": (attn, "v_proj", noisy)}, {"k": 0.1, "v": 0.1})
    assert w["v"] == pytest.approx(want / 0.1, rel=1e-5) and w["k"] == pytest.approx(1e-3 * w["v"])
    assert attn.k_proj is not same and attn.v_proj is not noisy
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
