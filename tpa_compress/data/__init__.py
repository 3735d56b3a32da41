"""Bundled text for calibration and evaluation, in named domains, and a checked reader.

Each domain is split by whole document into a calibration and an evaluation slice that
share no document and no line of 60+ characters (README.md next to this file):

- ``python-docs``: ``calib_small.txt`` / ``eval_small.txt``, the Python 3.11
  documentation (Debian ``python3.11-doc``, PSF license);
- ``prose``: ``prose_calib_small.txt`` / ``prose_eval_small.txt``, English prose from The
  Debian Administrator's Handbook (Debian ``debian-handbook``, GPL-2.0+ or CC-BY-SA-3.0).

Both are built by ``scripts/build_corpus.py`` (``scripts/corpus/``, one file per domain).

The default calibration (a recipe's ``calibration.files: [default]``) is both domains'
calibration slices; quality is reported per domain of ``eval_domains()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tpa_compress.errors import TPAError

DATA_DIR = Path(__file__).resolve().parent
CALIB_SMALL = DATA_DIR / "calib_small.txt"
EVAL_SMALL = DATA_DIR / "eval_small.txt"
PROSE_CALIB_SMALL = DATA_DIR / "prose_calib_small.txt"
PROSE_EVAL_SMALL = DATA_DIR / "prose_eval_small.txt"


@dataclass(frozen=True)
class Domain:
    calib: tuple[Path, ...]
    eval: tuple[Path, ...]


# Order matters: reports list domains in this order, and calibration windows alternate
# between the domains' files in this order.
DOMAINS: dict[str, Domain] = {
    "python-docs": Domain((CALIB_SMALL,), (EVAL_SMALL,)),
    "prose": Domain((PROSE_CALIB_SMALL,), (PROSE_EVAL_SMALL,)),
}

__all__ = [
    "DATA_DIR",
    "DOMAINS",
    "calib_domains",
    "default_calib_files",
    "default_eval_files",
    "eval_domains",
    "eval_sets",
    "read_texts",
]


def eval_domains() -> dict[str, list[Path]]:
    """The bundled evaluation slices by domain (never used for calibration)."""
    return {name: list(d.eval) for name, d in DOMAINS.items()}


def calib_domains() -> dict[str, list[Path]]:
    """The bundled calibration slices by domain (disjoint from every evaluation slice)."""
    return {name: list(d.calib) for name, d in DOMAINS.items()}


def eval_sets(files: list[str | Path] | None) -> dict[str, list[Path]]:
    """What a quality report scores, by name: every bundled domain (`eval_domains()`) when
    `files` is empty or None, else the given files as one text, named by their file names."""
    if not files:
        return eval_domains()
    paths = [Path(f) for f in files]
    return {", ".join(p.name for p in paths): paths}


def default_eval_files() -> list[Path]:
    """The ``python-docs`` evaluation slice alone (for callers from before the domains;
    commands that report quality evaluate each domain of `eval_domains()`)."""
    return [EVAL_SMALL]


def default_calib_files() -> list[Path]:
    """Every domain's calibration slice, in `DOMAINS` order. Cut them into windows
    per file, alternating (`evaluate.perplexity.interleaved_windows`), not as one stream:
    a budget smaller than the first file would otherwise see one domain only."""
    return [p for d in DOMAINS.values() for p in d.calib]


def _read_one(path: Path) -> str:
    if not path.exists():
        raise TPAError(f"{path}: text file not found")
    if path.is_dir():
        raise TPAError(f"{path}: is a directory; pass UTF-8 text files")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TPAError(f"{path}: cannot read ({e.strerror or type(e).__name__})") from e
    if b"\x00" in data:
        raise TPAError(f"{path}: contains NUL bytes; expected a UTF-8 text file, got binary data")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TPAError(f"{path}: not UTF-8 text (invalid byte at offset {e.start}); expected a UTF-8 text file") from e
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise TPAError(f"{path}: text file is empty")
    return text


def read_texts(paths: list[str | Path]) -> str:
    """Read UTF-8 text files and concatenate them, separated by a blank line.

    Raises TPAError (one line, naming the file) for a missing file, a directory, an
    empty (or whitespace-only) file, binary data, or content that is not UTF-8.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise TPAError("no text files given")
    return "\n\n".join(_read_one(Path(p)) for p in paths)
