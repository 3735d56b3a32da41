"""Bundled calibration/evaluation text and the split that produces it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tpa_compress.data import (
    DATA_DIR,
    calib_domains,
    default_calib_files,
    default_eval_files,
    eval_domains,
    read_texts,
)
from tpa_compress.data import prepare as P
from tpa_compress.errors import TPAError


def _docs(text: str) -> list[str]:
    return [d.strip() for d in text.split(P.DOC_SEPARATOR) if d.strip()]


def _long_lines(text: str, n: int = 80) -> set[str]:
    return {s for s in (ln.strip() for ln in text.splitlines()) if len(s) >= n}


# --- committed slices ---------------------------------------------------------------


def test_default_files_are_the_committed_slices():
    assert list(eval_domains()) == list(calib_domains()) == ["python-docs", "prose"]
    assert eval_domains() == {"python-docs": [DATA_DIR / "eval_small.txt"],
                              "prose": [DATA_DIR / "prose_eval_small.txt"]}
    assert calib_domains() == {"python-docs": [DATA_DIR / "calib_small.txt"],
                               "prose": [DATA_DIR / "prose_calib_small.txt"]}
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
    key = lambda t: {s for s in _long_lines(t, P.DEDUP_MIN_CHARS) if any(c.isalnum() for c in s)}  # noqa: E731
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


# --- split determinism on a fake source tree ----------------------------------------

_SECTIONS = ["tutorial", "library", "reference", "howto", "faq", "whatsnew", "distutils"]
_BOILERPLATE = ("This shared boilerplate paragraph appears verbatim in every single "
                "document of the fake tree and must be kept only once.")


def _fake_doc(name: str, i: int) -> str:
    title = f"Fake document {name}"
    lines = [".. _label-%d:" % i, "", "*" * len(title), title, "*" * len(title), "",
             ".. index:: single: fake", "", _BOILERPLATE, ""]
    for j in range(12):
        lines.append(f"Paragraph {j} of {name} explains :func:`thing_{i}_{j}` in some detail, "
                     f"with the number {i * 1000 + j} so that every line is unique.")
        lines.append(f"It continues with ``literal_{i}_{j}`` and a :ref:`link <target-{j}>` here.")
        lines.append("")
    lines += ["Example::", "", f"   >>> print({i})", f"   {i}", ""]
    return "\n".join(lines)


@pytest.fixture
def fake_src(tmp_path: Path) -> Path:
    src = tmp_path / "_sources"
    i = 0
    for sec in _SECTIONS:
        for k in range(8):
            p = src / sec / f"page{k}.rst.txt"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(_fake_doc(f"{sec}/page{k}", i), encoding="utf-8")
            i += 1
        (src / sec / "index.rst.txt").write_text(".. toctree::\n\n   page0\n", encoding="utf-8")
    (src / "license.rst.txt").write_text(_fake_doc("license", 999), encoding="utf-8")
    (src / "glossary.rst.txt").write_text(_fake_doc("glossary", 998), encoding="utf-8")
    (src / "tiny").mkdir()
    (src / "tiny" / "x.rst.txt").write_text("hi\n", encoding="utf-8")
    return src


def _run(src: Path, root: Path) -> dict[str, bytes]:
    out, small = root / "out", root / "small"
    rc = P.main(["--src", str(src), "--out", str(out), "--small-bytes", "6000",
                 "--small-out", str(small), "--package", "fake-doc", "--version", "1.0"])
    assert rc == 0
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def test_prepare_is_deterministic_and_splits_by_file(fake_src: Path, tmp_path: Path):
    a = _run(fake_src, tmp_path / "a")
    b = _run(fake_src, tmp_path / "b")
    assert set(a) == {"out/calib.txt", "out/eval.txt", "out/manifest.json",
                      "small/calib_small.txt", "small/eval_small.txt"}
    assert a == b

    m = json.loads(a["out/manifest.json"])
    assert m["source"]["version"] == "1.0"
    calib_files = [f["path"] for f in m["sides"]["calib"]["files"]]
    eval_files = [f["path"] for f in m["sides"]["eval"]["files"]]
    assert calib_files and eval_files
    assert not set(calib_files) & set(eval_files)
    assert calib_files == sorted(calib_files) and eval_files == sorted(eval_files)
    for rel in calib_files:
        assert P.split_of(rel) == "calib"
    for rel in eval_files:
        assert P.split_of(rel) == "eval"
    used = set(calib_files) | set(eval_files)
    assert not any(r.startswith(("whatsnew/", "distutils/", "tiny/")) or r.endswith("index.rst.txt") for r in used)
    assert "license.rst.txt" not in used and "glossary.rst.txt" in used

    # Whole documents: each side's text is exactly its documents, in manifest order.
    for side, files in (("calib", calib_files), ("eval", eval_files)):
        docs = _docs(a[f"out/{side}.txt"].decode())
        assert len(docs) == len(files)
        for d, rel in zip(docs, files):
            assert d.split("\n", 1)[0] == f"Fake document {rel.removesuffix('.rst.txt')}"
        assert m["sides"][side]["bytes"] == len(a[f"out/{side}.txt"])

    # Boilerplate kept once, in the first document (sorted path order) only.
    full = a["out/calib.txt"].decode() + a["out/eval.txt"].decode()
    assert full.count(_BOILERPLATE) == 1

    # Markup cleaned.
    assert ":func:" not in full and ".. index::" not in full and "***" not in full
    assert "``" not in full and "Example:\n" in full and ":ref:" not in full

    # Slices: whole documents of their own side, within budget.
    for side in ("calib", "eval"):
        small = a[f"small/{side}_small.txt"]
        assert 0 < len(small) <= 6000
        assert set(_docs(small.decode())) <= set(_docs(a[f"out/{side}.txt"].decode()))
        assert m["small"][side]["files"] and set(m["small"][side]["files"]) <= set(
            calib_files if side == "calib" else eval_files)


def test_split_of_is_a_function_of_the_path_alone():
    import hashlib

    rel = "library/os.rst.txt"
    h = int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16) / 2**64
    assert P.split_of(rel) == ("eval" if h < P.EVAL_FRACTION else "calib")
    sides = {P.split_of(f"library/m{i}.rst.txt") for i in range(200)}
    assert sides == {"calib", "eval"}
    frac = sum(P.split_of(f"library/m{i}.rst.txt") == "eval" for i in range(2000)) / 2000
    assert 0.10 < frac < 0.20


def test_clean_rst_examples():
    src = "\n".join([
        ".. _target:",
        "",
        "Title",
        "=====",
        "",
        ".. function:: spam(x, y=1)",
        "   :noindex:",
        "",
        "   Return :func:`~os.path.join` of ``x`` and see :ref:`the docs",
        "   <somewhere>` or `Python <https://python.org>`_.",
        "",
        "   .. versionadded:: 3.2",
        "",
        ".. index:: single: spam",
        "   pair: eggs",
        "",
        ".. a comment",
        "   continued",
        "",
        "* Example::",
        "",
        "     x = :func:`kept`",
        "",
        "Done.",
    ])
    assert P.clean_rst(src) == "\n".join([
        "Title",
        "",
        "spam(x, y=1)",
        "",
        "   Return join of `x` and see the docs or Python.",
        "",
        "   New in version 3.2.",
        "",
        "* Example:",
        "",
        "     x = :func:`kept`",
        "",
        "Done.",
    ])


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
    expect = {"missing": "not found", "directory": "directory", "empty": "empty", "blank": "empty",
              "binary": "UTF-8", "nul": "binary"}[kind]
    assert expect in msg


def test_read_texts_needs_a_file():
    with pytest.raises(TPAError):
        read_texts([])
