"""The CUDA decode kernels' sources against a reference revision's: for each kernel kind and a
set of sizes, the reference's kernel source (as its cuda_decode.source built it: a whole
source, or a translation unit built with that revision's build_options and headers) and this
tree's (cuda/latent_decode_*.cu with its headers and build_options' -D defines) through the C
preprocessor, whitespace folded and diffed token line by token line; with --nvcc, both
compiled to PTX (sm_90a for "wg", else sm_90) and diffed instruction by instruction
(register and label names masked), and ptxas's registers and spills for each; with --nvrtc
LIB, both built by NVRTC through kernel_cache.compile_kernel and torch's own NVRTC wrapper
(the headers by include path, the sizes as -D options, as on the GPU machine) and their
cubins compared.

    python bench/check_cuda_sources.py --ref b9d79d2 [--nvcc] [--nvrtc LIBNVRTC] [--out DIR] [--builds 0,5,11]

Prints one line per build: preprocessed token lines that differ (old / new; "unmatched":
those only one side has anywhere, moves aside), and with --nvcc the PTX lines that differ and
ptxas's "registers, spill bytes" old -> new. The diffs go to --out. Needs cpp (and nvcc for
--nvcc); runs on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tpa_compress.runtime import cuda_decode  # noqa: E402

# kind, rk, rv, g, minb, block, warps, unroll, normz, kscale, strides, phases: the GPU suite's
# shapes (tests/test_cuda_decode.py) and the builds try_build / the benchmark make
BUILDS = [
    ("tile", 128, 128, 4, 1, 64, 8, 1, False, False, (0, 0), False),
    ("tile", 128, 128, 4, 1, 128, 8, 1, False, False, (0, 0), False),
    ("tile", 64, 256, 4, 1, 64, 8, 1, False, False, (0, 0), False),
    ("tile", 128, 256, 2, 1, 128, 8, 1, False, False, (0, 0), False),
    ("tile", 96, 128, 2, 2, 64, 16, 1, False, False, (0, 0), False),
    ("warp", 128, 128, 4, 1, 128, 8, 4, False, False, (0, 0), False),
    ("warp", 128, 128, 4, 1, 128, 8, 4, True, False, (0, 0), False),
    ("warp", 48, 64, 4, 1, 128, 8, 4, False, False, (0, 0), False),
    ("warp", 112, 96, 1, 1, 128, 8, 4, False, False, (0, 0), False),
    ("warp", 128, 16, 4, 1, 128, 8, 4, False, False, (0, 0), False),
    ("warp", 96, 128, 2, 1, 128, 8, 1, True, False, (0, 0), False),
    ("wg", 128, 128, 4, 1, 128, 8, 4, False, False, (256, 256), False),
    ("wg", 128, 128, 4, 1, 128, 8, 4, False, True, (256, 256), False),
    ("wg", 128, 128, 4, 1, 128, 8, 4, False, False, (256, 256), True),
    ("wg", 96, 160, 4, 1, 128, 8, 4, False, True, (256, 256), False),
    ("wg", 64, 256, 2, 1, 128, 8, 4, False, True, (320, 320), False),
    ("wg", 112, 160, 4, 1, 128, 8, 4, False, False, (272, 272), False),
    ("wg", 48, 64, 4, 1, 128, 8, 4, False, False, (112, 112), False),
    ("wg", 128, 16, 1, 1, 128, 8, 4, False, True, (144, 144), False),
]

# the reference's sources, built by its own cuda_decode.source (run in its tree): a whole
# source per build (the str.replace revisions), or, where source takes the kind alone, the
# kernel's translation unit with that tree's build_options and its CUDA_DIR to include from
_OLD = """
import inspect, json, sys
from tpa_compress.runtime import cuda_decode
units = len(inspect.signature(cuda_decode.source).parameters) == 1
for i, b in enumerate(json.loads(sys.argv[1])):
    kind, rk, rv, g, minb, block, warps, unroll, normz, kscale, strides, phases = b
    args = (rk, rv, g, minb, block, warps, kind, unroll, normz, kscale, tuple(strides), phases)
    if units:
        src = cuda_decode.source(kind)
        opts = {"options": cuda_decode.build_options(*args), "include": str(cuda_decode.CUDA_DIR)}
    else:
        src, opts = cuda_decode.source(*args), {"options": ["-std=c++17"], "include": None}
    open(f"{sys.argv[2]}/old{i}.cu", "w").write(src)
    open(f"{sys.argv[2]}/old{i}.json", "w").write(json.dumps(opts))
"""

_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\.?\d[\w.]*|\w+|<<=|>>=|->|\+\+|--|<<|>>|[-+*/%&|^<>=!]=|&&|\|\||::|\S')


def folded(text: str) -> list[str]:
    """Preprocessed C++ as token lines: whitespace folded, a line break after ; { }."""
    out, line = [], []
    for tok in _TOKEN.findall(text):
        line.append(tok)
        if tok in (";", "{", "}"):
            out.append(" ".join(line))
            line = []
    return out + ([" ".join(line)] if line else [])


def preprocess(path: Path, options: tuple[str, ...] = (), include: Path | None = None) -> str:
    defines = [o for o in options if o.startswith("-D")]
    cmd = ["cpp", "-P", "-x", "c++", "-std=c++17", *defines, *(["-I", str(include)] if include else []), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def masked(text: str) -> list[str]:
    """PTX lines without comments and register declarations, with every virtual register and
    label name masked: equal lists are the same instructions in the same order."""
    keep = (ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("//", ".reg")))
    return [re.sub(r"%[a-z]+\d+", "%R", re.sub(r"\$L__\w+", "$L", ln)) for ln in keep]


def ptx(path: Path, kind: str, out: Path, options: tuple[str, ...] = (), include: Path | None = None):
    """(masked PTX lines, "registers, spill bytes" from ptxas)."""
    arch = "sm_90a" if kind == "wg" else "sm_90"
    defines = [o for o in options if o.startswith("-D")]
    inc = ["-I", str(include)] if include else []
    subprocess.run(
        ["nvcc", "-std=c++17", f"-arch={arch}", *defines, *inc, "-ptx", str(path), "-o", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    r = subprocess.run(["ptxas", f"-arch={arch}", "-v", str(out), "-o", os.devnull], capture_output=True, text=True)
    regs = re.search(r"Used (\d+) registers", r.stderr)
    spill = re.search(r"(\d+) bytes spill stores", r.stderr)
    return masked(out.read_text()), f"{regs.group(1) if regs else '?'} regs, {spill.group(1) if spill else '?'} B spill"


def nvrtc_compiler(lib_path: str):
    """kernel_cache.compile_kernel as the GPU machine runs it (torch's own _nvrtc_compile: its
    include paths and flags), on libnvrtc at lib_path (e.g. from the nvidia-cuda-nvrtc-cu12
    wheel) and without a GPU: the compute capability is taken as 9.0 and the cubin is returned
    instead of loaded. Returns compile(source, kind, options, include_dirs) -> cubin bytes."""
    import ctypes

    import torch
    import torch.cuda._utils as cu
    import torch.utils.cpp_extension as ce

    from tpa_compress.runtime import kernel_cache

    lib = ctypes.CDLL(lib_path)
    cu._get_nvrtc_library = cu._get_gpu_rtc_library = lambda: lib
    cu._cuda_load_module = lambda binary, names: {names[0]: binary}
    torch.cuda.get_device_capability = lambda *a: (9, 0)
    ce.CUDA_HOME = ce.CUDA_HOME or os.path.dirname(os.path.dirname(shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"))
    os.environ["TPA_KERNEL_CACHE"] = "0"

    def compile(source: str, kind: str, options: tuple[str, ...], include_dirs: tuple[Path, ...] = ()) -> bytes:
        return kernel_cache.compile_kernel(
            source, "latent_decode", "90a" if kind == "wg" else None, options, include_dirs
        )

    return compile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="b9d79d2", help="the revision whose kernel sources are the reference")
    ap.add_argument("--nvcc", action="store_true", help="also compile both to PTX and compare")
    ap.add_argument(
        "--nvrtc", default=None, metavar="LIBNVRTC", help="also build both with this libnvrtc.so and compare the cubins"
    )
    ap.add_argument("--out", default=None, help="where the diffs go (default: a temporary folder)")
    ap.add_argument("--builds", default=None, metavar="I,J,...", help="only these builds (indices into BUILDS)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="cuda_check_"))
    out.mkdir(parents=True, exist_ok=True)
    tree = Path(tempfile.mkdtemp(prefix="cuda_ref_"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", args.ref, "tpa_compress"], capture_output=True, check=True
    )
    tarfile.open(fileobj=BytesIO(archive.stdout)).extractall(tree, filter="data")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, "-c", _OLD, json.dumps(BUILDS), str(out)], env=env, cwd=tree, check=True)

    nvrtc = nvrtc_compiler(args.nvrtc) if args.nvrtc else None
    status = 0
    only = {int(i) for i in args.builds.split(",")} if args.builds else None
    for i, b in enumerate(BUILDS):
        if only is not None and i not in only:
            continue
        kind = b[0]
        opts = cuda_decode.build_options(*b[1:4], *b[4:7], kind, *b[7:])
        new_path = cuda_decode.CUDA_DIR / f"latent_decode_{kind}.cu"
        ref = json.loads((out / f"old{i}.json").read_text())
        old_opts, old_inc = tuple(ref["options"]), ref["include"] and Path(ref["include"])
        old_pp = folded(preprocess(out / f"old{i}.cu", old_opts, old_inc))
        new_pp = folded(preprocess(new_path, opts, cuda_decode.CUDA_DIR))
        diff = list(difflib.unified_diff(old_pp, new_pp, "old", "new", n=1, lineterm=""))
        (out / f"pp{i}.diff").write_text("\n".join(diff) + "\n")
        minus = sum(ln.startswith("-") and not ln.startswith("---") for ln in diff)
        plus = sum(ln.startswith("+") and not ln.startswith("+++") for ln in diff)
        # moved lines aside: the token lines only one side has anywhere
        gone, new = Counter(old_pp) - Counter(new_pp), Counter(new_pp) - Counter(old_pp)
        (out / f"pp{i}.unmatched").write_text(
            "only in old:\n"
            + "".join(f"  {n} x {t}\n" for t, n in gone.items())
            + "only in new:\n"
            + "".join(f"  {n} x {t}\n" for t, n in new.items())
        )
        sizes = " ".join(o[2:] for o in opts[1:])
        line = (
            f"{i:2d} {kind:4s} {sizes:50s} preprocessed: diff -{minus} +{plus} lines,"
            f" unmatched -{gone.total()} +{new.total()}"
        )
        left = re.findall(r"\b__[A-Z][A-Z0-9_]*__\b", " ".join(new_pp))
        if set(left) - {"__CUDACC_RTC__"}:
            line += f" PLACEHOLDERS LEFT {sorted(set(left))}"
            status = 1
        if args.nvcc:
            old_ptx, old_info = ptx(out / f"old{i}.cu", kind, out / f"old{i}.ptx", old_opts, old_inc)
            new_ptx, new_info = ptx(new_path, kind, out / f"new{i}.ptx", opts, cuda_decode.CUDA_DIR)
            pd = list(difflib.unified_diff(old_ptx, new_ptx, "old", "new", n=1, lineterm=""))
            (out / f"ptx{i}.diff").write_text("\n".join(pd) + "\n")
            changed = sum(ln[:1] in "+-" and ln[:3] not in ("+++", "---") for ln in pd)
            line += f"; PTX ({len(new_ptx)} lines) lines differing: {changed}; ptxas {old_info} -> {new_info}"
        if nvrtc:
            new_bin = nvrtc(cuda_decode.source(kind), kind, opts, (cuda_decode.CUDA_DIR,))
            old_bin = nvrtc((out / f"old{i}.cu").read_text(), kind, old_opts, (old_inc,) if old_inc else ())
            same = (
                "same bytes" if new_bin == old_bin else f"differs in {sum(a != b for a, b in zip(new_bin, old_bin))} B"
            )
            line += f"; NVRTC cubin {len(old_bin)} -> {len(new_bin)} B, {same}"
        print(line, flush=True)
    print(f"diffs in {out}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
