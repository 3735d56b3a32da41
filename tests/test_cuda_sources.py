"""The CUDA decode kernels' sources (runtime/cuda/): each kernel a translation unit that
includes guarded, self-contained headers and reads its sizes from -D build options
(cuda_decode.build_options). CPU: the C preprocessor where this machine has one; nvcc builds
them in tests/test_runtime_kernels.py, the GPU suite runs them (tests/test_cuda_decode.py)."""

import re
import shutil
import subprocess

import pytest

from tpa_compress.runtime import cuda_decode, kernel_cache

CPP = shutil.which("cpp")
HEADERS = sorted(cuda_decode.CUDA_DIR.glob("*.cuh"))
KERNELS = sorted(cuda_decode.CUDA_DIR.glob("latent_decode_*.cu"))
PLACEHOLDER = re.compile(r"\b__[A-Z][A-Z0-9_]*__\b")  # (CUDA's own keywords are lower case)


def code_of(text: str) -> str:
    """C++ text without comments, string and character literals (what braces are counted in)."""
    return re.sub(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', " ", text, flags=re.DOTALL)


def cpp(path, *options: str) -> str:
    cmd = ["cpp", "-P", "-x", "c++", "-std=c++17", *options, f"-I{cuda_decode.CUDA_DIR}", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def test_headers_are_guarded_balanced_and_included():
    """Each header has an include guard around all of it, balanced braces and parentheses, no
    placeholder; every header is included by some kernel, and each kernel's includes are what
    the kernel cache keys on."""
    assert {h.name for h in HEADERS} >= {"helpers.cuh", "params.cuh", "sink.cuh", "merge.cuh", "wgmma.cuh"}
    for h in HEADERS:
        code = code_of(h.read_text())
        guard = re.match(r"\s*#ifndef (\w+)\s*#define \1\s", code)
        assert guard and code.rstrip().endswith("#endif"), h.name
        assert code.count("{") == code.count("}") and code.count("(") == code.count(")"), h.name
        assert not PLACEHOLDER.search(h.read_text()), h.name
    included = set()
    for k in KERNELS:
        names = [e.split("\0")[0] for e in kernel_cache.headers(k.read_text(), (cuda_decode.CUDA_DIR,))]
        assert "helpers.cuh" in names and "params.cuh" in names, k.name
        included |= set(names)
    assert included == {h.name for h in HEADERS}


@pytest.mark.skipif(CPP is None, reason="no C preprocessor")
def test_headers_take_sizes_as_template_parameters():
    """A header preprocesses the same with every kernel size defined as a macro as without:
    sizes reach headers as template parameters or arguments, never as a kernel's -D names."""
    names = sorted(
        {
            n
            for opts in (cuda_decode.build_options(16, 16, 1, kind=k) for k in ("tile", "warp", "wg"))
            for n in (o[2:].split("=")[0] for o in opts if o.startswith("-D"))
        }
    )
    assert {"RK", "RV", "G", "BLK", "KSCALE", "SKT"} <= set(names)
    for h in HEADERS:
        assert cpp(h) == cpp(h, *(f"-D{n}=SIZE_{n}_IS_A_MACRO" for n in names)), h.name


@pytest.mark.skipif(CPP is None, reason="no C preprocessor")
@pytest.mark.parametrize(
    "kind,rk,rv,g,normz,kscale,phases",
    [
        ("tile", 128, 256, 4, False, False, False),
        ("tile", 64, 128, 2, False, False, False),
        ("warp", 128, 128, 4, True, False, False),
        ("warp", 48, 64, 1, False, False, False),
        ("wg", 96, 160, 4, False, True, False),
        ("wg", 128, 128, 8, False, False, True),
    ],
)
def test_kernels_preprocess_with_their_build_options(kind, rk, rv, g, normz, kscale, phases):
    """Each kernel, its sizes given as build_options' -D defines, preprocesses to one entry
    `latent_decode` with balanced braces and no placeholder or size name left; without them it
    stops at its #error. The wg kernel's MMA wrappers: one m64n128k16 with 64 accumulators."""
    wg = kind == "wg"
    opts = cuda_decode.build_options(
        rk, rv, g, 1, 128, 8, kind, 4, normz, kscale, (rk + rv,) * 2 if wg else (0, 0), phases
    )
    assert opts[0] == "-std=c++17" and f"-DRK={rk}" in opts and f"-DG={g}" in opts
    path = cuda_decode.CUDA_DIR / f"latent_decode_{kind}.cu"
    out = cpp(path, *opts[1:])
    code = code_of(out)
    assert out.count('extern "C" __global__') == 1 and "latent_decode(" in out
    assert code.count("{") == code.count("}") and code.count("(") == code.count(")")
    assert not PLACEHOLDER.search(out)
    assert not re.search(r"\b(RK|RV|G|BLK|MINB|UNROLL|NORMZ|KSCALE|PHASES|SKT|SVT)\b", code)
    if wg:
        assert out.count("wgmma.mma_async.sync.aligned.m64n128k16") == 1 and '"+f"(d[63])' in out
        assert out.count("wgmma.wait_group.sync.aligned 1;") == 1
    if kind == "warp":
        assert "#pragma unroll REBUILD_UNROLL" in out and "REBUILD_UNROLL = 4 }" in out
    missing = subprocess.run(
        ["cpp", "-P", "-x", "c++", f"-I{cuda_decode.CUDA_DIR}", str(path)], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "build_options" in missing.stderr
