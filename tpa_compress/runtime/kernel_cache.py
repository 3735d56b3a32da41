"""CUDA C++ kernels compiled with NVRTC once per machine: an on-disk cache of their binaries.

`compile_kernel(source, name, compute_capability, options, include_dirs)` returns what
`torch.cuda._compile_kernel` returns (a launchable kernel), but keeps the compiled binary
under `cache_dir()` keyed by a hash of everything that decides it: the source, the text of
every header it includes from include_dirs (`#include "..."`, followed through the headers),
the kernel name, the NVRTC options (-D sizes included), the target (the device's compute
capability unless named), torch's CUDA version and this file's FORMAT. A second process
loads it instead of compiling (the Triton kernels and torch.compile's graphs have caches of
their own, in ~/.triton and inductor's cache directory). TPA_KERNEL_CACHE sets the directory; "0" turns the cache off.
Where torch lacks the private NVRTC helpers this needs, kernels compile every time.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import torch

FORMAT = 1  # bump when what is stored changes


def cache_dir() -> Path | None:
    env = os.environ.get("TPA_KERNEL_CACHE")
    if env == "0":
        return None
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tpa_compress" / "kernels"


_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.MULTILINE)


def headers(source: str, include_dirs: tuple[str | Path, ...]) -> tuple[str, ...]:
    """The name and text of each header that source includes from include_dirs, and those they
    include, in first-seen order (one entry each; quoted includes not found there are NVRTC's)."""
    seen: dict[str, str] = {}
    todo = _INCLUDE.findall(source)
    while todo:
        name = todo.pop(0)
        path = next((Path(d) / name for d in include_dirs if (Path(d) / name).is_file()), None)
        if name in seen or path is None:
            continue
        seen[name] = path.read_text()
        todo += _INCLUDE.findall(seen[name])
    return tuple(f"{n}\0{t}" for n, t in seen.items())


def key(source: str, name: str, target: str, options: tuple[str, ...], headers: tuple[str, ...] = ()) -> str:
    text = "\0".join((str(FORMAT), str(torch.version.cuda), target, name, *options, source, *headers))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _write(path: Path, data: bytes) -> None:
    """Atomic: a reader sees the whole file or none (processes may build the same kernel)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def compile_kernel(
    source: str,
    name: str,
    compute_capability: str | None = None,
    options: tuple[str, ...] = (),
    include_dirs: tuple[str | Path, ...] = (),
):
    """The kernel `name` of `source` for the current device, from the disk cache if there;
    include_dirs: where NVRTC finds the headers source includes."""
    dirs = [str(d) for d in include_dirs] or None
    try:
        from torch.cuda._utils import _cuda_load_module, _nvrtc_compile
    except ImportError:
        return torch.cuda._compile_kernel(
            source, name, compute_capability=compute_capability, cuda_include_dirs=dirs, nvcc_options=list(options)
        )
    target = compute_capability or "".join(map(str, torch.cuda.get_device_capability()))
    d = cache_dir()
    k = key(source, name, target, options, headers(source, include_dirs))
    path = d / f"{k}.bin" if d is not None else None
    if path is not None and path.is_file() and path.with_suffix(".name").is_file():
        binary, mangled = path.read_bytes(), path.with_suffix(".name").read_text()
    else:
        out = _nvrtc_compile(
            source, name, compute_capability=target, cuda_include_dirs=dirs, nvcc_options=list(options)
        )
        # (binary, lowered name); older torch returned the binary alone (extern "C" names)
        binary, mangled = out if isinstance(out, tuple) else (out, name)
        mangled = mangled or name
        if path is not None:
            try:
                _write(path, binary)
                _write(path.with_suffix(".name"), mangled.encode())
            except OSError:  # a read-only home: compile each time
                pass
    kern = _cuda_load_module(binary, [mangled])
    return kern[mangled] if isinstance(kern, dict) else getattr(kern, mangled)
