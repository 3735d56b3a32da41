"""Bundled text for calibration and evaluation, and a checked text-file reader.

``calib_small.txt`` / ``eval_small.txt`` are disjoint slices (whole documents) of a
file-level split of the Python 3.11 documentation (Debian ``python3.11-doc``, PSF
license); see README.md next to this file and ``tpa_compress.data.prepare``.
"""

from __future__ import annotations

from pathlib import Path

from tpa_compress.errors import TPAError

DATA_DIR = Path(__file__).resolve().parent
CALIB_SMALL = DATA_DIR / "calib_small.txt"
EVAL_SMALL = DATA_DIR / "eval_small.txt"

__all__ = ["DATA_DIR", "default_calib_files", "default_eval_files", "read_texts"]


def default_eval_files() -> list[Path]:
    """The bundled evaluation text (never used for calibration)."""
    return [EVAL_SMALL]


def default_calib_files() -> list[Path]:
    """The bundled calibration text (disjoint from the evaluation text)."""
    return [CALIB_SMALL]


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
        raise TPAError(f"{path}: not UTF-8 text (invalid byte at offset {e.start}); "
                       "expected a UTF-8 text file") from e
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
