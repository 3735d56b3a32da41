"""Bundled calibration/evaluation text: the committed slices and the checked reader
(the builder that makes them: tests/test_corpus.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus.common import DEDUP_MIN_CHARS, DOC_SEPARATOR
from tpa_compress.data import (
    DATA_DIR,
    calib_domains,
    default_calib_files,
    default_eval_files,
    eval_domains,
    read_texts,
)
from tpa_compress.errors import TPAError


def _docs(text: str) -> list[str]:
    return [d.strip() for d in text.split(DOC_SEPARATOR) if d.strip()]


def _long_lines(text: str, n: int = 80) -> set[str]:
    return {s for s in (ln.strip() for ln in text.splitlines()) if len(s) >= n}


# --- committed slices ---------------------------------------------------------------


def test_default_files_are_the_committed_slices():
    assert list(eval_domains()) == list(calib_domains()) == ["python-docs", "prose"]
    assert eval_domains() == {
        "python-docs": [DATA_DIR / "eval_small.txt"],
        "prose": [DATA_DIR / "prose_eval_small.txt"],
    }
    assert calib_domains() == {
        "python-docs": [DATA_DIR / "calib_small.txt"],
        "prose": [DATA_DIR / "prose_calib_small.txt"],
    }
    assert default_calib_files() == [DATA_DIR / "calib_small.txt", DATA_DIR / "prose_calib_small.txt"]
    assert default_eval_files() == [DATA_DIR / "eval_small.txt"]
    for p in default_calib_files() + [f for fs in eval_domains().values() for f in fs]:
        assert p.is_file(), p
        size = p.stat().st_size
        assert 200_000 <= size <= 450_000, (p, size)
        text = read_texts([p])
        assert text.strip()
        assert len(_docs(text)) >= 5


def test_slices_are_disjoint():
    """Across both domains: no document, no first line, no 60+ char line (with a letter
    or digit: the de-duplication's rule) in a calibration slice and an evaluation slice."""
    calib = read_texts(default_calib_files())
    ev = read_texts([f for fs in eval_domains().values() for f in fs])
    calib_docs, eval_docs = set(_docs(calib)), set(_docs(ev))
    assert not calib_docs & eval_docs
    assert not {d.split("\n", 1)[0] for d in calib_docs} & {d.split("\n", 1)[0] for d in eval_docs}
    key = lambda t: {s for s in _long_lines(t, DEDUP_MIN_CHARS) if any(c.isalnum() for c in s)}  # noqa: E731
    shared = key(calib) & key(ev)
    assert not shared, sorted(shared)[:3]


def test_prose_slices_are_clean_prose():
    text = read_texts(calib_domains()["prose"] + eval_domains()["prose"])
    import re

    assert not re.search(r"</?(div|span|a|p|code|em|strong|li|ul|pre|h\d)[ >]", text)
    for leftover in ("&amp;", "&nbsp;", "&lt;", "Download the ebook", "Table of Contents"):
        assert leftover not in text, leftover
    lines = {ln.strip() for ln in text.splitlines()}
    assert not lines & {"Prev", "Next", "Up", "Home"}  # navigation
    assert "\n\n\n\n" not in text
    assert "The Debian" in text and "package" in text


def test_slices_have_no_markup_leftovers():
    text = read_texts(calib_domains()["python-docs"] + eval_domains()["python-docs"])
    assert ".. index::" not in text
    assert ".. toctree::" not in text
    assert ":func:`" not in text and ":class:`" not in text
    assert "\n\n\n\n" not in text  # documents: one blank line inside, two between


def test_readme_states_source_and_hashes():
    import hashlib

    readme = (DATA_DIR / "README.md").read_text(encoding="utf-8")
    assert "python3.11-doc" in readme and "usr/share/doc/python3.11/html/_sources" in readme
    assert "PSF" in readme and "scripts/fetch_python_docs.sh" in readme
    assert "debian-handbook" in readme and "CC-BY-SA-3.0" in readme and "scripts/fetch_prose.sh" in readme
    for p in default_calib_files() + [f for fs in eval_domains().values() for f in fs]:
        assert hashlib.sha256(p.read_bytes()).hexdigest() in readme, f"README hash for {p.name} is stale"


# --- read_texts ---------------------------------------------------------------------


def test_read_texts_concatenates(tmp_path: Path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("alpha\n", encoding="utf-8")
    b.write_text("\ufeffbeta", encoding="utf-8")
    assert read_texts([a, str(b)]) == "alpha\n\n\nbeta"
    assert read_texts([a]) == "alpha\n"


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "blank", "binary", "nul"])
def test_read_texts_errors(tmp_path: Path, kind: str):
    p = tmp_path / f"{kind}.txt"
    if kind == "directory":
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "blank":
        p.write_bytes(b"  \n\n")
    elif kind == "binary":
        p.write_bytes(b"ok\n\xff\xfe\x80 not utf-8")
    elif kind == "nul":
        p.write_bytes(b"abc\x00def")
    good = tmp_path / "good.txt"
    good.write_text("fine\n", encoding="utf-8")
    with pytest.raises(TPAError) as ei:
        read_texts([good, p])
    msg = str(ei.value)
    assert str(p) in msg
    assert "\n" not in msg
    expect = {
        "missing": "not found",
        "directory": "directory",
        "empty": "empty",
        "blank": "empty",
        "binary": "UTF-8",
        "nul": "binary",
    }[kind]
    assert expect in msg


def test_read_texts_needs_a_file():
    with pytest.raises(TPAError):
        read_texts([])
