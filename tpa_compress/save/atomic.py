"""Atomic outputs: build in a temporary sibling, then rename into place.

A crash or a bad input half-way leaves no half-written output and never touches the
input; an existing non-empty output folder is refused unless `force`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import TPAError


def check_output_dir(out: str | Path, force: bool = False, protect: list[str | Path] = ()) -> None:
    """Refuse, before any work, an output that would clobber the input or existing data."""
    out = Path(out)
    for p in protect:
        if not p:
            continue
        p = Path(p).resolve()
        if out.resolve() == p or p.is_relative_to(out.resolve()):
            raise TPAError(f"{out}: output would overwrite the input {p}; choose another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise TPAError(f"{out}: output exists and is not empty; pass --force to replace it")


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, force: bool = False, protect: list[str | Path] = ()):
    out = Path(out)
    check_output_dir(out, force, protect)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
