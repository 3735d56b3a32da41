"""Split the Python documentation (reST sources) into calibration and evaluation text.

Usage (normally through ``bash scripts/fetch_python_docs.sh``)::

    python -m tpa_compress.data.prepare --src <.../html/_sources> --out data/ \\
        [--small-bytes 300000] [--small-out tpa_compress/data] \\
        [--package python3.11-doc --version 3.11.2-6+deb12u9 --deb-sha256 HEX]

What it does, in order (everything deterministic; no clock, no randomness, no
absolute paths in the outputs):

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
3. **De-duplicate** across documents (boilerplate such as repeated notes,
   parameter descriptions, shared examples): exact-duplicate documents are
   dropped; then, going through the documents in sorted path order, a paragraph
   (run of non-blank lines) is removed if any of its stripped lines of at least
   ``DEDUP_MIN_CHARS`` characters that holds a letter or digit already occurred in
   an earlier document. Whole paragraphs go, so no sentence is cut in half, and no
   such line ends up in two documents, hence never on both sides of the split.
   Documents left with fewer than ``MIN_DOC_CHARS`` characters are dropped.
4. **Split by file**: a document goes to eval iff
   ``int(sha256(relative_path)[:16], 16) / 2**64 < EVAL_FRACTION``, else to calib.
   The relative path is POSIX style, e.g. ``library/os.rst.txt``; a file's side
   never depends on which other files exist.
5. **Write** ``calib.txt`` / ``eval.txt`` (documents in sorted path order, joined
   by ``DOC_SEPARATOR`` = two blank lines; since a document never contains two
   blank lines in a row, that separator marks document boundaries exactly) and
   ``manifest.json``. With ``--small-bytes N`` (> 0) also write
   ``calib_small.txt`` / ``eval_small.txt`` into ``--small-out``: whole documents of
   the respective side, taken greedily in sha256(relative path) order while the
   total stays <= N bytes, and written in that order (so any prefix of a slice
   mixes sections rather than starting with all of c-api/). If ``--small-out`` holds a
   ``README.md`` with ``<!-- stats:begin -->`` / ``<!-- stats:end -->`` markers,
   the block between them is rewritten with the current sizes and hashes.

Only the standard library is used, so this runs with any Python >= 3.10.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

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

# --- split / cleaning parameters ----------------------------------------------------

EVAL_FRACTION = 0.15
DEDUP_MIN_CHARS = 60
MIN_DOC_CHARS = 1000
DOC_SEPARATOR = "\n\n\n"
DEFAULT_SMALL_BYTES = 300_000
SMALL_NAMES = {"calib": "calib_small.txt", "eval": "eval_small.txt"}
FULL_NAMES = {"calib": "calib.txt", "eval": "eval.txt"}
SOURCE_PATH_IN_PACKAGE = "usr/share/doc/python3.11/html/_sources"
README_BEGIN = "<!-- stats:begin -->"
README_END = "<!-- stats:end -->"

# Directives dropped together with their indented body (metadata, navigation,
# includes, grammar, images).
DROP_BLOCK = {
    "audit-event", "audit-event-table", "contents", "currentmodule", "figure",
    "highlight", "image", "include", "index", "limited-api-list", "literalinclude",
    "module", "moduleauthor", "only", "productionlist", "program", "raw",
    "sectionauthor", "tabularcolumns", "testcleanup", "testsetup", "toctree",
}
# Directives whose body is code: kept verbatim.
CODE_DIRECTIVES = {"code", "code-block", "doctest", "sourcecode", "testcode", "testoutput"}
# Admonition-like directives: header replaced by a label.
LABELS = {
    "attention": "Attention:", "caution": "Caution:", "danger": "Danger:",
    "hint": "Hint:", "important": "Important:", "impl-detail": "CPython implementation detail:",
    "note": "Note:", "seealso": "See also:", "tip": "Tip:", "warning": "Warning:",
}
# Object descriptions: header is the signature, with Sphinx's prefix.
PREFIXES = {
    "abstractmethod": "abstractmethod ", "awaitablefunction": "awaitable ",
    "awaitablemethod": "awaitable ", "class": "class ", "classmethod": "classmethod ",
    "coroutinefunction": "coroutine ", "coroutinemethod": "coroutine ", "decorator": "@",
    "decoratormethod": "@", "exception": "exception ", "staticmethod": "static ",
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
    return _collapse_blank(res)


def _collapse_blank(lines: list[str]) -> str:
    res: list[str] = []
    for ln in lines:
        ln = ln.rstrip()
        if not ln and (not res or not res[-1]):
            continue
        res.append(ln)
    while res and not res[-1]:
        res.pop()
    return "\n".join(res)


# --- selection / split ---------------------------------------------------------------


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


def split_of(rel: str, eval_fraction: float = EVAL_FRACTION) -> str:
    """'eval' or 'calib' from sha256 of the relative path alone."""
    h = int(hashlib.sha256(rel.encode("utf-8")).hexdigest()[:16], 16)
    return "eval" if h / 2**64 < eval_fraction else "calib"


@dataclass
class Doc:
    rel: str
    source_sha256: str
    text: str
    side: str = ""
    key: str = field(default="", repr=False)


def _dedup_keys(paragraph: str) -> set[str]:
    """Stripped lines of a paragraph that count for de-duplication: long enough and
    holding a letter or digit (table borders and rules are not content)."""
    keys = set()
    for ln in paragraph.split("\n"):
        s = ln.strip()
        if len(s) >= DEDUP_MIN_CHARS and re.search(r"[^\W_]", s):
            keys.add(s)
    return keys


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def collect(src: Path) -> tuple[list[Doc], dict[str, list[str]]]:
    """Read, select, clean and de-duplicate; return kept docs and excluded paths."""
    excluded: dict[str, list[str]] = {}
    docs: list[Doc] = []
    rels = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    for rel in rels:
        reason = exclusion_reason(rel)
        if reason:
            if rel.endswith(SOURCE_SUFFIX):
                excluded.setdefault(reason, []).append(rel)
            continue
        raw = (src / rel).read_bytes()
        text = clean_rst(raw.decode("utf-8"))
        docs.append(Doc(rel, _sha256(raw), text))

    seen_lines: set[str] = set()
    seen_docs: set[str] = set()
    kept: list[Doc] = []
    for d in docs:  # sorted path order
        digest = _sha256(d.text.encode("utf-8"))
        if digest in seen_docs:
            excluded.setdefault("exact duplicate of an earlier document", []).append(d.rel)
            continue
        seen_docs.add(digest)
        paragraphs = d.text.split("\n\n")
        mine: set[str] = set()
        keep: list[str] = []
        for para in paragraphs:
            keys = _dedup_keys(para)
            if keys & seen_lines:
                continue
            keep.append(para)
            mine |= keys
        seen_lines |= mine
        d.text = _collapse_blank("\n\n".join(keep).split("\n"))
        if len(d.text) < MIN_DOC_CHARS:
            excluded.setdefault(f"shorter than {MIN_DOC_CHARS} chars after cleaning", []).append(d.rel)
            continue
        d.side = split_of(d.rel)
        d.key = _sha256(d.rel.encode("utf-8"))
        kept.append(d)
    return kept, excluded


def _join(docs: list[Doc]) -> bytes:
    return (DOC_SEPARATOR.join(d.text for d in docs) + "\n").encode("utf-8") if docs else b""


def _small_selection(docs: list[Doc], budget: int) -> list[Doc]:
    chosen: list[Doc] = []
    total = 0
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


def prepare(
    src: Path,
    out: Path,
    *,
    small_bytes: int = 0,
    small_out: Path | None = None,
    source: dict | None = None,
) -> dict:
    """Run the whole pipeline; return the manifest (also written to out/manifest.json)."""
    src = Path(src)
    if not src.is_dir():
        raise SystemExit(f"{src}: not a directory (pass .../html/_sources)")
    docs, excluded = collect(src)
    if not docs:
        raise SystemExit(f"{src}: no usable {SOURCE_SUFFIX} documents found")
    manifest: dict = {
        "format": 1,
        "source": {"path_in_package": SOURCE_PATH_IN_PACKAGE, "license": "PSF-2.0", **(source or {})},
        "split": {
            "unit": "file",
            "rule": "eval iff int(sha256(relative_path).hexdigest()[:16], 16) / 2**64 < eval_fraction",
            "eval_fraction": EVAL_FRACTION,
            "document_separator": DOC_SEPARATOR,
            "include_dirs": list(INCLUDE_DIRS),
            "include_files": list(INCLUDE_FILES),
            "dedup_min_line_chars": DEDUP_MIN_CHARS,
            "min_doc_chars": MIN_DOC_CHARS,
        },
        "excluded": {k: sorted(v) for k, v in sorted(excluded.items())},
        "sides": {},
        "small": {},
    }
    out = Path(out)
    for side in ("calib", "eval"):
        mine = [d for d in docs if d.side == side]
        info = _write(out / FULL_NAMES[side], _join(mine))
        manifest["sides"][side] = {
            "output": FULL_NAMES[side],
            **info,
            "n_files": len(mine),
            "files": [{"path": d.rel, "source_sha256": d.source_sha256,
                       "bytes": len(d.text.encode("utf-8"))} for d in mine],
        }
    if small_bytes > 0:
        small_out = Path(small_out) if small_out is not None else Path(__file__).resolve().parent
        for side in ("calib", "eval"):
            chosen = _small_selection([d for d in docs if d.side == side], small_bytes)
            info = _write(small_out / SMALL_NAMES[side], _join(chosen))
            manifest["small"][side] = {
                "output": SMALL_NAMES[side], **info, "n_files": len(chosen),
                "files": [d.rel for d in chosen],
            }
        _update_readme(small_out / "README.md", manifest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def stats_block(manifest: dict) -> str:
    src = manifest["source"]
    rows = [
        f"Source: Debian `{src.get('package', '?')}` version `{src.get('version', '?')}`"
        + (f" (.deb sha256 `{src['deb_sha256']}`)" if src.get("deb_sha256") else "")
        + f", `{src['path_in_package']}/`.",
        "",
        "| file | documents | bytes | sha256 |",
        "|---|---:|---:|---|",
    ]
    for side in ("calib", "eval"):
        s = manifest["sides"][side]
        rows.append(f"| data/{s['output']} (not committed) | {s['n_files']} | {s['bytes']:,} | `{s['sha256']}` |")
    for side in ("calib", "eval"):
        s = manifest["small"][side]
        rows.append(f"| {s['output']} | {s['n_files']} | {s['bytes']:,} | `{s['sha256']}` |")
    n_excl = sum(len(v) for v in manifest["excluded"].values())
    rows += ["", f"Excluded source files: {n_excl} ("
             + "; ".join(f"{k}: {len(v)}" for k, v in manifest["excluded"].items()) + ")."]
    return "\n".join(rows)


def _update_readme(path: Path, manifest: dict) -> None:
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8")
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        return
    new = text[: a + len(README_BEGIN)] + "\n" + stats_block(manifest) + "\n" + text[b:]
    path.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tpa_compress.data.prepare", description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True, type=Path, help="the html/_sources directory of python3.11-doc")
    ap.add_argument("--out", required=True, type=Path, help="where calib.txt, eval.txt, manifest.json go")
    ap.add_argument("--small-bytes", type=int, default=DEFAULT_SMALL_BYTES,
                    help=f"max size of each committed slice (default {DEFAULT_SMALL_BYTES}; 0: no slices)")
    ap.add_argument("--small-out", type=Path, default=None,
                    help="where calib_small.txt / eval_small.txt go (default: the tpa_compress/data package dir)")
    ap.add_argument("--package", default=None, help="source package name, recorded in the manifest")
    ap.add_argument("--version", default=None, help="source package version, recorded in the manifest")
    ap.add_argument("--deb-sha256", default=None, help="sha256 of the .deb, recorded in the manifest")
    a = ap.parse_args(argv)
    source = {k: v for k, v in (("package", a.package), ("version", a.version), ("deb_sha256", a.deb_sha256)) if v}
    m = prepare(a.src, a.out, small_bytes=a.small_bytes, small_out=a.small_out, source=source)
    for side in ("calib", "eval"):
        s = m["sides"][side]
        print(f"{side}: {s['n_files']} files, {s['bytes']:,} bytes -> {a.out / s['output']}")
    for side, s in m["small"].items():
        print(f"{side} slice: {s['n_files']} files, {s['bytes']:,} bytes -> {s['output']}")
    print(f"excluded: {sum(len(v) for v in m['excluded'].values())} files; manifest: {a.out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
