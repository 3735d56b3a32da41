"""scripts/prepare_prose.py: prose extraction from the handbook's HTML, and the split."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def P():
    spec = importlib.util.spec_from_file_location("prepare_prose", ROOT / "scripts" / "prepare_prose.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


_BOILER = "This sidebar paragraph is repeated verbatim on every page and must be kept only once."


def _page(name: str, i: int) -> str:
    paras = "".join(f'<div class="para">\n\t\tParagraph {j} of {name} says <code class="command">cmd{i}</code> '
                    f'&amp; more, number {i * 100 + j}, so that each line is unique.\n\t</div>'
                    for j in range(12))
    return (
        '<?xml version="1.0" encoding="UTF-8"?><html><head><title>T</title></head><body>'
        '<div id="banner"><a href="x"><span class="text">Download the ebook</span></a></div>'
        '<p id="title"><a class="left" href="y"><img alt="Product Site" src="i.png" /></a></p>'
        '<ul class="docnav top"><li class="previous"><a href="p"><strong>Prev</strong></a></li></ul>'
        f'<div class="section"><div class="titlepage"><h2 class="title">1.{i}. Page {name}</h2></div>'
        '<a id="id-1" class="indexterm"></a>'
        '<div class="toc"><dl class="toc"><dt>1.1. Contents</dt></dl></div>'
        f'{paras}'
        '<div class="itemizedlist"><ul><li class="listitem"><div class="para">first item</div></li>'
        '<li class="listitem"><div class="para">second item</div></li></ul></div>'
        '<pre class="screen"><code class="computeroutput">$ </code><strong>apt update</strong></pre>'
        '<div class="figure"><p class="title"><strong>Figure 1.1. A screenshot</strong></p></div>'
        '<div class="table"><table><tr><td>cell</td></tr></table></div>'
        '<div class="sidebar"><div class="titlepage"><p class="title"><strong><span class="emphasis">'
        f'<em>TIP</em></span> Useful</strong></p></div><div class="para">{_BOILER}</div></div>'
        '</div><ul class="docnav"><li class="next"><a href="n"><strong>Next</strong></a></li></ul>'
        '</body></html>')


def test_extract_keeps_prose_only(P):
    text = P.extract(_page("apt", 3))
    paras = text.split("\n\n")
    assert paras[0] == "1.3. Page apt"
    assert paras[1] == "Paragraph 0 of apt says cmd3 & more, number 300, so that each line is unique."
    assert "- first item" in paras and "- second item" in paras
    assert "TIP Useful" in paras and _BOILER in paras
    for gone in ("Download the ebook", "Prev", "Next", "Contents", "apt update", "Figure", "cell",
                 "Product Site", "<", "&amp;", "\t"):
        assert gone not in text, gone


@pytest.fixture
def fake_src(tmp_path: Path) -> Path:
    src = tmp_path / "en-US"
    (src / "Common_Content").mkdir(parents=True)
    (src / "Common_Content" / "x.html").write_text(_page("common", 0), encoding="utf-8")
    for i in range(40):
        (src / f"sect.page{i}.html").write_text(_page(f"page{i}", i), encoding="utf-8")
    (src / "index.html").write_text(_page("index", 99), encoding="utf-8")
    (src / "sect.tiny.html").write_text("<html><body><div class='para'>hi</div></body></html>", encoding="utf-8")
    return src


def _run(P, src: Path, root: Path) -> dict[str, bytes]:
    rc = P.main(["--src", str(src), "--out", str(root / "out"), "--small-bytes", "9000",
                 "--small-out", str(root / "small"), "--package", "fake", "--version", "1"])
    assert rc == 0
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_is_deterministic_and_splits_by_page(P, fake_src: Path, tmp_path: Path):
    a, b = _run(P, fake_src, tmp_path / "a"), _run(P, fake_src, tmp_path / "b")
    assert a == b
    assert set(a) == {"out/prose_calib.txt", "out/prose_eval.txt", "out/manifest.json",
                      "small/prose_calib_small.txt", "small/prose_eval_small.txt"}
    m = json.loads(a["out/manifest.json"])
    calib = [f["path"] for f in m["sides"]["calib"]["files"]]
    ev = [f["path"] for f in m["sides"]["eval"]["files"]]
    assert calib and ev and not set(calib) & set(ev)
    assert all(P.split_of(r) == "calib" for r in calib) and all(P.split_of(r) == "eval" for r in ev)
    assert "index.html" not in calib + ev and "sect.tiny.html" not in calib + ev
    assert not any("common" in r.lower() for r in calib + ev)
    full = a["out/prose_calib.txt"].decode() + a["out/prose_eval.txt"].decode()
    assert full.count(_BOILER) == 1  # de-duplicated across pages
    for side, files in (("calib", calib), ("eval", ev)):
        docs = a[f"out/prose_{side}.txt"].decode().strip().split(P.DOC_SEPARATOR)
        assert [d.split("\n", 1)[0].split(" Page ")[1] for d in docs] == [r[5:-5] for r in files]
        small = a[f"small/prose_{side}_small.txt"]
        assert 0 < len(small) <= 9000
        assert set(small.decode().strip().split(P.DOC_SEPARATOR)) <= set(docs)


def test_split_of_is_a_function_of_the_name(P):
    import hashlib
    rel = "sect.apt-get.html"
    h = int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16) / 2**64
    assert P.split_of(rel) == ("eval" if h < P.EVAL_FRACTION else "calib")
    frac = sum(P.split_of(f"sect.p{i}.html") == "eval" for i in range(2000)) / 2000
    assert abs(frac - P.EVAL_FRACTION) < 0.05
