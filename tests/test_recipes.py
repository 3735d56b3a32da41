"""Every shipped recipe parses and applies to both families."""

from pathlib import Path

import pytest

from tiny import tiny_config
from tpa_compress.errors import TPAError
from tpa_compress.load.ckpt import variant_config
from tpa_compress.recipe import load_recipe, validate_for_model

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipe_validates(path):
    rec = load_recipe(path)
    smollm = tiny_config(
        "llama", hidden_size=576, num_heads=9, num_kv_heads=3, head_dim=64, num_layers=30, intermediate_size=1536
    )
    for cfg in (variant_config("270m"), variant_config("1b"), smollm):
        validate_for_model(rec, cfg)
        assert any(rec.rules_for(cfg, i) for i in range(cfg.num_layers))


def test_recipe_file_errors(tmp_path):
    with pytest.raises(TPAError, match="recipe file not found"):
        load_recipe(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [\n")
    with pytest.raises(TPAError, match=r"bad.yaml:.*invalid YAML"):
        load_recipe(bad)
    bad.write_text("layer:\n  - select: all\n")
    with pytest.raises(TPAError, match="unknown key 'layer'; valid: .*layers"):
        load_recipe(bad)
    bad.write_bytes(b"seed: 0\ndescription: \xd0\xff\n")
    with pytest.raises(TPAError, match=r"bad.yaml: not UTF-8 text \(byte 21\)"):
        load_recipe(bad)


@pytest.mark.parametrize(
    "select, message",
    [
        ('{layers: "50-60"}', r"layers\[0\]\.select\.layers names layer 50\.\.60; this model has 18 layers"),
        ('{layers: "0-99"}', r"names layer 18\.\.99; this model has 18 layers \(valid: 0\.\.17\)"),
        ('{pattern: "9?"}', r"layers\[0\]\.select\.pattern '9\?' matches no layer"),
    ],
)
def test_selector_that_misses_the_model_is_an_error(tmp_path, select, message):
    f = tmp_path / "r.yaml"
    f.write_text(f"layers:\n  - select: {select}\n    v: {{method: activation_svd, rank: 64}}\n")
    with pytest.raises(TPAError, match=message):
        validate_for_model(load_recipe(f), variant_config("270m"))
