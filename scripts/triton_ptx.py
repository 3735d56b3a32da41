"""The Triton decode kernel's PTX for Hopper, compiled without a GPU (triton's bundled ptxas
toolchain; no device, no driver), for a few constexpr configurations:

    PYTHONPATH=. python scripts/triton_ptx.py OUT_DIR

A refactor of runtime/kernels.py's `_decode_partial` that should change no code is checked
by running this on the tree before and after and comparing the files without their source
line records:

    diff <(grep -v '^\\s*\\.loc\\|^\\s*\\.file' A/static.ptx | sed '/\\.section\\s*\\.debug/,$d') \\
         <(grep -v '^\\s*\\.loc\\|^\\s*\\.file' B/static.ptx | sed '/\\.section\\s*\\.debug/,$d')

Argument types are fixed (bf16 cache, fp32 states); the sizes are Gemma 3 270M's (head dim
256, 4 query heads per KV head, latent ranks 128).
"""

import os
import sys

os.environ["TRITON_INTERPRET"] = "0"  # (before the runtime sets it on a machine with no GPU)

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler.compiler import ASTSource  # noqa: E402

from tpa_compress.runtime import kernels  # noqa: E402

POINTERS = {
    "q_ptr": "*bf16",
    "kc_ptr": "*bf16",
    "vc_ptr": "*bf16",
    "kpos_ptr": "*i32",
    "qpos_ptr": "*i64",
    "ku_ptr": "*bf16",
    "nw_ptr": "*bf16",
    "vu_ptr": "*bf16",
    "sk_ptr": "*bf16",
    "sv_ptr": "*bf16",
}  # the rest: *fp32
FLOATS = {"eps", "scale", "rscale"}  # the rest of the scalars: i32
BASE = dict(
    D=256,
    HALF=128,
    HALF_P=128,
    G=4,
    G_P=16,
    RK_P=128,
    RV_P=128,
    NS_P=16,
    BLOCK_T=32,
    DS=64,
    K_LATENT=True,
    V_LATENT=True,
    HAS_NORM=True,
    HAS_WINDOW=False,
    HAS_SINK=True,
    PREC="tf32",
    FAST_TRIG=True,
    CDT=tl.bfloat16,
    INT8=False,
    LATENT_COMBINE=True,
    DS_DYNAMIC=False,
    NORM_Z=False,
    HAS_E=False,
    PDL=True,
)
CONFIGS = {
    "static": {},
    "dynamic": dict(DS_DYNAMIC=True, BLOCK_T=128),
    "static_normz": dict(NORM_Z=True, HAS_E=True),
    "dynamic_nonorm": dict(DS_DYNAMIC=True, HAS_NORM=False, DS=32),
    "fullv_int8": dict(V_LATENT=False, LATENT_COMBINE=False, INT8=True),
}


def main(out: str) -> None:
    fn = kernels._decode_partial
    os.makedirs(out, exist_ok=True)
    for name, over in CONFIGS.items():
        sig = {
            p.name: "constexpr"
            if p.is_constexpr
            else POINTERS.get(p.name, "*fp32")
            if p.name.endswith("_ptr")
            else "fp32"
            if p.name in FLOATS
            else "i32"
            for p in fn.params
        }
        k = triton.compile(ASTSource(fn, sig, constexprs={**BASE, **over}), target=GPUTarget("cuda", 90, 32))
        with open(os.path.join(out, f"{name}.ptx"), "w") as f:
            f.write(k.asm["ptx"])
        print(name, len(k.asm["ptx"]), "bytes of PTX")


if __name__ == "__main__":
    main(sys.argv[1])
