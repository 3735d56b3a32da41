"""Atomic outputs: build in a temporary sibling, then rename into place.

A crash or a bad input half-way leaves no half-written output and never touches the
input. Before any work, `check_output_dir` refuses an output that is a file, that would
overwrite the input, that sits where nothing can be written, or that is a non-empty folder
which is not a previous output (only a folder holding a `report.json` is replaced, and only
with `force`).

Temporary siblings carry the writer's pid (`.NAME.tmp-PID-XXXX`, `.NAME.old-PID`), so a
later run can tell what a killed run left (`clean_leftovers`): a dead writer's temporary
folder is removed, and a previous output moved aside by a swap that never finished is put
back where it was. Outputs get the user's usual permissions (0777 less the umask), not
mkdtemp's 0700.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import TPAError

PREVIOUS_OUTPUT_MARKER = "report.json"


def _writable_ancestor(path: Path) -> Path:
    p = path.resolve()
    while not p.exists():
        p = p.parent
    return p


def check_output_dir(out: str | Path, force: bool = False, protect: list[str | Path] = ()) -> None:
    """Refuse, before any work, an output that would clobber the input or other data, or
    that cannot be written."""
    out = Path(out)
    for p in protect:
        if not p:
            continue
        p = Path(p).resolve()
        if out.resolve() == p or p.is_relative_to(out.resolve()):
            raise TPAError(f"{out}: output would overwrite the input {p}; choose another --out")
    if out.exists() and not out.is_dir():
        raise TPAError(f"{out}: output exists and is a file, not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise TPAError(f"{out}: output exists and is not empty; pass --force to replace it")
        if not (out / PREVIOUS_OUTPUT_MARKER).is_file():
            raise TPAError(
                f"{out}: --force replaces only a previous output (a folder with "
                f"{PREVIOUS_OUTPUT_MARKER}); this folder holds other files; choose another --out"
            )
    base = _writable_ancestor(out.parent)
    if not base.is_dir():
        raise TPAError(f"{out}: {base} is not a folder; choose another --out")
    if not os.access(base, os.W_OK | os.X_OK):
        raise TPAError(
            f"{out}: cannot write in {base} (permission denied or a read-only filesystem); choose another --out"
        )


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_of(name: str, tag: str) -> int | None:
    rest = name.split(tag, 1)[1]
    head = rest.split("-", 1)[0]
    return int(head) if head.isdigit() else None


def clean_leftovers(out: str | Path) -> list[str]:
    """Remove what killed runs left beside `out`; returns one line per thing done."""
    out = Path(out)
    parent = out.parent
    if not parent.is_dir():
        return []
    done = []
    for p in sorted(parent.glob(f".{out.name}.old-*")):
        pid = _pid_of(p.name, ".old-")
        if pid is None or _alive(pid):
            continue
        if not out.exists():
            p.rename(out)
            done.append(f"restored {out} from an interrupted replacement ({p.name})")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p} left by an interrupted run")
    for p in sorted(parent.glob(f".{out.name}.tmp-*")):
        pid = _pid_of(p.name, ".tmp-")
        if pid is not None and _alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)
        done.append(f"removed {p} left by an interrupted run")
    return done


def _umask() -> int:
    umask = os.umask(0)  # reading the umask means setting it: put it straight back
    os.umask(umask)
    return umask


def _usual_mode(path: Path) -> None:
    os.chmod(path, 0o777 & ~_umask())


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, force: bool = False, protect: list[str | Path] = ()):
    out = Path(out)
    check_output_dir(out, force, protect)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
        _usual_mode(tmp)
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise TPAError(f"{path}: cannot write ({e.strerror or type(e).__name__}); choose another path") from e
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        _usual_file_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _usual_file_mode(path: str) -> None:
    os.chmod(path, 0o666 & ~_umask())


def check_output_file(path: str | Path, flag: str) -> None:
    """Refuse, before any work, an output file that cannot be written (`flag`: the option
    that named it)."""
    path = Path(path)
    if path.is_dir():
        raise TPAError(f"{flag} {path}: is a folder; give a file path")
    base = _writable_ancestor(path.parent)
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TPAError(f"{flag} {path}: cannot write there (permission denied or a read-only filesystem)")
