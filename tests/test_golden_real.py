"""CI regression: each shipped recipe on the real Gemma 3 270M must not get worse than
tests/golden/gemma3-270m.yaml (per-layer held-out errors, perplexity, KV ratio)."""

import pytest
import yaml

import golden_values as G

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def base():
    from tpa_compress.load import load_model
    from tpa_compress.models import build_model

    try:
        ckpt = load_model("gemma3-270m")
    except Exception as e:
        pytest.skip(str(e))
    return ckpt, build_model(ckpt)


@pytest.mark.parametrize("name", G.RECIPES)
def test_recipe_does_not_regress(base, name):
    doc = yaml.safe_load(G.GOLDEN.read_text())
    assert doc["sizes"] == G.SIZES, "golden file was made with other sizes; regenerate it"
    assert doc.get("heal_sizes") == G.HEAL_SIZES, "golden file was made with other heal sizes; regenerate it"
    got = G.measure(*base, name)
    print(name, got["perplexity_after"], "KV@32K", got["kv_ratio_32k"])
    assert G.regressions(doc["recipes"][name], got) == []


def test_regression_check_can_fail():
    g = {
        "perplexity_after": {"python-docs": 10.0, "prose": 20.0},
        "kv_ratio_32k": 0.5,
        "heldout_rel_error": {"5.k": 0.1},
    }
    worse = {
        "perplexity_after": {"python-docs": 10.2, "prose": 20.0},
        "kv_ratio_32k": 0.5,
        "heldout_rel_error": {"5.k": 0.2},
    }
    assert len(G.regressions(g, worse)) == 2
    assert G.regressions(g, g) == []
    # a domain that got worse fails even when the other got better
    traded = {**g, "perplexity_after": {"python-docs": 9.0, "prose": 20.5}}
    assert G.regressions(g, traded) == ["perplexity on prose 20.5 > golden 20.0"]
    missing = {**g, "perplexity_after": {"python-docs": 10.0}}
    assert len(G.regressions(g, missing)) == 1


def test_golden_covers_both_domains():
    from tpa_compress.data import eval_domains

    doc = yaml.safe_load(G.GOLDEN.read_text())
    for name, rec in doc["recipes"].items():
        assert list(rec["perplexity_after"]) == list(eval_domains()), name
