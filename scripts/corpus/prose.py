"""Domain ``prose``: English prose from The Debian Administrator's Handbook (HTML of
Debian ``debian-handbook``, GPL-2.0+ or CC-BY-SA-3.0), text that is not Python
documentation.

Build it with ``bash scripts/fetch_prose.sh`` (or ``python3 scripts/build_corpus.py prose
--src <.../html/en-US>``); the steps shared with every domain (de-duplicate, split, write,
slices) are in ``common.py``. This file chooses the pages and extracts their prose with
``html.parser``:

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
3. **Split** with ``EVAL_FRACTION`` = 0.4 by page name (e.g. ``sect.apt-get.html``):
   larger than python-docs' because the book is small (about 1 MB of prose); slices of
   at most 340,000 bytes.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from .common import Domain

EVAL_FRACTION = 0.4
EXCLUDED_PAGES = {"index.html": "title page, legal notice and table of contents"}

# Elements dropped with their whole subtree: by tag, by class, by id.
SKIP_TAGS = {"head", "script", "style", "pre", "img", "table"}
SKIP_CLASSES = {
    "docnav",
    "toc",
    "indexterm",
    "figure",
    "mediaobject",
    "informalfigure",
    "example",
    "informalexample",
    "table",
    "informaltable",
    "calloutlist",
}
SKIP_IDS = {"banner", "title"}
# Elements that end the paragraph before them and start a new one.
BLOCK_TAGS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "ul", "ol", "dl", "blockquote", "br"}
VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
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


def select(src: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The ``*.html`` pages directly under ``src``, in sorted order, and the excluded ones."""
    excluded: dict[str, list[str]] = {}
    used: list[str] = []
    for rel in sorted(p.name for p in src.glob("*.html")):
        if rel in EXCLUDED_PAGES:
            excluded.setdefault(EXCLUDED_PAGES[rel], []).append(rel)
        else:
            used.append(rel)
    return used, excluded


DOMAIN = Domain(
    name="prose",
    path_in_package="usr/share/doc/debian-handbook/html/en-US",
    license="GPL-2.0+ or CC-BY-SA-3.0",
    eval_fraction=EVAL_FRACTION,
    default_small_bytes=340_000,
    full_names={"calib": "prose_calib.txt", "eval": "prose_eval.txt"},
    small_names={"calib": "prose_calib_small.txt", "eval": "prose_eval_small.txt"},
    out_dir="data/prose",
    readme_markers=("<!-- prose-stats:begin -->", "<!-- prose-stats:end -->"),
    select=select,
    to_text=extract,
    text_step="extraction",
    unit="pages",
    excluded_label="Excluded pages",
)
