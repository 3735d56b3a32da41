"""Where a decode step's GPU time goes: kernel names, counts and times per step.

    python bench/profile_decode.py --model 270m --layout converted --batch 1 --context 32768

Builds the same random-weight models as bench_generate.py, warms the runner up, then
profiles N eager decode steps (compiled pieces, no CUDA graph, so every kernel is
visible) and prints the kernels sorted by GPU time per step; also times the graphed
step for comparison (step time - kernel time = launch gaps the graph could not hide).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generate import parse_options, prompts_for, random_model  # noqa: E402

from tpa_compress.load.ckpt import variant_config  # noqa: E402
from tpa_compress.runtime import CudaBuild, Runner, SamplingParams, TritonTuning  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="270m")
    ap.add_argument("--layout", default="original")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--ranks", default="128/128")
    ap.add_argument("--cuda-kernel", default="wg", help="the cuda backend's kernel (CudaBuild.kernel): wg, warp, tile")
    ap.add_argument(
        "--tuning",
        "--kernel-options",
        default="",
        help="DecodeOptions.tuning: kernels.TritonTuning fields as name=value, comma-separated, e.g. block_t=64",
    )
    ap.add_argument("--runner-options", default="", help="DecodeOptions (runtime/plan.py), e.g. entries=written")
    a = ap.parse_args()
    cfg = variant_config(a.model)
    model = random_model(cfg, a.layout, a.ranks)
    params = SamplingParams()
    r = Runner(
        model,
        a.batch,
        a.context,
        tuning=TritonTuning.parse(a.tuning),
        cuda_build=CudaBuild(kernel=a.cuda_kernel),
        **parse_options(a.runner_options),
    )
    prompts = prompts_for(cfg, a.batch, a.context - 2 * a.steps - 8)
    r.generate(prompts, 4, stop_at_eos=False)
    # graphed step time
    r.prefill(prompts, params)
    for _ in range(3):
        r.step(params)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.steps):
        r.step(params)
    torch.cuda.synchronize()
    graph_ms = 1e3 * (time.perf_counter() - t) / a.steps
    # eager (compiled pieces) steps under the profiler
    r.use_graph = False
    for _ in range(3):
        r.step(params)
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(a.steps):
            r.step(params)
        torch.cuda.synchronize()
    eager_ms = 1e3 * (time.perf_counter() - t) / a.steps
    agg = defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            agg[e.name][0] += 1
            agg[e.name][1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
    total = sum(v[1] for v in agg.values()) / a.steps
    n = sum(v[0] for v in agg.values()) / a.steps
    print(
        f"{a.model} {a.layout} b{a.batch} ctx{a.context}: graphed step {graph_ms:.3f} ms, "
        f"eager step {eager_ms:.3f} ms, kernel time {total / 1e3:.3f} ms in {n:.0f} kernels/step"
    )
    for name, (c, us) in sorted(agg.items(), key=lambda kv: -kv[1][1])[: a.top]:
        print(f"{us / a.steps:9.1f} us {c / a.steps:6.1f}x  {name[:110]}")


if __name__ == "__main__":
    main()
