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
from tpa_compress.save.hf import converted_config, modeling_source

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


def _classes(src: str) -> dict[str, ast.ClassDef]:
    return {n.name: n for n in ast.parse(src).body if isinstance(n, ast.ClassDef)}


def test_the_shipped_modeling_file_names_no_family():
    """save/modeling_tpa.py is family-independent: it imports no transformers class and
    names no family's class or model_type (the writer appends those)."""
    tree = ast.parse((PACKAGE / "save" / "modeling_tpa.py").read_text(encoding="utf-8"))
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imports |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imports == {"__future__", "torch"}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    names |= set(_classes(ast.unparse(tree)))
    for fam in all_families():
        assert not {fam.hf_class, fam.tpa_model_type, f"{fam.tpa_class_prefix}Config"} & names, fam.name


def test_every_family_gets_its_classes_rendered():
    """A converted folder's modeling_tpa.py: the shipped file, then the family's pair of
    transformers classes, named as the writer names them in config.json; the same bytes
    every time."""
    shipped = (PACKAGE / "save" / "modeling_tpa.py").read_text(encoding="utf-8")
    for fam in all_families():
        src = modeling_source(fam)
        assert src.startswith(shipped) and src == modeling_source(fam)
        classes = _classes(src)
        config, model = classes[f"{fam.tpa_class_prefix}Config"], classes[f"{fam.tpa_class_prefix}ForCausalLM"]
        assigns = {t.id: a.value for a in config.body if isinstance(a, ast.Assign) for t in a.targets}
        assert assigns["model_type"].value == fam.tpa_model_type
        assert [ast.unparse(b) for b in config.bases] == [f"transformers.{fam.hf_class}.config_class"]
        assert [ast.unparse(b) for b in model.bases] == ["_TPAModel", f"transformers.{fam.hf_class}"]
        others = {f.tpa_class_prefix for f in all_families()} - {fam.tpa_class_prefix}
        assert not [c for c in classes if any(c.startswith(o) for o in others)]  # only its own family
        d = converted_config(tiny_config(fam.name, **({"rope_theta": 1e4} if fam.name != "gemma3" else {})))
        assert d["auto_map"] == {
            "AutoConfig": f"modeling_tpa.{fam.tpa_class_prefix}Config",
            "AutoModelForCausalLM": f"modeling_tpa.{fam.tpa_class_prefix}ForCausalLM",
        }


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
