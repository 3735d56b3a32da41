"""Hand-written CUDA kernels for the decode step of a latent-K, latent-V layer.

Three kernels write the same per-chunk states (kind_for picks one, `CudaBuild.kernel`):
"wg" (cuda/latent_decode_wg.cu, Hopper only, the default there): two warpgroups per
program rebuild 64-key tiles with wgmma, U resident in shared memory and read by the
tensor cores; "warp" (cuda/latent_decode_warp.cu, the default elsewhere): each warp scores
its own 16-key subtiles with mma.sync, U in shared memory; "tile" (cuda/latent_decode_tile.cu,
V ranks 256 the wg kernel cannot hold, described below): each warp owns 16 RoPE pairs with
its slice of U in registers. docs/architecture.md compares them. This module picks, builds
and launches them.

Sources (CUDA_DIR): each kernel is one translation unit, cuda/latent_decode_{kind}.cu, with
one `extern "C"` entry `latent_decode`, that includes the headers beside it: helpers.cuh
(types, mma.sync / ldmatrix / cp.async wrappers, exp2, cos / sin), params.cuh (the
parameter list every kernel takes, DECODE_PARAMS; the shared memory bound and its size
checked, DECODE_SMEM; the chunk a program decodes, chunk_of), sink.cuh (the sink tile's
exact state), softmax.cuh (the mma.sync kernels' online softmax step), merge.cuh (the warp
kernels' epilogue), wgmma.cuh (Hopper's warpgroup MMA). Each header is guarded and self-contained: `__forceinline__`
device functions that take what they use as arguments and their sizes as template
parameters. A kernel's sizes are compile-time constants from build options: `build_options`
gives NVRTC C++17 and a -D define for each name in `_SIZES[kind]`; NVRTC finds the headers
through its include path (CUDA_DIR), and kernel_cache keys a binary on the source, the
headers it includes and the options. A new size: its name in `_SIZES[kind]`, its value in
`build_options`; a new header: a guarded cuda/*.cuh that uses none of the -D names
(tests/test_cuda_sources.py checks both; bench/check_cuda_sources.py compares the
preprocessed sources and the PTX with a reference revision's).

Why it exists: the Triton kernel (kernels.py) rebuilds K = U z per tile with U streamed
through shared memory on every tile. Here each of the 8 warps of a program owns 16 RoPE
pairs (32 of the 256 head dims) and keeps its slice of U in registers as mma B-fragments
for the whole program, so a tile only streams z:

  per 64-key tile:  z, z_v, positions --cp.async--> shared (2 stages)
  each warp:        K[keys, its dims] = z @ U^T + bias (mma.sync m16n8k16, bias as the
                    accumulator's start), the QK-norm's sum of squares over its dims,
                    RoPE in registers (a pair's two halves sit in the same thread; over
                    contiguous positions the angles advance by a fixed rotation per key,
                    so one sin/cos per pair and tile), partial scores = rotated K @ q^T
                    (the accumulator fragments are the next mma's A operand)
  all threads:      scores = sum of the 8 partials x rsqrt(mean square + eps) x scale x
                    log2(e), mask
  each warp:        online softmax in exp2 (the same in every warp) and p @ z_v for its
                    latent columns

It writes the same per-chunk softmax states as the Triton kernel's `_decode_partial`
(latent mixtures, LATENT_COMBINE), and the sink tile's own state, so the Triton combine
finishes the step. Choose once, run many times: `prepare` makes a layer's constants (a
frozen CudaLayer: the kernel, its builds, U and the bias as the kernel reads them, its
shared-memory images) when the layer is planned and compiles its builds (`try_build`) with
torch's NVRTC, once per machine (kernel_cache.py keeps the binaries: no compiler or
package beyond torch); `launch` reads that object and the step's tensors. The "wg" kernel
is launched with programmatic dependent launch where the layer has it on (`launch_pdl`:
its programs start under the previous kernel's tail).
Serves head dim 256 with 8 query heads per KV head at
most, K ranks that are multiples of 16 up to 128, V ranks that are multiples of 16 up to 128
("wg", "warp"), above 128 where the wg kernel's buffers fit (wg_fits), else 128 or 256
("tile"), a bf16 cache, any K basis. Their speed: docs/benchmarks.md.
"""

from __future__ import annotations

import ctypes
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import TPAError
from .kernel_cache import compile_kernel

LONG = 8192  # cache slots from which tiles are 128 keys
KINDS = ("wg", "warp", "tile")


@dataclass(frozen=True)
class CudaBuild:
    """How the kernels are built and their work is split (DecodeOptions.cuda_build). The
    defaults are the runtime's; other values are for benchmarks (bench_decode_kernel
    --cuda-builds, bench_generate --cuda-kernels).

    kernel  the kernel a layer takes where it serves the ranks (kind_for): "wg" (on Hopper;
            "warp" elsewhere), "warp" or "tile"
    minb    programs per SM the register budget is cut for (launch bounds; 1: 230-250
            registers, no spills; 2: capped at 128, with spills, slower)
    warps   the tile kernel's warps per program (8: 16 RoPE pairs each)
    unroll  the unrolling of the warp-level kernels' 16-pair loop (1, 2, 4)
    block   the tile kernel's keys per tile: 0 by cache length (block_for), 64 or 128
    per_sm  programs per SM the chunking plans for (the register budget allows one)
    """

    kernel: str = "wg"
    minb: int = 1
    warps: int = 8
    unroll: int = 4
    block: int = 0
    per_sm: int = 1

    def __post_init__(self):
        if self.kernel not in KINDS:
            raise TPAError(f"CUDA build kernel={self.kernel!r} is not valid; valid: {', '.join(KINDS)}")
        if self.block not in (0, 64, 128):
            raise TPAError(f"CUDA build block={self.block} is not valid; valid: 0 (by cache length), 64, 128")
        for name in ("minb", "warps", "unroll", "per_sm"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise TPAError(f"CUDA build {name}={getattr(self, name)!r} is not valid; valid: a whole number >= 1")


CUDA_DIR = Path(__file__).parent / "cuda"  # the kernels' sources and the headers they include
# the compile-time sizes each kernel reads, -D options (build_options): K and V ranks, query heads
# per KV head; "tile": keys per tile, warps, programs per SM of its launch bounds; "warp": the
# rebuild loop's unroll, the QK-norm sum from z; "wg": the keys' norm factors from the cache,
# per-phase clocks, the cache's row strides of z and z_v
_SIZES = {
    "tile": ("RK", "RV", "G", "BLK", "WARPS", "MINB"),
    "warp": ("RK", "RV", "G", "UNROLL", "NORMZ"),
    "wg": ("RK", "RV", "G", "KSCALE", "PHASES", "SKT", "SVT"),
}


@functools.cache
def hopper(device_index: int | None = None) -> bool:
    """wgmma (the "wg" kernel) is sm_90a only."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device_index) == (9, 0)


def kind_for(rv: int, rk: int, build: CudaBuild) -> str:
    """Which kernel a layer takes: build.kernel where it serves the ranks ("wg" on Hopper,
    else "warp"; V ranks above 128 take "wg" where its buffers fit, else "tile")."""
    if build.kernel == "wg" and hopper() and rv > 128 and _wg_v_rank(rk, rv):
        return "wg"
    if build.kernel in ("wg", "warp") and rv <= 128:
        return "wg" if build.kernel == "wg" and hopper() else "warp"
    return "tile"


WG_SMEM_MAX = 232448  # bytes of shared memory a Hopper program may opt in to (227 KB)


def wg_fits(rk: int, rv: int) -> bool:
    """The wg kernel's buffers for these ranks fit a program's shared memory (with or
    without the cached norm factors): K 128 takes V up to 128, K 112 up to 160, K 96 up to
    192, K 64 up to 256 (the V stages grow with V's rank, U's image with K's)."""
    return max(smem_bytes(rk, rv, 1, 128, 8, "wg", ks) for ks in (False, True)) <= WG_SMEM_MAX


def _wg_v_rank(rk: int, rv: int) -> bool:
    """A V rank the wg kernel takes beside K rank rk: a multiple of 16 up to 128, or above
    128 where its buffers fit (wg_fits)."""
    return rv % 16 == 0 and (rv <= 128 or (rv <= 256 and wg_fits(rk, rv)))


def smem_bytes(rk: int, rv: int, g: int, block: int, warps: int, kind: str = "tile", kscale: bool = False) -> int:
    if kind == "wg":  # its Smem struct: U + bias block, ones, 2 warpgroups x 2 stages of z / z_v / positions
        # (+ the keys' norm factors), q, pair tables, U's mbarrier (16 bytes)
        return (
            32 * (rk // 8 + 2) * 128
            + 2048
            + 4 * 64 * (rk * 2 + (rv + 8) * 2 + 4 + 4 * kscale)
            + 8 * (64 + 4) * 8
            + ((64 * 16 + 8 * (2 * 64 + 4) * 8) if kscale else 128 * 24)
            + 16
        )
    if (
        kind == "warp"
    ):  # the Smem struct: U, pair tables, 2 U^T b, bias quads, per-warp stages of z / z_v / positions, q
        return (
            256 * (rk + 8) * 2
            + 2 * 128 * 16
            + rk * 2
            + 128 * 16
            + 8 * 2 * 16 * ((rk + 8) + (rv + 8)) * 2
            + 8 * 2 * 16 * 4
            + 8 * (128 + 4) * 4
        )
    z = 2 * block * (rk + 8) * 2
    v = 2 * block * (rv + 8) * 2
    return z + v + 2 * block * 4 + warps * (g + 1) * (block + 4) * 4 + g * (block + 4) * 4


def block_for(rk: int, rv: int, g: int, t: int, build: CudaBuild) -> int:
    """Keys per tile for a cache of t slots: 128 for the warp-level kernels; the tile
    kernel's build.block, or by cache length where it is 0: 128 from LONG slots up (fewer
    barriers per key), else 64 (faster on short caches); 64 also where 128's buffers exceed
    a program's shared memory."""
    if kind_for(rv, rk, build) in ("warp", "wg"):
        return 128  # 8 warps x 16-key subtiles; 2 warpgroups x 64-key tiles
    blk = build.block or (128 if t >= LONG else 64)
    return blk if smem_bytes(rk, rv, g, blk, build.warps) <= 227 * 1024 else 64


# the wg kernel's U rows: dims 0-63, 128-191 (its first 128-dim half), 64-127, 192-255
WG_ROWS = torch.cat([torch.arange(0, 64), torch.arange(128, 192), torch.arange(64, 128), torch.arange(192, 256)])


def wg_images(up: torch.Tensor, bias: torch.Tensor, invf: torch.Tensor, rscale: float, kv: int):
    """The "wg" kernel's constant shared memory, laid out once per layer so that a program's
    prologue is two bulk copies (no loads feeding arithmetic, no sin/cos before the first tile):
    per KV head, U (256 dims x r, bf16, rows in WG_ROWS order) in the no-swizzle
    core-matrix layout followed in each 8-row group by the bias block (k = r: the bias in
    bf16 and its rounding error, so 1 * hi + 1 * lo rebuilds it to ~16 bits; the next 16
    bytes x 8 rows zero), (kv, 32 * SBOU) uint8; and the KSCALE pair tables as the
    kernel's Smem holds them, pp (per 2 pairs: both frequencies / rope scale, cos 8f and
    sin 8f as f16 pairs) then to (cos and sin of g4 f for g4 = 0..7, f16 pairs, rows
    padded to 68 entries), uint8."""
    d, r = 256, up.shape[1]
    sbou = (r // 8 + 2) * 128
    # rows in the order the kernel's two 128-dim halves take them (WG_ROWS): each half holds
    # whole RoPE pairs (dim, dim + 128)
    up = up.reshape(kv, d, r)[:, WG_ROWS.to(up.device)].reshape(kv * d, r)
    bias = bias.reshape(kv, d)[:, WG_ROWS.to(bias.device)].reshape(kv * d)
    img = torch.zeros(kv, 32, sbou, dtype=torch.uint8, device=up.device)
    u = up.to(torch.bfloat16).reshape(kv, 32, 8, r // 8, 8).permute(0, 1, 3, 2, 4).contiguous()
    img[:, :, : r // 8 * 128] = u.view(torch.uint8).reshape(kv, 32, r // 8 * 128)
    hi = bias.float().to(torch.bfloat16)
    lo = (bias.float() - hi.float()).to(torch.bfloat16)
    blk = torch.zeros(kv * d, 8, dtype=torch.bfloat16, device=up.device)
    blk[:, 0], blk[:, 1] = hi, lo
    img[:, :, r // 8 * 128 : r // 8 * 128 + 128] = blk.view(torch.uint8).reshape(kv, 32, 128)
    inv = torch.tensor(1.0 / rscale, dtype=torch.float32, device=invf.device)  # the kernel's products, in its order
    f = invf.float() * inv
    f0, f1 = f[0::2], f[1::2]
    half2 = lambda a, b: torch.stack([a, b], -1).to(torch.float16).view(torch.int32).squeeze(-1)  # noqa: E731
    pp = torch.stack(
        [
            f0.view(torch.int32),
            f1.view(torch.int32),
            half2(torch.cos(8 * f0), torch.cos(8 * f1)),
            half2(torch.sin(8 * f0), torch.sin(8 * f1)),
        ],
        -1,
    )  # (64, 4) words
    o = torch.arange(8, dtype=torch.float32, device=f.device)[:, None]
    a0, a1 = (o * invf.float()[0::2]) * inv, (o * invf.float()[1::2]) * inv
    to = torch.zeros(8, 68, 2, dtype=torch.int32, device=f.device)
    to[:, :64, 0], to[:, :64, 1] = half2(torch.cos(a0), torch.cos(a1)), half2(torch.sin(a0), torch.sin(a1))
    tab = torch.cat([pp.reshape(-1), to.reshape(-1)]).view(torch.uint8)
    return img.view(kv, 32 * sbou), tab.to(up.device)


def permute_up(up: torch.Tensor) -> torch.Tensor:
    """U (rows, r) bf16 with each row's 32-bit words reordered so that the mma B-fragment
    words a lane needs (k-step ks: words 8 ks + t and 8 ks + 4 + t, t = lane % 4) sit
    together: one 8-byte load per k-step instead of two scattered 4-byte loads."""
    ks = up.shape[1] // 16
    words = up.contiguous().view(torch.int32)  # (rows, r / 2)
    perm = [8 * k + 4 * i + t for t in range(4) for k in range(ks) for i in range(2)]
    return words[:, perm].contiguous().view(up.dtype)


def _heads_and_k(d: int, g: int, rk: int) -> bool:
    """Head dim, query heads per KV head and K rank every CUDA kernel here is written for."""
    return d == 256 and 1 <= g <= 8 and rk % 16 == 0 and 16 <= rk <= 128


def wg_shape(d: int, g: int, rk: int, rv: int) -> bool:
    """The latent ranks and head shapes the Hopper wg kernel is written for (no device
    check; convert notes converted layers outside them)."""
    return _heads_and_k(d, g, rk) and _wg_v_rank(rk, rv)


def serves(d: int, g: int, rk: int, rv: int, cache_dtype: torch.dtype, build: CudaBuild) -> bool:
    """The shapes the kernel `build` picks (kind_for) is written for, on a machine with NVRTC."""
    # V ranks above 128 the wg kernel cannot hold take the tile kernel, written for 128 and
    # 256 only
    return (
        torch.cuda.is_available()
        and hasattr(torch.cuda, "_compile_kernel")
        and _heads_and_k(d, g, rk)
        and (rv % 128 == 0 or (kind_for(rv, rk, build) in ("warp", "wg") and rv % 16 == 0))
        and rv <= 256
        and cache_dtype == torch.bfloat16
    )


def source(kind: str) -> str:
    """A kernel's CUDA C++ (cuda/latent_decode_{kind}.cu): a translation unit that includes its
    headers from CUDA_DIR and reads its sizes from build_options' -D defines."""
    return (CUDA_DIR / f"latent_decode_{kind}.cu").read_text()


def build_options(
    rk: int,
    rv: int,
    g: int,
    minb: int = 1,
    block: int = 64,
    warps: int = 8,
    kind: str = "tile",
    unroll: int = 1,
    normz: bool = False,
    kscale: bool = False,
    strides: tuple[int, int] = (0, 0),
    phases: bool = False,
) -> tuple[str, ...]:
    """NVRTC's options for a kernel: C++17 and the sizes it reads (_SIZES) as -D defines."""
    sizes = {
        "RK": rk,
        "RV": rv,
        "G": g,
        "BLK": block,
        "WARPS": warps,
        "MINB": minb,
        "UNROLL": unroll,
        "NORMZ": int(normz),
        "KSCALE": int(kscale),
        "PHASES": int(phases),
        "SKT": strides[0],
        "SVT": strides[1],
    }
    return ("-std=c++17", *(f"-D{name}={sizes[name]}" for name in _SIZES[kind]))


@functools.cache
def compiled(
    rk: int,
    rv: int,
    g: int,
    device_index: int,
    minb: int = 1,
    block: int = 64,
    warps: int = 8,
    kind: str = "tile",
    unroll: int = 1,
    normz: bool = False,
    kscale: bool = False,
    strides: tuple[int, int] = (0, 0),
    phases: bool = False,
):
    """The kernel for these ranks and group size (NVRTC; cached per process and on disk,
    kernel_cache.py); "wg" is built for the cache's row strides of z and z_v (strides)."""
    opts = build_options(rk, rv, g, minb, block, warps, kind, unroll, normz, kscale, strides, phases)
    with torch.cuda.device(device_index):
        fn = compile_kernel(source(kind), "latent_decode", "90a" if kind == "wg" else None, opts, (CUDA_DIR,))
        fn.set_shared_memory_config(smem_bytes(rk, rv, g, block, warps, kind, kscale))
    return fn


def warps_of(kind: str, build: CudaBuild) -> int:
    """Warps per program: 8 for the warp-level kernels, build.warps for the tile kernel."""
    return 8 if kind in ("warp", "wg") else build.warps


def build_for(
    rk: int,
    rv: int,
    g: int,
    device_index: int,
    build: CudaBuild,
    blk: int,
    normz: bool,
    kscale: bool,
    strides: tuple[int, int],
    phases: bool = False,
):
    """The compiled kernel `build` gives a layer of these shapes, for tiles of blk keys
    (every argument of `compiled` passed, so that setup and launch share its cache)."""
    kind = kind_for(rv, rk, build)
    w = warps_of(kind, build)
    return compiled(rk, rv, g, device_index, build.minb, blk, w, kind, build.unroll, normz, kscale, strides, phases)


class BuildError(RuntimeError):
    """The kernels do not build on this machine (NVRTC missing, an API change, a compile error)."""


_FAILED: dict = {}


def try_build(
    rk: int, rv: int, g: int, device_index: int, build: CudaBuild, normz: bool = False, kscale: bool = False
) -> None:
    """Compile the builds a layer of these shapes can take (both tile sizes; kscale: the
    layer's cache keeps K's norm factors), or raise BuildError with the reason, warned
    about once per process."""
    kind = kind_for(rv, rk, build)
    key = (rk, rv, g, device_index, kind, build.minb, build.warps, build.unroll, build.block, normz, kscale)
    if key not in _FAILED:
        wg = kind == "wg"  # built for the cache's row strides (K and V entries side by side)
        try:
            for blk in {block_for(rk, rv, g, 0, build), block_for(rk, rv, g, LONG, build)}:
                strides = (rk + rv, rk + rv) if wg else (0, 0)
                build_for(rk, rv, g, device_index, build, blk, normz and kind == "warp", kscale and wg, strides)
            _FAILED[key] = None
        except Exception as e:  # NVRTC missing, an API change, a compile error
            _FAILED[key] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            warnings.warn(
                f"CUDA decode kernel unavailable, using the Triton kernel: {_FAILED[key]}", RuntimeWarning, stacklevel=3
            )
    if _FAILED[key] is not None:
        raise BuildError(f"the CUDA decode kernel does not build here: {_FAILED[key]}")


class _LaunchConfig(ctypes.Structure):  # the driver's CUlaunchConfig
    _fields_ = [
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("shared", ctypes.c_uint),
        ("stream", ctypes.c_void_p),
        ("attrs", ctypes.c_void_p),
        ("n_attrs", ctypes.c_uint),
    ]


class _LaunchAttr(ctypes.Structure):  # CUlaunchAttribute: an id, padding, a 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


_PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION


def launch_pdl(fn, grid, block, shared_mem: int, args: list) -> None:
    """fn (a torch.cuda._compile_kernel kernel) launched with programmatic dependent launch:
    its programs may start while the stream's previous kernel finishes (they wait for it with
    griddepcontrol.wait). torch's launcher takes no launch attributes, hence cuLaunchKernelEx
    here, with the same argument conversion (tensors: pointers, ints: int, floats: double)."""
    from torch.cuda._utils import _check_cuda, _get_gpu_runtime_library

    keep = [
        ctypes.c_void_p(a.data_ptr())
        if isinstance(a, torch.Tensor)
        else ctypes.c_int(a)
        if isinstance(a, int)
        else ctypes.c_double(a)
        for a in args
    ]
    params = (ctypes.c_void_p * len(keep))(*[ctypes.cast(ctypes.byref(k), ctypes.c_void_p) for k in keep])
    attr = _LaunchAttr(id=_PROGRAMMATIC_STREAM_SERIALIZATION)
    attr.value[0] = 1
    cfg = _LaunchConfig(
        (ctypes.c_uint * 3)(*grid),
        (ctypes.c_uint * 3)(*block),
        shared_mem,
        ctypes.c_void_p(torch.cuda.current_stream().cuda_stream),
        ctypes.cast(ctypes.byref(attr), ctypes.c_void_p),
        1,
    )
    _check_cuda(_get_gpu_runtime_library().cuLaunchKernelEx(ctypes.byref(cfg), fn.func, params, None))


_PREFETCH = r"""
extern "C" __global__ void l2_prefetch(const char* __restrict__ p, int n) {   // (torch's launcher: ints are int)
    const long long step = (long long)gridDim.x * blockDim.x * 128;
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 128; i < n; i += step)
        asm volatile("prefetch.global.L2 [%0];" :: "l"(p + i));
}
"""


@functools.cache
def _prefetch_kernel(device_index: int):
    with torch.cuda.device(device_index):
        return compile_kernel(_PREFETCH, "l2_prefetch")


def prefetch_l2(t: torch.Tensor, programs: int = 16) -> None:
    """Ask L2 for a tensor's bytes (a cache a later kernel of the step reads), 128-byte
    lines, on the current stream; nothing waits for them."""
    n = t.numel() * t.element_size()
    if n >= 1 << 31:  # (an int in the kernel; L2 is far smaller anyway)
        raise ValueError(f"prefetch_l2: {n} bytes, at most 2 GiB")
    _prefetch_kernel(t.device.index or 0)(grid=(programs, 1, 1), block=(256, 1, 1), args=[t, n])


@dataclass(frozen=True)
class CudaLayer:
    """One layer's constants for the CUDA kernel (made once, by `prepare`, when the layer is
    planned; `launch` reads them each step).

    kind, build        the kernel (kind_for) and how it is built
    rk, rv, g, kv      K and V ranks, query heads per KV head, KV heads
    warps              warps per program (warps_of)
    normz              the warp kernel takes the QK-norm's sum from z (U orthonormal per head)
    up, bias           U and the bias it reads: the z-norm's folded ones (normz), the tile
                       kernel's permuted U (permute_up), else the raw U; the raw bias
    scaled             U and bias with the norm weight folded in, for the wg kernel reading
                       each key's norm factor from the cache; None without a QK-norm
    norm_weight, invf  the QK-norm weight (a placeholder without one), RoPE's frequencies
    warp_extra         the warp kernel's trailing arguments (2 U^T b, |b|^2, e or not; or
                       the placeholders)
    images             the wg kernel's constant shared memory (wg_images), by whether the
                       cache's norm factors are read
    scalars            window (0: none), sink, eps, scale, rope scale, QK-norm or not
    pdl                the wg kernel launched with programmatic dependent launch
    no_slot            the (1,) int64 -1 passed where the step's cache column is unknown
    """

    kind: str
    build: CudaBuild
    rk: int
    rv: int
    g: int
    kv: int
    warps: int
    normz: bool
    up: torch.Tensor
    bias: torch.Tensor
    scaled: tuple | None
    norm_weight: torch.Tensor
    invf: torch.Tensor
    warp_extra: tuple
    images: dict
    scalars: tuple
    pdl: bool
    no_slot: torch.Tensor


def prepare(
    build: CudaBuild,
    *,
    up: torch.Tensor,
    bias: torch.Tensor,
    rv: int,
    g: int,
    kv: int,
    norm: tuple | None,
    z_norm: tuple | None,
    invf: torch.Tensor,
    rscale: float,
    scale: float,
    window: int | None,
    sink: int,
    pdl: bool,
    k_scale: bool,
) -> CudaLayer:
    """A latent-K, latent-V layer's CudaLayer, and its builds compiled (try_build:
    BuildError where that fails). up (kv*256, rk) and bias (kv*256,) fp32: K's raw
    up-projection; norm: the QK-norm's (weight, eps) or None; z_norm: where K's basis has a
    diagonal Gram matrix, kernels.norm_from_latent's (g and e, |b|^2 term, U and bias with
    the weight folded in) and whether e is nonzero, or None; invf, rscale: RoPE's; scale,
    window, sink: the attention's; k_scale: the layer's cache keeps each key's norm factor."""
    rk, dev = up.shape[1], up.device
    kind = kind_for(rv, rk, build)
    placeholder = torch.zeros(1, device=dev)
    nw, eps = norm if norm is not None else (placeholder, 0.0)
    # with each key's norm factor from the cache (k_scale): the weight folded into U, bias
    scaled = None
    if norm is not None:
        w = nw.float().repeat(kv)
        scaled = ((up.float() * w[:, None]).to(up.dtype).contiguous(), (bias * w).contiguous())
    # the wg kernel's constant shared memory per build (without / with the cached factors)
    images = {False: wg_images(up, bias, invf, rscale, kv)}
    if scaled is not None:
        images[True] = wg_images(*scaled, invf, rscale, kv)
    # U orthonormal per head (Gram = I): the warp kernel's QK-norm sum from z (2 U^T b, |b|^2),
    # with the weight folded into U (the wg kernel is faster without it: the mma work beside
    # the rebuild costs more than it saves)
    normz_args = None
    if z_norm is not None and bool(((z_norm[0][:, 0] - 1).abs() < 1e-2).all()):
        gz, bb, _, _, _ = z_norm
        e = gz[:, 1]
        normz_args = ((2 * e).to(torch.bfloat16).contiguous(), (bb + (gz[:, 0] * e * e).sum(1)).contiguous())
    normz = kind == "warp" and normz_args is not None
    # the warp kernels take the raw U, bias and norm weight (the norm from the rebuilt key)
    if normz:
        layer_up, layer_bias = z_norm[2], z_norm[3]
        warp_extra = (*normz_args, int(z_norm[4]))
    else:
        layer_up, layer_bias = (permute_up(up) if kind == "tile" else up), bias
        warp_extra = (nw, nw, 0) if kind == "warp" else ()
    # built now (NVRTC, a private torch API): BuildError where that fails (the cuda
    # backend then plans the Triton kernel for the layer)
    try_build(rk, rv, g, dev.index or 0, build, normz_args is not None, k_scale)
    return CudaLayer(
        kind=kind,
        build=build,
        rk=rk,
        rv=rv,
        g=g,
        kv=kv,
        warps=warps_of(kind, build),
        normz=normz,
        up=layer_up,
        bias=layer_bias,
        scaled=scaled,
        norm_weight=nw,
        invf=invf,
        warp_extra=warp_extra,
        images=images,
        scalars=(window or 0, sink, float(eps), float(scale), float(rscale), int(norm is not None)),
        pdl=pdl,
        no_slot=torch.full((1,), -1, dtype=torch.long, device=dev),
    )


def launch(
    cu: CudaLayer,
    q,
    kc,
    vc,
    k_pos,
    qp,
    ks,
    vs,
    ns,
    strides,
    m,
    l,
    acc,
    sm,
    sl,
    sa,
    chunk,
    n,
    blk,
    k_scale,
    wslot,
    phases,
):
    """One decode step's partial states from the cache, for the layer `cu` (prepare):
    qp (B,) int64 query positions, the sink tile ks / vs with ns rows, `strides` (q's, the
    cache's, the positions', the sink tile's: kernels.DecodeAttention.strides), the
    per-chunk states m / l / acc and the sink's sm / sl / sa to write, the chunking (chunk
    length, n chunks) for tiles of blk keys; k_scale: each key's QK-norm factor (B, T, KV)
    fp32 as the cache holds it, or None; wslot: (1,) int64, the cache column this step's
    entries went to (the wg kernel reads every other row of its first tile before waiting
    for the previous kernel), or None; phases: an int64 buffer the "wg" kernel, built with
    per-phase clocks, writes them to (bench_decode_kernel --phases), or None."""
    b, t = kc.shape[0], kc.shape[1]
    kind = cu.kind
    kscale = kind == "wg" and k_scale is not None and cu.scaled is not None  # (no norm: no factors to read)
    clocks = kind == "wg" and phases is not None
    cache_strides = (kc.stride(1), vc.stride(1)) if kind == "wg" else (0, 0)
    fn = build_for(cu.rk, cu.rv, cu.g, q.device.index or 0, cu.build, blk, cu.normz, kscale, cache_strides, clocks)
    up, bias = cu.scaled if kscale else (cu.up, cu.bias)
    extra = list(cu.warp_extra)
    if kind == "wg":
        extra = [k_scale, k_scale.stride(0), k_scale.stride(1)] if kscale else [m, 0, 0]
        extra += list(cu.images[kscale])  # U + bias block, pair tables: laid out once (wg_images)
        extra.append(cu.no_slot if wslot is None else wslot)
    qp = qp if qp.dtype == torch.int64 else qp.long()  # the kernel reads long long
    if kind == "wg" and ((q.stride(0) | q.stride(1)) & 1 or q.data_ptr() % 4):
        q = q.contiguous()  # (the wg kernel reads q's rows as bf16 pairs)
        strides = (q.stride(0), q.stride(1), *strides[2:])
    grid, block = (n, b * cu.kv, 1), (32 * cu.warps, 1, 1)
    shared = smem_bytes(cu.rk, cu.rv, cu.g, blk, cu.warps, kind, kscale)
    window, sink, eps, scale, rscale, has_norm = cu.scalars
    args = [
        *(q, kc, vc, k_pos, qp, up, bias, cu.norm_weight, cu.invf, ks, vs, sm, sl, sa, m, l, acc),
        *(t, chunk, cu.kv, n, ns, *strides),
        *(window, sink if ns else 0, eps, scale, rscale, has_norm),
        *extra,
        *([phases] if clocks else []),
    ]
    if kind == "wg" and cu.pdl:
        launch_pdl(fn, grid, block, shared, args)
    else:
        fn(grid=grid, block=block, shared_mem=shared, args=args)
