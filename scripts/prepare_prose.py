"""Split The Debian Administrator's Handbook (HTML) into calibration and evaluation prose.

Usage (normally through ``bash scripts/fetch_prose.sh``)::

    python3 scripts/prepare_prose.py --src <.../html/en-US> --out data/prose/ \\
        [--small-bytes 340000] [--small-out tpa_compress/data] \\
        [--package debian-handbook --version 11.20220922 --deb-sha256 HEX]

The second bundled domain: English prose that is not Python documentation. It lives
under scripts/ (not in the installed package): it builds the corpus, nothing reads it
at run time. Only the standard library is used (``html.parser``), and everything is
deterministic: no clock, no randomness, no absolute paths in the outputs.

1. **Select** the ``*.html`` pages directly under ``--src`` (one page is one chapter or
   one section of the book: the document unit). Dropped: ``index.html`` (title page,
   legal notice and the table of contents) and everything in subfolders
   (``Common_Content/`` stylesheets and images, ``images/``).
2. **Extract** the prose of each page (``extract``): headings, paragraphs, list items,
   definition terms and sidebars (their title, e.g. ``TIP Incremental updates``, then
   their paragraphs), each as one paragraph with its whitespace
   collapsed to single spaces; list items start with ``- ``. Dropped with everything
   inside them: ``<head>``, the banner and title bar, the prev/next navigation, tables
   of contents, index anchors, figures and images, tables, verbatim blocks (``<pre>``:
   terminal sessions and configuration files, which are not prose) and examples built
   around them, and callout lists that annotate such blocks (this book has no
   footnotes). Character references are decoded by ``html.parser``.
3. **De-duplicate** as ``tpa_compress/data/prepare.py`` does: exact-duplicate
   documents are dropped; going through documents in sorted path order, a paragraph
   is removed if one of its stripped lines of ``DEDUP_MIN_CHARS``+ characters holding a
   letter or digit already occurred in an earlier document. Documents left under
   ``MIN_DOC_CHARS`` characters are dropped.
4. **Split by page**: a document goes to eval iff
   ``int(sha256(relative_path)[:16], 16) / 2**64 < EVAL_FRACTION`` (relative path like
   ``sect.apt-get.html``), else to calibration; a page's side depends only on its name.
5. **Write** ``prose_calib.txt`` / ``prose_eval.txt`` (documents in sorted path order,
   joined by two blank lines, which never occur inside a document) and
   ``manifest.json`` under ``--out``; with ``--small-bytes N`` (> 0) also the committed
   slices ``prose_calib_small.txt`` / ``prose_eval_small.txt`` in ``--small-out``: whole
   documents taken greedily in sha256(relative path) order while the total stays
   <= N bytes, written in that order. A ``README.md`` in ``--small-out`` with
   ``<!-- prose-stats:begin -->`` / ``<!-- prose-stats:end -->`` markers gets the block
   between them rewritten with the sizes and hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

EVAL_FRACTION = 0.4
DEDUP_MIN_CHARS = 60
MIN_DOC_CHARS = 1000
DOC_SEPARATOR = "\n\n\n"
DEFAULT_SMALL_BYTES = 340_000
SMALL_NAMES = {"calib": "prose_calib_small.txt", "eval": "prose_eval_small.txt"}
FULL_NAMES = {"calib": "prose_calib.txt", "eval": "prose_eval.txt"}
SOURCE_PATH_IN_PACKAGE = "usr/share/doc/debian-handbook/html/en-US"
LICENSE = "GPL-2.0+ or CC-BY-SA-3.0"
EXCLUDED_PAGES = {"index.html": "title page, legal notice and table of contents"}
README_BEGIN = "<!-- prose-stats:begin -->"
README_END = "<!-- prose-stats:end -->"

# Elements dropped with their whole subtree: by tag, by class, by id.
SKIP_TAGS = {"head", "script", "style", "pre", "img", "table"}
SKIP_CLASSES = {"docnav", "toc", "indexterm", "figure", "mediaobject", "informalfigure", "example",
                "informalexample", "table", "informaltable", "calloutlist"}
SKIP_IDS = {"banner", "title"}
# Elements that end the paragraph before them and start a new one.
BLOCK_TAGS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "ul", "ol", "dl",
              "blockquote", "br"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
             "track", "wbr"}
_SPACE = re.compile(r"\s+")


class _Prose(HTMLParser):
    """Collects the prose paragraphs of one handbook page (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._buf: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, skipped subtree starts here)
        self._skip = 0
        self._bullet = False

    def _skipped(self, tag: str, attrs: dict) -> bool:
        classes = set((attrs.get("class") or "").split())
        return tag in SKIP_TAGS or bool(classes & SKIP_CLASSES) or attrs.get("id") in SKIP_IDS

    def _flush(self) -> None:
        text = _SPACE.sub(" ", "".join(self._buf)).strip()
        self._buf = []
        if text:
            self.paragraphs.append(("- " if self._bullet else "") + text)
            self._bullet = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self._skip:
            if tag not in VOID_TAGS:
                self._stack.append((tag, False))
            return
        skip = self._skipped(tag, a)
        if tag in BLOCK_TAGS and not skip:
            self._flush()
            if tag == "li":
                self._bullet = True
        if tag in VOID_TAGS:
            return
        self._stack.append((tag, skip))
        if skip:
            self._skip += 1

    def handle_startendtag(self, tag, attrs):
        if not self._skip and tag in BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag):
        if tag in VOID_TAGS:
            return
        # pop to the matching open tag (tolerates unclosed elements)
        for k in range(len(self._stack) - 1, -1, -1):
            if self._stack[k][0] == tag:
                for _, skipped in self._stack[k:]:
                    self._skip -= skipped
                del self._stack[k:]
                break
        if not self._skip and tag in BLOCK_TAGS:
            self._flush()

    def handle_data(self, data):
        if not self._skip:
            self._buf.append(data)

    def close(self):
        super().close()
        self._flush()


def extract(html: str) -> str:
    """The prose of one page: paragraphs separated by one blank line."""
    p = _Prose()
    p.feed(html)
    p.close()
    return "\n\n".join(p.paragraphs)


@dataclass
class Doc:
    rel: str
    source_sha256: str
    text: str
    side: str = ""
    key: str = ""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_of(rel: str) -> str:
    """'eval' or 'calib' for a relative path, from its sha256 alone."""
    return "eval" if int(_sha256(rel.encode("utf-8"))[:16], 16) / 2**64 < EVAL_FRACTION else "calib"


def _dedup_keys(paragraph: str) -> set[str]:
    keys = set()
    for ln in paragraph.split("\n"):
        s = ln.strip()
        if len(s) >= DEDUP_MIN_CHARS and re.search(r"[^\W_]", s):
            keys.add(s)
    return keys


def collect(src: Path) -> tuple[list[Doc], dict[str, list[str]]]:
    """Read, select, extract and de-duplicate; return kept docs and excluded paths."""
    excluded: dict[str, list[str]] = {}
    seen_lines: set[str] = set()
    seen_docs: set[str] = set()
    kept: list[Doc] = []
    for path in sorted(src.glob("*.html")):
        rel = path.name
        if rel in EXCLUDED_PAGES:
            excluded.setdefault(EXCLUDED_PAGES[rel], []).append(rel)
            continue
        raw = path.read_bytes()
        text = extract(raw.decode("utf-8"))
        digest = _sha256(text.encode("utf-8"))
        if digest in seen_docs:
            excluded.setdefault("exact duplicate of an earlier document", []).append(rel)
            continue
        seen_docs.add(digest)
        keep, mine = [], set()
        for para in text.split("\n\n"):
            keys = _dedup_keys(para)
            if keys & seen_lines:
                continue
            keep.append(para)
            mine |= keys
        seen_lines |= mine
        text = "\n\n".join(keep)
        if len(text) < MIN_DOC_CHARS:
            excluded.setdefault(f"shorter than {MIN_DOC_CHARS} chars after extraction", []).append(rel)
            continue
        kept.append(Doc(rel, _sha256(raw), text, split_of(rel), _sha256(rel.encode("utf-8"))))
    return kept, excluded


def _join(docs: list[Doc]) -> bytes:
    return (DOC_SEPARATOR.join(d.text for d in docs) + "\n").encode("utf-8") if docs else b""


def _small_selection(docs: list[Doc], budget: int) -> list[Doc]:
    chosen, total = [], 0
    for d in sorted(docs, key=lambda d: d.key):
        size = len(d.text.encode("utf-8")) + len(DOC_SEPARATOR)
        if total + size <= budget:
            chosen.append(d)
            total += size
    return chosen


def _write(path: Path, data: bytes) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"bytes": len(data), "sha256": _sha256(data)}


def prepare(src: Path, out: Path, *, small_bytes: int = 0, small_out: Path | None = None,
            source: dict | None = None) -> dict:
    """Run the whole pipeline; return the manifest (also written to out/manifest.json)."""
    src = Path(src)
    if not src.is_dir():
        raise SystemExit(f"{src}: not a directory (pass .../debian-handbook/html/en-US)")
    docs, excluded = collect(src)
    if not docs:
        raise SystemExit(f"{src}: no usable .html pages found")
    manifest: dict = {
        "format": 1,
        "source": {"path_in_package": SOURCE_PATH_IN_PACKAGE, "license": LICENSE, **(source or {})},
        "split": {"unit": "file",
                  "rule": "eval iff int(sha256(relative_path).hexdigest()[:16], 16) / 2**64 < eval_fraction",
                  "eval_fraction": EVAL_FRACTION, "document_separator": DOC_SEPARATOR,
                  "dedup_min_line_chars": DEDUP_MIN_CHARS, "min_doc_chars": MIN_DOC_CHARS},
        "excluded": {k: sorted(v) for k, v in sorted(excluded.items())},
        "sides": {},
        "small": {},
    }
    out = Path(out)
    for side in ("calib", "eval"):
        mine = [d for d in docs if d.side == side]
        manifest["sides"][side] = {
            "output": FULL_NAMES[side], **_write(out / FULL_NAMES[side], _join(mine)), "n_files": len(mine),
            "files": [{"path": d.rel, "source_sha256": d.source_sha256, "bytes": len(d.text.encode("utf-8"))}
                      for d in mine]}
    if small_bytes > 0:
        small_out = Path(small_out if small_out is not None else out)
        for side in ("calib", "eval"):
            chosen = _small_selection([d for d in docs if d.side == side], small_bytes)
            manifest["small"][side] = {"output": SMALL_NAMES[side],
                                       **_write(small_out / SMALL_NAMES[side], _join(chosen)),
                                       "n_files": len(chosen), "files": [d.rel for d in chosen]}
        _update_readme(small_out / "README.md", manifest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def stats_block(manifest: dict) -> str:
    src = manifest["source"]
    rows = [f"Source: Debian `{src.get('package', '?')}` version `{src.get('version', '?')}`"
            + (f" (.deb sha256 `{src['deb_sha256']}`)" if src.get("deb_sha256") else "")
            + f", `{src['path_in_package']}/`.", "",
            "| file | documents | bytes | sha256 |", "|---|---:|---:|---|"]
    for side in ("calib", "eval"):
        s = manifest["sides"][side]
        rows.append(f"| data/prose/{s['output']} (not committed) | {s['n_files']} | {s['bytes']:,} | "
                    f"`{s['sha256']}` |")
    for side in ("calib", "eval"):
        s = manifest["small"][side]
        rows.append(f"| {s['output']} | {s['n_files']} | {s['bytes']:,} | `{s['sha256']}` |")
    n_excl = sum(len(v) for v in manifest["excluded"].values())
    rows += ["", f"Excluded pages: {n_excl} ("
             + "; ".join(f"{k}: {len(v)}" for k, v in manifest["excluded"].items()) + ")."]
    return "\n".join(rows)


def _update_readme(path: Path, manifest: dict) -> None:
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        return
    path.write_text(text[: a + len(README_BEGIN)] + "\n" + stats_block(manifest) + "\n" + text[b:],
                    encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 scripts/prepare_prose.py", description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True, type=Path, help="the html/en-US directory of debian-handbook")
    ap.add_argument("--out", required=True, type=Path, help="where the full split and manifest.json go")
    ap.add_argument("--small-bytes", type=int, default=DEFAULT_SMALL_BYTES,
                    help=f"max size of each committed slice (default {DEFAULT_SMALL_BYTES}; 0: no slices)")
    ap.add_argument("--small-out", type=Path, default=None, help="where the slices go (default: --out)")
    ap.add_argument("--package", default=None, help="source package name, recorded in the manifest")
    ap.add_argument("--version", default=None, help="source package version, recorded in the manifest")
    ap.add_argument("--deb-sha256", default=None, help="sha256 of the .deb, recorded in the manifest")
    a = ap.parse_args(argv)
    source = {k: v for k, v in (("package", a.package), ("version", a.version), ("deb_sha256", a.deb_sha256)) if v}
    m = prepare(a.src, a.out, small_bytes=a.small_bytes, small_out=a.small_out, source=source)
    for side in ("calib", "eval"):
        s = m["sides"][side]
        print(f"{side}: {s['n_files']} pages, {s['bytes']:,} bytes -> {a.out / s['output']}")
    for side, s in m["small"].items():
        print(f"{side} slice: {s['n_files']} pages, {s['bytes']:,} bytes -> {s['output']}")
    print(f"excluded: {sum(len(v) for v in m['excluded'].values())} pages; manifest: {a.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
