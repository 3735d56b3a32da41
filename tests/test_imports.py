"""No import circles in tpa_compress: a static walk of every import statement (those inside
functions too: a lazy import still ties two modules together), and each command module
imported first in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tpa_compress"

# Circles that other branches are removing (runtime/ and load/ are being reorganised);
# each entry must still be a circle, so one that is gone fails here until it is deleted.
KNOWN_CIRCLES = [
    {"tpa_compress.runtime.cache", "tpa_compress.runtime.grouped_cache"},
    {"tpa_compress.load.ckpt", "tpa_compress.load.gguf", "tpa_compress.load.hf", "tpa_compress.load.source"},
]
COMMAND_MODULES = [
    "tpa_compress.cli",
    "tpa_compress.analyze.cli",
    "tpa_compress.evaluate.validate_cli",
    "tpa_compress.runtime.cli",
]


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package) for every module under root/tpa_compress."""
    mods = {}
    for path in sorted((root / "tpa_compress").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the tpa_compress modules it imports anywhere in its source. ``from .x import
    y`` counts as an import of ``x.y`` when that is a module, else of ``x``."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:
                    sub = f"{module}.{a.name}"
                    targets.add(sub if sub in mods else module)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_new_import_circles():
    found = circles(import_graph())
    new = [sorted(c) for c in found if c not in KNOWN_CIRCLES]
    assert not new, f"import circles: {new}"
    gone = [sorted(c) for c in KNOWN_CIRCLES if c not in found]
    assert not gone, f"no longer circles, delete from KNOWN_CIRCLES: {gone}"


def test_the_command_modules_do_not_import_the_app():
    graph = import_graph()
    for name in COMMAND_MODULES[1:3]:
        assert "tpa_compress.cli" not in graph[name], name


def test_circle_finder_finds_a_lazy_circle(tmp_path: Path):
    pkg = tmp_path / "tpa_compress"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "app.py").write_text("def f():\n    from .sub.cmd import g\n")
    (pkg / "sub" / "cmd.py").write_text("from ..app import f\n")
    (pkg / "helpers.py").write_text("import tpa_compress.sub\n")
    graph = import_graph(tmp_path)
    assert graph["tpa_compress.app"] == {"tpa_compress.sub.cmd"}
    assert graph["tpa_compress.sub.cmd"] == {"tpa_compress.app"}
    assert graph["tpa_compress.helpers"] == {"tpa_compress.sub"}
    assert circles(graph) == [{"tpa_compress.app", "tpa_compress.sub.cmd"}]


@pytest.mark.interpreter
@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_command_module_imports_first_in_a_fresh_interpreter(module):
    r = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.interpreter
def test_building_and_decoding_on_the_cpu_imports_no_torch_compile():
    """Building a model (on the meta device, then its weights) and an uncompiled decode import
    neither dynamo nor inductor, each a second or more of start-up (nn.Embedding's random init
    on the meta device reached dynamo through torch._refs)."""
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from test_runtime import tiny_model\n"
        "from tpa_compress.runtime import Runner, SamplingParams\n"
        "_, model = tiny_model('gemma3')\n"
        "r = Runner(model, 1, 16)\n"
        "r.generate([[1, 2, 3]], 4, SamplingParams())\n"
        "print(sorted(m for m in ('torch._dynamo', 'torch._inductor') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
