"""The steps every corpus domain shares: de-duplicate, split, write, manifest, README stats.

A domain (one small file next to this one) says how to pick its pages out of the unpacked
package (``select``) and how to turn one page into plain text (``to_text``); everything
else is here and the same for every domain. Everything is deterministic: no clock, no
randomness, no absolute paths in the outputs. Only the standard library is used.

1. **Select** (the domain): relative POSIX paths of the pages to use, in sorted order,
   and the excluded ones with a reason.
2. **Text** (the domain): each page's bytes, decoded as UTF-8, to plain text made of
   paragraphs separated by one blank line.
3. **De-duplicate**: exact-duplicate documents are dropped; then, going through the
   documents in sorted path order, a paragraph (run of non-blank lines) is removed if any
   of its stripped lines of at least ``DEDUP_MIN_CHARS`` characters that holds a letter or
   digit already occurred in an earlier document. Whole paragraphs go, so no sentence is
   cut in half, and no such line ends up in two documents, hence never on both sides of
   the split. Documents left with fewer than ``MIN_DOC_CHARS`` characters are dropped.
4. **Split by page**: a document goes to eval iff
   ``int(sha256(relative_path)[:16], 16) / 2**64 < eval_fraction``, else to calib; a
   page's side never depends on which other pages exist.
5. **Write** the full calib/eval files under ``--out`` (documents in sorted path order,
   joined by ``DOC_SEPARATOR`` = two blank lines; a document never contains two blank
   lines in a row, so the separator marks document boundaries exactly) and
   ``manifest.json``. With ``--small-bytes N`` (> 0) also the committed slices in
   ``--small-out``: whole documents of each side, taken greedily in sha256(relative path)
   order while the total stays <= N bytes, and written in that order (so any prefix of a
   slice mixes sections). If ``--small-out`` holds a ``README.md`` with the domain's
   begin/end markers, the block between them is rewritten with the current sizes and
   hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

DEDUP_MIN_CHARS = 60
MIN_DOC_CHARS = 1000
DOC_SEPARATOR = "\n\n\n"
SIDES = ("calib", "eval")
# The committed slices live with the package that reads them.
PACKAGE_DATA = Path(__file__).resolve().parents[2] / "tpa_compress" / "data"


@dataclass(frozen=True)
class Domain:
    """One source of text: how to read it and where its outputs go."""

    name: str
    path_in_package: str  # the folder of pages inside the unpacked .deb
    license: str
    eval_fraction: float
    default_small_bytes: int
    full_names: dict[str, str]  # side -> file name under --out
    small_names: dict[str, str]  # side -> committed slice name under --small-out
    out_dir: str  # default --out; also how the README names the full files
    readme_markers: tuple[str, str]
    select: Callable[[Path], tuple[list[str], dict[str, list[str]]]]
    to_text: Callable[[str], str]
    text_step: str  # what to_text does, for the "shorter than" exclusion reason
    unit: str  # what a page is called in messages: "files", "pages"
    excluded_label: str  # the README's name for the excluded pages
    split_extra: dict = field(default_factory=dict)  # domain rules recorded in the manifest


@dataclass
class Doc:
    rel: str
    source_sha256: str
    text: str
    side: str = ""
    key: str = field(default="", repr=False)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_of(rel: str, eval_fraction: float) -> str:
    """'eval' or 'calib' from sha256 of the relative path alone."""
    return "eval" if int(sha256(rel.encode("utf-8"))[:16], 16) / 2**64 < eval_fraction else "calib"


def collapse_blank(lines: list[str]) -> str:
    """Lines joined with trailing spaces removed, runs of blank lines made one, no blank
    line at either end."""
    res: list[str] = []
    for ln in lines:
        ln = ln.rstrip()
        if not ln and (not res or not res[-1]):
            continue
        res.append(ln)
    while res and not res[-1]:
        res.pop()
    return "\n".join(res)


def _dedup_keys(paragraph: str) -> set[str]:
    """Stripped lines of a paragraph that count for de-duplication: long enough and
    holding a letter or digit (table borders and rules are not content)."""
    keys = set()
    for ln in paragraph.split("\n"):
        s = ln.strip()
        if len(s) >= DEDUP_MIN_CHARS and re.search(r"[^\W_]", s):
            keys.add(s)
    return keys


def collect(domain: Domain, src: Path) -> tuple[list[Doc], dict[str, list[str]]]:
    """Select, read, turn into text and de-duplicate; return kept docs and excluded paths."""
    rels, excluded = domain.select(src)
    seen_lines: set[str] = set()
    seen_docs: set[str] = set()
    kept: list[Doc] = []
    for rel in rels:  # sorted path order
        raw = (src / rel).read_bytes()
        text = domain.to_text(raw.decode("utf-8"))
        digest = sha256(text.encode("utf-8"))
        if digest in seen_docs:
            excluded.setdefault("exact duplicate of an earlier document", []).append(rel)
            continue
        seen_docs.add(digest)
        keep: list[str] = []
        mine: set[str] = set()
        for para in text.split("\n\n"):
            keys = _dedup_keys(para)
            if keys & seen_lines:
                continue
            keep.append(para)
            mine |= keys
        seen_lines |= mine
        text = collapse_blank("\n\n".join(keep).split("\n"))
        if len(text) < MIN_DOC_CHARS:
            reason = f"shorter than {MIN_DOC_CHARS} chars after {domain.text_step}"
            excluded.setdefault(reason, []).append(rel)
            continue
        side = split_of(rel, domain.eval_fraction)
        kept.append(Doc(rel, sha256(raw), text, side, sha256(rel.encode("utf-8"))))
    return kept, excluded


def join(docs: list[Doc]) -> bytes:
    return (DOC_SEPARATOR.join(d.text for d in docs) + "\n").encode("utf-8") if docs else b""


def small_selection(docs: list[Doc], budget: int) -> list[Doc]:
    """Whole documents in sha256(relative path) order while the total stays <= budget."""
    chosen: list[Doc] = []
    total = 0
    for d in sorted(docs, key=lambda d: d.key):
        size = len(d.text.encode("utf-8")) + len(DOC_SEPARATOR)
        if total + size <= budget:
            chosen.append(d)
            total += size
    return chosen


def write(path: Path, data: bytes) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"bytes": len(data), "sha256": sha256(data)}


def build(
    domain: Domain,
    src: Path,
    out: Path,
    *,
    small_bytes: int = 0,
    small_out: Path = PACKAGE_DATA,
    source: dict | None = None,
) -> dict:
    """Run the whole pipeline; return the manifest (also written to out/manifest.json)."""
    src = Path(src)
    if not src.is_dir():
        raise SystemExit(f"{src}: not a directory (pass .../{domain.path_in_package})")
    docs, excluded = collect(domain, src)
    if not docs:
        raise SystemExit(f"{src}: no usable pages found")
    manifest: dict = {
        "format": 1,
        "source": {"path_in_package": domain.path_in_package, "license": domain.license, **(source or {})},
        "split": {
            "unit": "file",
            "rule": "eval iff int(sha256(relative_path).hexdigest()[:16], 16) / 2**64 < eval_fraction",
            "eval_fraction": domain.eval_fraction,
            "document_separator": DOC_SEPARATOR,
            **domain.split_extra,
            "dedup_min_line_chars": DEDUP_MIN_CHARS,
            "min_doc_chars": MIN_DOC_CHARS,
        },
        "excluded": {k: sorted(v) for k, v in sorted(excluded.items())},
        "sides": {},
        "small": {},
    }
    out = Path(out)
    for side in SIDES:
        mine = [d for d in docs if d.side == side]
        name = domain.full_names[side]
        manifest["sides"][side] = {
            "output": name,
            **write(out / name, join(mine)),
            "n_files": len(mine),
            "files": [
                {"path": d.rel, "source_sha256": d.source_sha256, "bytes": len(d.text.encode("utf-8"))} for d in mine
            ],
        }
    if small_bytes > 0:
        small_out = Path(small_out)
        for side in SIDES:
            chosen = small_selection([d for d in docs if d.side == side], small_bytes)
            name = domain.small_names[side]
            manifest["small"][side] = {
                "output": name,
                **write(small_out / name, join(chosen)),
                "n_files": len(chosen),
                "files": [d.rel for d in chosen],
            }
        update_readme(domain, small_out / "README.md", manifest)
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    (out / "manifest.json").write_text(text, encoding="utf-8")
    return manifest


def stats_block(domain: Domain, manifest: dict) -> str:
    src = manifest["source"]
    rows = [
        f"Source: Debian `{src.get('package', '?')}` version `{src.get('version', '?')}`"
        + (f" (.deb sha256 `{src['deb_sha256']}`)" if src.get("deb_sha256") else "")
        + f", `{src['path_in_package']}/`.",
        "",
        "| file | documents | bytes | sha256 |",
        "|---|---:|---:|---|",
    ]
    for side in SIDES:
        s = manifest["sides"][side]
        rows.append(
            f"| {domain.out_dir}/{s['output']} (not committed) | {s['n_files']} | {s['bytes']:,} | `{s['sha256']}` |"
        )
    for side in SIDES:
        s = manifest["small"][side]
        rows.append(f"| {s['output']} | {s['n_files']} | {s['bytes']:,} | `{s['sha256']}` |")
    n_excl = sum(len(v) for v in manifest["excluded"].values())
    rows += [
        "",
        f"{domain.excluded_label}: {n_excl} ("
        + "; ".join(f"{k}: {len(v)}" for k, v in manifest["excluded"].items())
        + ").",
    ]
    return "\n".join(rows)


def update_readme(domain: Domain, path: Path, manifest: dict) -> None:
    """Rewrite the block between the domain's markers in README.md, if both are there."""
    if not path.is_file():
        return
    begin, end = domain.readme_markers
    text = path.read_text(encoding="utf-8")
    a, b = text.find(begin), text.find(end)
    if a < 0 or b < a:
        return
    path.write_text(text[: a + len(begin)] + "\n" + stats_block(domain, manifest) + "\n" + text[b:], encoding="utf-8")


def main(domains: dict[str, Domain], argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 scripts/build_corpus.py", description="Build a domain's calibration/evaluation split."
    )
    ap.add_argument("domain", choices=sorted(domains))
    ap.add_argument(
        "--src", required=True, type=Path, help="the unpacked package's folder of pages (the domain's path_in_package)"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the full split and manifest.json go (default: the domain's data/ folder)",
    )
    ap.add_argument(
        "--small-bytes",
        type=int,
        default=None,
        help="max size of each committed slice (default: the domain's; 0: no slices)",
    )
    ap.add_argument(
        "--small-out", type=Path, default=PACKAGE_DATA, help="where the slices go (default: tpa_compress/data)"
    )
    ap.add_argument("--package", default=None, help="source package name, recorded in the manifest")
    ap.add_argument("--version", default=None, help="source package version, recorded in the manifest")
    ap.add_argument("--deb-sha256", default=None, help="sha256 of the .deb, recorded in the manifest")
    a = ap.parse_args(argv)
    domain = domains[a.domain]
    out = a.out if a.out is not None else Path(domain.out_dir)
    small_bytes = a.small_bytes if a.small_bytes is not None else domain.default_small_bytes
    source = {k: v for k, v in (("package", a.package), ("version", a.version), ("deb_sha256", a.deb_sha256)) if v}
    m = build(domain, a.src, out, small_bytes=small_bytes, small_out=a.small_out, source=source)
    for side in SIDES:
        s = m["sides"][side]
        print(f"{side}: {s['n_files']} {domain.unit}, {s['bytes']:,} bytes -> {out / s['output']}")
    for side, s in m["small"].items():
        print(f"{side} slice: {s['n_files']} {domain.unit}, {s['bytes']:,} bytes -> {s['output']}")
    n_excl = sum(len(v) for v in m["excluded"].values())
    print(f"excluded: {n_excl} {domain.unit}; manifest: {out / 'manifest.json'}")
    return 0
