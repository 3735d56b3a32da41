"""Model families are registered objects (models/family.py): the rest of the package asks
the family, never compares its name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from tiny import tiny_config
from tpa_compress.config import weight_names
from tpa_compress.errors import TPAError
from tpa_compress.models import Transformer
from tpa_compress.models.family import FAMILIES, all_families, register
from tpa_compress.models.llama import Llama, LlamaBlock

PACKAGE = Path(__file__).resolve().parents[1] / "tpa_compress"


def _family_name_tests(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """`x.family == ...`, `x.family in ...` and the like in one source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Attribute) and s.attr == "family" for s in sides):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_family_name_comparisons_outside_models():
    hits = [h for p in sorted(PACKAGE.rglob("*.py")) if "models" not in p.parts for h in _family_name_tests(p)]
    # two configs of the same architecture: a comparison of configs, not a branch on a family
    allowed = {"tpa_compress/evaluate/validate.py"}
    assert [h for h in hits if h.split(":")[0] not in allowed] == []


def test_the_finder_sees_a_family_branch(tmp_path):
    f = tmp_path / "x.py"
    f.write_text('def f(cfg):\n    a = cfg.family == "gemma3"\n    return a or cfg.family in ("llama",)\n')
    assert _family_name_tests(f, tmp_path) == ["x.py:2", "x.py:3"]


def test_every_family_has_its_classes_in_modeling_tpa():
    """A converted folder carries save/modeling_tpa.py verbatim: each family's pair of
    transformers classes must be there, named as the writer names them in config.json."""
    tree = ast.parse((PACKAGE / "save" / "modeling_tpa.py").read_text(encoding="utf-8"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for fam in all_families():
        config, model = classes.get(f"{fam.tpa_class_prefix}Config"), classes.get(f"{fam.tpa_class_prefix}ForCausalLM")
        assert config is not None and model is not None, fam.name
        assigns = {t.id: a.value.value for a in config.body if isinstance(a, ast.Assign) for t in a.targets}
        assert assigns.get("model_type") == fam.tpa_model_type
        assert [b.id for b in model.bases] == ["_TPAModel", fam.hf_class]


def test_unknown_family_is_refused_naming_the_supported():
    with pytest.raises(TPAError, match=r"unknown architecture 'mistral'; supported: gemma3, llama, qwen2"):
        tiny_config("mistral", rope_theta=10_000.0)


@pytest.fixture
def toy_family():
    class ToyBlock(LlamaBlock):
        pass

    @register("toy")
    class Toy(Llama):
        block = ToyBlock
        gelu = True
        scale_embeddings = True
        zero_centered_norms = True

    yield Toy
    del FAMILIES["toy"]


def test_a_new_family_is_its_registered_object(toy_family):
    """What a family declares is what the skeleton builds, with no other file touched."""
    cfg = tiny_config("toy")
    assert cfg.family_spec.name == "toy"
    with torch.device("meta"):
        model = Transformer(cfg)
    assert type(model.layers[0]).__name__ == "ToyBlock"
    assert model.layers[0].mlp.gelu and model.norm.offset == 1.0
    assert model.embed_scale == cfg.hidden_size**0.5
    assert weight_names(cfg) == weight_names(tiny_config("llama"))
