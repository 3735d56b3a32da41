"""scripts/corpus: the builder of the bundled text, run on fake source trees of each
domain (reST for python-docs, HTML for prose): selection, cleaning, de-duplication,
the split and the slices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corpus import DOMAINS
from corpus import prose as PR
from corpus import python_docs as PD
from corpus.common import DOC_SEPARATOR, main, split_of


def _docs(text: str) -> list[str]:
    return [d.strip() for d in text.split(DOC_SEPARATOR) if d.strip()]


# --- python-docs ------------------------------------------------------------------

_SECTIONS = ["tutorial", "library", "reference", "howto", "faq", "whatsnew", "distutils"]
_BOILERPLATE = (
    "This shared boilerplate paragraph appears verbatim in every single "
    "document of the fake tree and must be kept only once."
)


def _fake_doc(name: str, i: int) -> str:
    title = f"Fake document {name}"
    lines = [
        f".. _label-{i}:",
        "",
        "*" * len(title),
        title,
        "*" * len(title),
        "",
        ".. index:: single: fake",
        "",
        _BOILERPLATE,
        "",
    ]
    for j in range(12):
        lines.append(
            f"Paragraph {j} of {name} explains :func:`thing_{i}_{j}` in some detail, "
            f"with the number {i * 1000 + j} so that every line is unique."
        )
        lines.append(f"It continues with ``literal_{i}_{j}`` and a :ref:`link <target-{j}>` here.")
        lines.append("")
    lines += ["Example::", "", f"   >>> print({i})", f"   {i}", ""]
    return "\n".join(lines)


@pytest.fixture
def rst_src(tmp_path: Path) -> Path:
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


def _run_rst(src: Path, root: Path) -> dict[str, bytes]:
    out, small = root / "out", root / "small"
    rc = main(
        DOMAINS,
        [
            "python-docs",
            "--src",
            str(src),
            "--out",
            str(out),
            "--small-bytes",
            "6000",
            "--small-out",
            str(small),
            "--package",
            "fake-doc",
            "--version",
            "1.0",
        ],
    )
    assert rc == 0
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def test_python_docs_is_deterministic_and_splits_by_file(rst_src: Path, tmp_path: Path):
    a = _run_rst(rst_src, tmp_path / "a")
    b = _run_rst(rst_src, tmp_path / "b")
    assert set(a) == {
        "out/calib.txt",
        "out/eval.txt",
        "out/manifest.json",
        "small/calib_small.txt",
        "small/eval_small.txt",
    }
    assert a == b

    m = json.loads(a["out/manifest.json"])
    assert m["source"]["version"] == "1.0"
    calib_files = [f["path"] for f in m["sides"]["calib"]["files"]]
    eval_files = [f["path"] for f in m["sides"]["eval"]["files"]]
    assert calib_files and eval_files
    assert not set(calib_files) & set(eval_files)
    assert calib_files == sorted(calib_files) and eval_files == sorted(eval_files)
    for rel in calib_files:
        assert split_of(rel, PD.EVAL_FRACTION) == "calib"
    for rel in eval_files:
        assert split_of(rel, PD.EVAL_FRACTION) == "eval"
    used = set(calib_files) | set(eval_files)
    assert not any(r.startswith(("whatsnew/", "distutils/", "tiny/")) or r.endswith("index.rst.txt") for r in used)
    assert "license.rst.txt" not in used and "glossary.rst.txt" in used

    # Whole documents: each side's text is exactly its documents, in manifest order.
    for side, files in (("calib", calib_files), ("eval", eval_files)):
        docs = _docs(a[f"out/{side}.txt"].decode())
        assert len(docs) == len(files)
        for d, rel in zip(docs, files, strict=True):
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
            calib_files if side == "calib" else eval_files
        )


def test_python_docs_split_is_a_function_of_the_path_alone():
    import hashlib

    rel = "library/os.rst.txt"
    h = int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16) / 2**64
    assert split_of(rel, PD.EVAL_FRACTION) == ("eval" if h < PD.EVAL_FRACTION else "calib")
    sides = {split_of(f"library/m{i}.rst.txt", PD.EVAL_FRACTION) for i in range(200)}
    assert sides == {"calib", "eval"}
    frac = sum(split_of(f"library/m{i}.rst.txt", PD.EVAL_FRACTION) == "eval" for i in range(2000)) / 2000
    assert 0.10 < frac < 0.20


def test_clean_rst_examples():
    src = "\n".join(
        [
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
        ]
    )
    assert PD.clean_rst(src) == "\n".join(
        [
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
        ]
    )


# --- prose --------------------------------------------------------------------------

_BOILER = "This sidebar paragraph is repeated verbatim on every page and must be kept only once."


def _page(name: str, i: int) -> str:
    paras = "".join(
        f'<div class="para">\n\t\tParagraph {j} of {name} says <code class="command">cmd{i}</code> '
        f"&amp; more, number {i * 100 + j}, so that each line is unique.\n\t</div>"
        for j in range(12)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><html><head><title>T</title></head><body>'
        '<div id="banner"><a href="x"><span class="text">Download the ebook</span></a></div>'
        '<p id="title"><a class="left" href="y"><img alt="Product Site" src="i.png" /></a></p>'
        '<ul class="docnav top"><li class="previous"><a href="p"><strong>Prev</strong></a></li></ul>'
        f'<div class="section"><div class="titlepage"><h2 class="title">1.{i}. Page {name}</h2></div>'
        '<a id="id-1" class="indexterm"></a>'
        '<div class="toc"><dl class="toc"><dt>1.1. Contents</dt></dl></div>'
        f"{paras}"
        '<div class="itemizedlist"><ul><li class="listitem"><div class="para">first item</div></li>'
        '<li class="listitem"><div class="para">second item</div></li></ul></div>'
        '<pre class="screen"><code class="computeroutput">$ </code><strong>apt update</strong></pre>'
        '<div class="figure"><p class="title"><strong>Figure 1.1. A screenshot</strong></p></div>'
        '<div class="table"><table><tr><td>cell</td></tr></table></div>'
        '<div class="sidebar"><div class="titlepage"><p class="title"><strong><span class="emphasis">'
        f'<em>TIP</em></span> Useful</strong></p></div><div class="para">{_BOILER}</div></div>'
        '</div><ul class="docnav"><li class="next"><a href="n"><strong>Next</strong></a></li></ul>'
        "</body></html>"
    )


def test_extract_keeps_prose_only():
    text = PR.extract(_page("apt", 3))
    paras = text.split("\n\n")
    assert paras[0] == "1.3. Page apt"
    assert paras[1] == "Paragraph 0 of apt says cmd3 & more, number 300, so that each line is unique."
    assert "- first item" in paras and "- second item" in paras
    assert "TIP Useful" in paras and _BOILER in paras
    for gone in (
        "Download the ebook",
        "Prev",
        "Next",
        "Contents",
        "apt update",
        "Figure",
        "cell",
        "Product Site",
        "<",
        "&amp;",
        "\t",
    ):
        assert gone not in text, gone


@pytest.fixture
def html_src(tmp_path: Path) -> Path:
    src = tmp_path / "en-US"
    (src / "Common_Content").mkdir(parents=True)
    (src / "Common_Content" / "x.html").write_text(_page("common", 0), encoding="utf-8")
    for i in range(40):
        (src / f"sect.page{i}.html").write_text(_page(f"page{i}", i), encoding="utf-8")
    (src / "index.html").write_text(_page("index", 99), encoding="utf-8")
    (src / "sect.tiny.html").write_text("<html><body><div class='para'>hi</div></body></html>", encoding="utf-8")
    return src


def _run_html(src: Path, root: Path) -> dict[str, bytes]:
    rc = main(
        DOMAINS,
        [
            "prose",
            "--src",
            str(src),
            "--out",
            str(root / "out"),
            "--small-bytes",
            "9000",
            "--small-out",
            str(root / "small"),
            "--package",
            "fake",
            "--version",
            "1",
        ],
    )
    assert rc == 0
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prose_is_deterministic_and_splits_by_page(html_src: Path, tmp_path: Path):
    a, b = _run_html(html_src, tmp_path / "a"), _run_html(html_src, tmp_path / "b")
    assert a == b
    assert set(a) == {
        "out/prose_calib.txt",
        "out/prose_eval.txt",
        "out/manifest.json",
        "small/prose_calib_small.txt",
        "small/prose_eval_small.txt",
    }
    m = json.loads(a["out/manifest.json"])
    calib = [f["path"] for f in m["sides"]["calib"]["files"]]
    ev = [f["path"] for f in m["sides"]["eval"]["files"]]
    assert calib and ev and not set(calib) & set(ev)
    assert all(split_of(r, PR.EVAL_FRACTION) == "calib" for r in calib)
    assert all(split_of(r, PR.EVAL_FRACTION) == "eval" for r in ev)
    assert "index.html" not in calib + ev and "sect.tiny.html" not in calib + ev
    assert not any("common" in r.lower() for r in calib + ev)
    full = a["out/prose_calib.txt"].decode() + a["out/prose_eval.txt"].decode()
    assert full.count(_BOILER) == 1  # de-duplicated across pages
    for side, files in (("calib", calib), ("eval", ev)):
        docs = a[f"out/prose_{side}.txt"].decode().strip().split(DOC_SEPARATOR)
        assert [d.split("\n", 1)[0].split(" Page ")[1] for d in docs] == [r[5:-5] for r in files]
        small = a[f"small/prose_{side}_small.txt"]
        assert 0 < len(small) <= 9000
        assert set(small.decode().strip().split(DOC_SEPARATOR)) <= set(docs)


def test_prose_split_is_a_function_of_the_name():
    import hashlib

    rel = "sect.apt-get.html"
    h = int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16) / 2**64
    assert split_of(rel, PR.EVAL_FRACTION) == ("eval" if h < PR.EVAL_FRACTION else "calib")
    frac = sum(split_of(f"sect.p{i}.html", PR.EVAL_FRACTION) == "eval" for i in range(2000)) / 2000
    assert abs(frac - PR.EVAL_FRACTION) < 0.05
