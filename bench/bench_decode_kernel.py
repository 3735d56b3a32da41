"""The decode-attention kernel alone (runtime/kernels.py), CUDA-graph timed: one layer's
attention for one decode step, per layout kind, context and kernel configuration.

    python bench/bench_decode_kernel.py [--contexts 512,32768] [--batches 1,32]

Gemma 3 270M shapes (4 query heads, 1 KV head, head dim 256), latent ranks 128, bf16;
random cache contents, all keys visible. Prints microseconds per call and the cache
bytes read per call / time (effective bandwidth). The Triton kernel's flags (--block-t ..
--norm-z, --combine) set kernels.TritonTuning's fields, each comma-separated to compare; the
CUDA kernels' (--cuda-builds) cuda_decode.CudaBuild's.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tpa_compress.layout import Component, LayerLayout  # noqa: E402
from tpa_compress.load.ckpt import variant_config  # noqa: E402
from tpa_compress.methods.layers import make_proj  # noqa: E402
from tpa_compress.models import Transformer  # noqa: E402
from tpa_compress.runtime import CudaBuild, DecodeOptions, TritonTuning, kernels  # noqa: E402
from tpa_compress.runtime.attention import key_scale_terms, key_scales  # noqa: E402
from tpa_compress.runtime.backends.cuda import serves_layer  # noqa: E402


def phases(fn, programs: int) -> str:
    """One call of the wg kernel built with per-phase clocks (fn(phases=buffer): the
    DecodeAttention call's `phases`): per warpgroup, the mean over programs in µs (cycles at
    the clock the programs' own globaltimer spans imply) of the prologue and its parts, the
    loop and its parts, the merge; and how far apart the programs started and ended (launch
    ramp, tail)."""
    buf = torch.zeros(programs * 2 * 18, dtype=torch.int64, device="cuda")
    fn(phases=buf)
    torch.cuda.synchronize()
    v = buf.view(programs, 2, 18).double()
    span_ns = v[:, 0, 1] - v[:, 0, 0]
    ghz = (v[:, 0, 2] + v[:, 0, 3] + v[:, 0, 4]).sum() / span_ns.sum()  # cycles per ns
    us = lambda c: (c / ghz / 1e3).mean().item()  # noqa: E731
    parts = ["prologue", "loop", "merge", "wait", "mma", "rope", "softmax"]
    out = [f"{n} {us(v[:, :, i]):.2f}" for n, i in zip(parts, (2, 3, 4, 5, 6, 7, 8), strict=True)]
    # the prologue's parts; its rest (after U's arrival) is the barrier
    pro = [
        "start + U issue",
        "slot load",
        "pre-wait copies",
        "PDL wait",
        "post-wait copies",
        "tables + q",
        "sink",
        "U wait",
    ]
    pro_parts = zip(pro, (16, 17, *range(10, 16)), strict=True)
    out.append(
        "| prologue: "
        + ", ".join(f"{n} {us(v[:, :, i]):.2f}" for n, i in pro_parts)
        + f", barrier {us(v[:, :, 2] - v[:, :, 10:18].sum(-1)):.2f}"
        + f"; program 0 (the sink tile) {us(v[:1, :, 2]):.2f}"
    )
    start, end = v[:, 0, 0], v[:, 0, 1]
    return (
        " ".join(out) + f" | tiles/wg {v[:, :, 9].mean().item():.1f} | clock {ghz:.2f} GHz | starts spread "
        f"{(start.max() - start.min()).item() / 1e3:.2f} us, "
        f"ends spread {(end.max() - end.min()).item() / 1e3:.2f} us, "
        f"first start to last end {(end.max() - start.min()).item() / 1e3:.2f} us"
    )


COLD = None  # --cold: a scratch buffer (2x L2) written before every call, so the cache comes from DRAM


def timed(fn, reps=20, rounds=5):
    """µs per call, a CUDA graph of reps calls, the best of rounds; with COLD each call
    follows a write of the scratch buffer (L2 flushed, as in a decode step, where the
    whole model streams through between two calls of a layer), the writes' own time
    (measured alone the same way) subtracted."""

    def graph_us(f):
        f()
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(reps):
                f()
        best = float("inf")
        for _ in range(rounds):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            g.replay()
            b.record()
            torch.cuda.synchronize()
            best = min(best, a.elapsed_time(b) * 1e3 / reps)
        return best

    if COLD is None:
        return graph_us(fn)
    return graph_us(lambda: (COLD.zero_(), fn())) - graph_us(COLD.zero_)


def kernel_times(fn, reps=20):
    """GPU time per call of each kernel fn launches (torch profiler, eager calls)."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    tot = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            tot[e.name] = tot.get(e.name, 0.0) + e.device_time / reps
    return "  ".join(f"{k[:24]} {v:.1f}" for k, v in sorted(tot.items(), key=lambda x: -x[1]))


def cuda_build(text: str) -> CudaBuild:
    """--cuda-builds' MINB[:BLOCK[:WARPS[:KIND[:UNROLL[:PER_SM]]]]] (empty parts: the defaults)."""
    minb, blk, warps, kind, unroll, per_sm = (text.split(":") + [""] * 5)[:6]
    d = CudaBuild()
    return CudaBuild(
        minb=int(minb or d.minb),
        block=int(blk or d.block),
        warps=int(warps or d.warps),
        kernel=kind or d.kernel,
        unroll=int(unroll or d.unroll),
        per_sm=int(per_sm or d.per_sm),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="270m")
    ap.add_argument("--contexts", default="512,32768")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--kinds", default="latent/latent,full/full")
    ap.add_argument("--block-t", default="32", help="TritonTuning.block_t: keys per tile (a power of two >= 16)")
    ap.add_argument("--warps", default="4", help="TritonTuning.num_warps")
    ap.add_argument("--fast-trig", default="1", help="TritonTuning.fast_trig (1, 0)")
    ap.add_argument("--per-sm", default="2", help="TritonTuning.per_sm: programs per SM the chunking plans for")
    ap.add_argument("--stages", default="0", help="TritonTuning.num_stages, 0: Triton's default")
    ap.add_argument("--ds", default="64", help="TritonTuning.ds: rotation pairs of a latent K rebuilt at a time")
    ap.add_argument("--maxnreg", default="0", help="TritonTuning.maxnreg: register cap per thread, 0: none")
    ap.add_argument("--latent-combine", default="1", help="TritonTuning.latent_combine (1, 0)")
    ap.add_argument("--ds-dynamic", default="0", help="1: the K slices in a loop, not unrolled")
    ap.add_argument("--norm-z", default="1", help="1: the QK-norm from z (orthonormal K basis), 0: per slice")
    ap.add_argument(
        "--k-basis",
        default="orthonormal",
        choices=["orthonormal", "random"],
        help="a latent K's up-projection: orthonormal (what activation_svd writes) or random",
    )
    ap.add_argument(
        "--k-scale",
        default="0",
        help="1: each latent key's QK-norm factor from a per-key table "
        "(as a k_scale cache holds it; the wg kernel reads it instead of summing squares), comma-separated",
    )
    ap.add_argument("--kernel-times", action="store_true", help="also each kernel's GPU time per call")
    ap.add_argument(
        "--phases",
        action="store_true",
        help="the wg kernel's time per phase (a build with clocks, "
        "one call): program prologue, loop (wait / mma / rope / softmax per tile), merge",
    )
    ap.add_argument("--ranks", default="128/128", help="latent ranks K/V")
    ap.add_argument(
        "--combine",
        default="",
        help="a latent combine's builds RV_BLK:WARPS:BLOCK_D (TritonTuning's combine_rv_block, "
        "combine_warps, combine_block_d: latent columns per slice, a power of two >= 16; warps; head dims "
        "per program), comma-separated; default: TritonTuning's",
    )
    ap.add_argument("--sink", type=int, default=1, help="exact sink tokens of a latent layout")
    ap.add_argument(
        "--pdl",
        default="",
        help="programmatic dependent launch: 0, 1, or 2 (1 + the wg kernel "
        "told the step's write slot, the last one: its first tile goes out before the wait); "
        "comma-separated to compare; default: where available",
    )
    ap.add_argument("--cold", action="store_true", help="the cache from DRAM: L2 flushed before every timed call")
    ap.add_argument(
        "--backend",
        default="auto",
        help="triton, cuda, or auto (cuda where it serves the layer, as the decode plan "
        "chooses, else triton); comma-separated to compare",
    )
    ap.add_argument(
        "--cuda-builds",
        default="1",
        help="the cuda backend's builds (runtime/cuda_decode.CudaBuild), MINB[:BLOCK[:WARPS[:KIND[:UNROLL[:PER_SM]]]]] "
        "comma-separated, empty parts the defaults: min programs per SM its register budget is cut for "
        "(launch bounds), the tile kernel's keys per tile (64, 128; 0: by cache length), its warps "
        "(8, 16), kernel (wg, warp, tile), the warp-level kernels' unrolling of their 16-pair loop (1, 2, 4), "
        "programs per SM the chunking plans for",
    )
    a = ap.parse_args()
    builds = {cb: cuda_build(cb) for cb in ["", *a.cuda_builds.split(",")]}  # bad input: an error before any work
    if a.cold:
        global COLD
        COLD = torch.empty(2 * torch.cuda.get_device_properties(0).L2_cache_size, dtype=torch.uint8, device="cuda")
    cfg = variant_config(a.model)
    layer = next(i for i in range(cfg.num_layers) if cfg.window(i) is None)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Transformer(cfg)
    attn0 = model.layers[layer].self_attn
    kv, d = cfg.num_kv_heads, cfg.head_dim
    for kinds in a.kinds.split(","):
        kk, vk = kinds.split("/")
        rk, rv = map(int, a.ranks.split("/"))
        comp = {n: Component(k, kv, d, r) for n, k, r in (("k", kk, rk), ("v", vk, rv))}
        attn = copy.deepcopy(attn0)  # each layout kind on a fresh copy of the layer
        for n in "kv":
            if comp[n].kind == "latent":
                setattr(attn, f"{n}_proj", make_proj(cfg.hidden_size, comp[n], 1).cuda())
        attn = attn.to(torch.bfloat16)
        with torch.no_grad():
            for p in attn.parameters():
                p.normal_(0, 0.05)
            if kk == "latent" and a.k_basis == "orthonormal":
                up = attn.k_proj.up.weight
                up.copy_(torch.linalg.qr(up.float())[0].to(up.dtype))
        lay = LayerLayout(comp["k"], comp["v"], None, sink=a.sink)
        sink = a.sink if "latent" in kinds else 0
        for b, t in itertools.product(map(int, a.batches.split(",")), map(int, a.contexts.split(","))):
            kc = torch.randn(b, t, lay.k.values_per_token + lay.v.values_per_token, device="cuda", dtype=torch.bfloat16)
            k, v = kc[..., : lay.k.values_per_token], kc[..., lay.k.values_per_token :]
            pos = torch.arange(t, device="cuda", dtype=torch.int32).expand(b, t).contiguous()
            qp = torch.full((b, 1), t - 1, device="cuda")
            q = torch.randn(b, cfg.num_heads, 1, d, device="cuda", dtype=torch.bfloat16)
            tile = (torch.randn(b, kv, sink, d, device="cuda", dtype=torch.bfloat16),) * 2 if sink else None
            moved = kc.nbytes
            # the factors' table (a rebuild of the whole cache): only when a --k-scale 1 row needs it
            ksc = (
                key_scales(k, key_scale_terms(attn))
                if kk == "latent" and attn.qk_norm and "1" in a.k_scale.split(",")
                else None
            )
            ref = None
            backends = [
                (be, cb) for be in a.backend.split(",") for cb in (a.cuda_builds.split(",") if be == "cuda" else [""])
            ]
            for pdl, (be, cb), cmb, bt, w, ft, ps, st, ds, mr, lc, dy, nz, kq in itertools.product(
                [int(x) for x in a.pdl.split(",")] if a.pdl else [-1],
                backends,
                a.combine.split(",") if a.combine and vk == "latent" else [""],
                *(
                    map(int, x.split(","))
                    for x in (
                        a.block_t,
                        a.warps,
                        a.fast_trig,
                        a.per_sm,
                        a.stages,
                        a.ds,
                        a.maxnreg,
                        a.latent_combine,
                        a.ds_dynamic,
                        a.norm_z,
                        a.k_scale,
                    )
                ),
            ):
                if (kk == "full" and not ft) or (vk == "full" and not lc):
                    continue
                build = builds[cb]
                if be == "auto":  # the plan's choice for this layer (backends/cuda.py)
                    opts = DecodeOptions(tuning=TritonTuning(latent_combine=bool(lc)), cuda_build=build)
                    be = "cuda" if serves_layer(attn, lay, torch.bfloat16, torch.bfloat16, opts) else "triton"
                try:
                    combine = dict(
                        zip(("combine_rv_block", "combine_warps", "combine_block_d"), map(int, cmb.split(":")))
                    )
                    tuning = TritonTuning(
                        block_t=bt,
                        num_warps=w,
                        fast_trig=bool(ft),
                        per_sm=ps,
                        num_stages=st or None,
                        ds=ds,
                        maxnreg=mr or None,
                        latent_combine=bool(lc),
                        ds_dynamic=bool(dy),
                        norm_z=bool(nz),
                        **(combine if cmb else {}),
                    )
                    kern = kernels.DecodeAttention(
                        attn,
                        lay,
                        sink,
                        backend=be,
                        tuning=tuning,
                        cuda_build=build,
                        pdl=None if pdl < 0 else bool(pdl),
                    )
                    kx = ksc if kq else None
                    if kq and kx is None:
                        continue
                    ws = torch.tensor([t - 1], device="cuda") if pdl == 2 else None
                    call = functools.partial(kern, q, k, v, pos, qp, tile, k_scale=kx, wslot=ws)
                    out = call().float()
                    us = timed(call)
                except Exception as e:  # a config that does not compile or is not served
                    print(
                        f"{kinds} b{b} T{t} {be} block {bt} warps {w} fast {ft} per_sm {ps} stages {st} ds {ds} "
                        f"dyn {dy}: {type(e).__name__}: {str(e)[:200]}",
                        flush=True,
                    )
                    continue
                ref = out if ref is None else ref  # the first config's output: the others vs it
                err = ((out - ref).norm() / ref.norm()).item()
                if kern.cuda:
                    info = f"cuda {kern.cuda_kind} {cb} chunks {kern.tiling(b, t)[2]:4d}"
                else:
                    c = kern.compiled
                    info = (
                        f"triton chunks {kern.chunks(b, t)[1]:4d} regs {c.n_regs} spills {c.n_spills} "
                        f"wgmma {c.asm['ptx'].count('wgmma.mma_async')} mma.sync {c.asm['ptx'].count('mma.sync')}"
                    )
                if a.kernel_times:
                    info += "\n    kernels (us): " + kernel_times(call)
                info += f" kscale {kq}" + (f" combine {cmb}" if cmb else "")
                if a.phases and kern.cuda_kind == "wg":
                    info += "\n    phases: " + phases(call, kern.tiling(b, t)[2] * b * kern.kv)
                pdl_s = f"{int(kern.pdl)}{'+slot' if ws is not None else ''}"
                print(
                    f"{kinds:14s} b{b:<3d} T{t:<6d} pdl {pdl_s} block {bt:3d} warps {w} fast {ft} per_sm {ps} "
                    f"stages {st} ds {ds} dyn {dy} nz {int(kern.norm_z)} maxnreg {mr} lc {lc}: {us:8.1f} us "
                    f"{moved / us / 1e3:7.0f} GB/s  rel.err {err:.1e}  {info}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
