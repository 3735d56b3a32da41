"""Domain ``python-docs``: the Python 3.11 documentation (reST sources of Debian
``python3.11-doc``, PSF license) as calibration and evaluation text.

Build it with ``bash scripts/fetch_python_docs.sh`` (or ``python3 scripts/build_corpus.py
python-docs --src <.../html/_sources>``); the steps shared with every domain (de-duplicate,
split, write, slices) are in ``common.py``. This file chooses the pages and cleans them:

1. **Select** ``*.rst.txt`` files under ``--src`` whose relative path is in a
   prose-heavy section (see ``INCLUDE_DIRS`` / ``INCLUDE_FILES``). Dropped:
   ``whatsnew/`` (release notes and the huge list-like changelog, which restate
   the library docs), ``distutils/`` and ``install/`` (legacy, overlapping
   ``installing/``), ``includes/`` (fragments), top-level pages (about, bugs,
   contents, copyright, license: boilerplate and legal text) and every
   ``index.rst.txt`` (tables of contents only).
2. **Clean** each file lightly (``clean_rst``): drop section adornment lines,
   comments, link targets, substitution definitions and metadata directives
   (index, toctree, module, moduleauthor, audit-event, include, ...); turn the
   other directives into their rendered header (``.. function:: f(x)`` ->
   ``f(x)``, ``.. versionadded:: 3.2`` -> ``New in version 3.2.``, ``.. note::``
   -> ``Note:``) and drop their ``:option:`` lines; turn roles into their text
   (``:func:`~os.path.join``` -> ``join``, ``:ref:`title <label>``` -> ``title``),
   double-backquoted literals into single-backquoted ones, hyperlinks
   (```text <url>`_``) into their text, and ``example::`` into ``example:``
   (per paragraph, so markup broken across lines is handled). Literal blocks
   (after ``::``, code-block/doctest/...) and ``>>>`` lines are kept verbatim.
   Trailing spaces are removed and runs of blank lines become one blank line.
3. **Split** with ``EVAL_FRACTION`` = 0.15 by relative path (POSIX style, e.g.
   ``library/os.rst.txt``); slices of at most 300,000 bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

from .common import Domain, collapse_blank

# --- selection -------------------------------------------------------------------

INCLUDE_DIRS = (
    "c-api",
    "distributing",
    "extending",
    "faq",
    "howto",
    "installing",
    "library",
    "reference",
    "tutorial",
    "using",
)
INCLUDE_FILES = ("glossary.rst.txt",)
SOURCE_SUFFIX = ".rst.txt"

EVAL_FRACTION = 0.15

# --- cleaning ----------------------------------------------------------------------

# Directives dropped together with their indented body (metadata, navigation,
# includes, grammar, images).
DROP_BLOCK = {
    "audit-event",
    "audit-event-table",
    "contents",
    "currentmodule",
    "figure",
    "highlight",
    "image",
    "include",
    "index",
    "limited-api-list",
    "literalinclude",
    "module",
    "moduleauthor",
    "only",
    "productionlist",
    "program",
    "raw",
    "sectionauthor",
    "tabularcolumns",
    "testcleanup",
    "testsetup",
    "toctree",
}
# Directives whose body is code: kept verbatim.
CODE_DIRECTIVES = {"code", "code-block", "doctest", "sourcecode", "testcode", "testoutput"}
# Admonition-like directives: header replaced by a label.
LABELS = {
    "attention": "Attention:",
    "caution": "Caution:",
    "danger": "Danger:",
    "hint": "Hint:",
    "important": "Important:",
    "impl-detail": "CPython implementation detail:",
    "note": "Note:",
    "seealso": "See also:",
    "tip": "Tip:",
    "warning": "Warning:",
}
# Object descriptions: header is the signature, with Sphinx's prefix.
PREFIXES = {
    "abstractmethod": "abstractmethod ",
    "awaitablefunction": "awaitable ",
    "awaitablemethod": "awaitable ",
    "class": "class ",
    "classmethod": "classmethod ",
    "coroutinefunction": "coroutine ",
    "coroutinemethod": "coroutine ",
    "decorator": "@",
    "decoratormethod": "@",
    "exception": "exception ",
    "staticmethod": "static ",
}

_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([A-Za-z][\w:-]*)::(?:\s+(.*))?$")
_TARGET = re.compile(r"^\s*\.\.\s+_[^:]*:")
_SUBST_DEF = re.compile(r"^\s*\.\.\s+\|[^|]+\|")
_FOOTNOTE = re.compile(r"^(\s*)\.\.\s+\[(#?[\w-]*)\]\s*(.*)$")
_COMMENT = re.compile(r"^\s*\.\.(\s|$)")
_BULLET = re.compile(r"^(?:[-*+]|\d+\.|#\.|\(?[A-Za-z0-9]\))\s+")
_OPTION = re.compile(r"^\s+:[\w -]+:(\s.*)?$")
_ADORNMENT = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}$")
_ROLE = re.compile(r":(?:[\w-]+:)?[\w-]+:`((?:[^`\\]|\\.)+)`")
_LITERAL = re.compile(r"``(.+?)``", re.S)
_LINK = re.compile(r"`([^`<]+?)\s*<[^>`]+>`__?")
_REF = re.compile(r"`([^`]+)`__?(?![\w`])")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_end(lines: list[str], i: int, indent: int) -> int:
    """Index after the indented block that belongs to line ``i`` (blank lines inside
    the block are part of it; trailing blank lines are not)."""
    j = i + 1
    last = i
    while j < len(lines):
        if lines[j].strip():
            if _indent(lines[j]) <= indent:
                break
            last = j
        j += 1
    return last + 1


def _role_text(m: re.Match) -> str:
    text = m.group(1).replace("\\`", "`")
    t = re.match(r"^(.*?)\s*<[^<>]+>$", text, re.S)
    if t and t.group(1):
        return t.group(1)
    text = text.lstrip("!")
    if text.startswith("~"):
        text = text[1:].rsplit(".", 1)[-1]
    return text


def clean_inline(text: str) -> str:
    """Inline markup of a prose paragraph (may span lines) -> plain-ish text."""
    text = _ROLE.sub(_role_text, text)
    text = _LINK.sub(r"\1", text)
    text = _REF.sub(r"\1", text)
    text = _LITERAL.sub(r"`\1`", text)
    text = text.replace("\\ ", "")
    lines = text.split("\n")
    for k, line in enumerate(lines):
        if line.endswith("::"):
            lines[k] = line[:-2].rstrip() if line[:-2].endswith(" ") else line[:-1]
    return "\n".join(lines)


def _directive_header(name: str, args: str) -> str | None:
    name_l = name.lower()
    args = args.strip()
    if name_l == "versionadded":
        v, _, rest = args.partition(" ")
        return f"New in version {v}." + (f" {rest}" if rest else "")
    if name_l == "versionchanged":
        v, _, rest = args.partition(" ")
        return f"Changed in version {v}:" + (f" {rest}" if rest else "")
    if name_l == "deprecated":
        v, _, rest = args.partition(" ")
        return f"Deprecated since version {v}:" + (f" {rest}" if rest else "")
    if name_l == "deprecated-removed":
        parts = args.split(" ", 2)
        head = f"Deprecated since version {parts[0]}"
        if len(parts) > 1:
            head += f", will be removed in version {parts[1]}"
        return head + ":" + (f" {parts[2]}" if len(parts) > 2 else "")
    if name_l == "availability":
        return f"Availability: {args}"
    if name_l in LABELS:
        return LABELS[name_l] + (f" {args}" if args else "")
    if name_l in CODE_DIRECTIVES:
        return None
    if not args:
        return None
    return PREFIXES.get(name_l, "") + args


def clean_rst(text: str) -> str:
    """Light reST -> text cleaning (see the module docstring)."""
    lines = text.expandtabs(8).splitlines()
    out: list[tuple[str, bool]] = []  # (line, is_prose); prose gets inline cleaning
    i = 0
    literal_indent: int | None = None  # inside a literal block deeper than this
    while i < len(lines):
        line = lines[i].rstrip()
        stripped = line.strip()
        if literal_indent is not None:
            if not stripped or _indent(line) > literal_indent:
                out.append((line, False))
                i += 1
                continue
            literal_indent = None
        if not stripped:
            out.append(("", False))
            i += 1
            continue
        ind = _indent(line)
        m = _DIRECTIVE.match(line)
        if m:
            name = m.group(2).lower()
            if name in DROP_BLOCK:
                i = _block_end(lines, i, ind)
                continue
            header = _directive_header(name, m.group(3) or "")
            if header:
                out.append((" " * ind + header, True))
            i += 1
            while i < len(lines) and _OPTION.match(lines[i]):
                i += 1
            if name in CODE_DIRECTIVES:
                literal_indent = ind
            continue
        if _TARGET.match(line) or _SUBST_DEF.match(line):
            i = _block_end(lines, i, ind)
            continue
        fm = _FOOTNOTE.match(line)
        if fm:
            label = fm.group(2)
            out.append((fm.group(1) + (f"[{label}] " if label and label != "#" else "") + fm.group(3), True))
            i += 1
            continue
        if _COMMENT.match(line):
            i = _block_end(lines, i, ind)
            continue
        if _ADORNMENT.match(stripped) or stripped == "::":
            if stripped == "::":
                literal_indent = ind
            i += 1
            continue
        if stripped.startswith((">>>", "...")):
            out.append((line, False))
            i += 1
            continue
        if stripped.endswith("::"):
            bullet = _BULLET.match(stripped)
            literal_indent = ind + (len(bullet.group(0)) if bullet else 0)
        out.append((line, True))
        i += 1
    # Inline cleaning per run of consecutive prose lines, so that roles and links
    # broken across lines are handled.
    res: list[str] = []
    run: list[str] = []
    for line, prose in out + [("", False)]:
        if prose and line:
            run.append(line)
            continue
        if run:
            res.extend(clean_inline("\n".join(run)).split("\n"))
            run = []
        res.append(line)
    return collapse_blank(res)


def exclusion_reason(rel: str) -> str | None:
    """Why ``rel`` (POSIX path relative to _sources) is not used, or None if it is."""
    if not rel.endswith(SOURCE_SUFFIX):
        return "not a .rst.txt source"
    parts = rel.split("/")
    if parts[-1] == "index.rst.txt":
        return "index page (table of contents)"
    if len(parts) == 1:
        return None if rel in INCLUDE_FILES else "top-level page (boilerplate/legal)"
    if parts[0] in INCLUDE_DIRS:
        return None
    if parts[0] == "whatsnew":
        return "whatsnew/ (release notes, changelog)"
    return f"{parts[0]}/ not in the prose sections"


def select(src: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The ``.rst.txt`` sources to use, in sorted order, and the excluded ones by reason
    (files that are not ``.rst.txt`` sources are ignored)."""
    excluded: dict[str, list[str]] = {}
    used: list[str] = []
    for rel in sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()):
        reason = exclusion_reason(rel)
        if reason is None:
            used.append(rel)
        elif rel.endswith(SOURCE_SUFFIX):
            excluded.setdefault(reason, []).append(rel)
    return used, excluded


DOMAIN = Domain(
    name="python-docs",
    path_in_package="usr/share/doc/python3.11/html/_sources",
    license="PSF-2.0",
    eval_fraction=EVAL_FRACTION,
    default_small_bytes=300_000,
    full_names={"calib": "calib.txt", "eval": "eval.txt"},
    small_names={"calib": "calib_small.txt", "eval": "eval_small.txt"},
    out_dir="data",
    readme_markers=("<!-- stats:begin -->", "<!-- stats:end -->"),
    select=select,
    to_text=clean_rst,
    text_step="cleaning",
    unit="files",
    excluded_label="Excluded source files",
    split_extra={"include_dirs": list(INCLUDE_DIRS), "include_files": list(INCLUDE_FILES)},
)
