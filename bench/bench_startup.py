"""generate's start-up by phase, in fresh processes (issue 30's cold start).

    python bench/bench_startup.py MODEL [--device cuda] [--runs 3] [--compile auto|0|1]
        [--profile 25] [--json startup.json]

Each run is a new Python process that does what `tpa-compress generate` does up to the first
token and times each phase: import (the runtime and the CLI's modules), load (open_model),
build (the Runner: plan, kernels from the disk cache), warm-up (the decode step run on a side
stream, which loads every Triton kernel into the process), graph (the CUDA graph capture),
prefill (the warm-up prefill of `generate`'s capture phase) and first token (one more prefill
and one decode step, timed as generate's first token is). "load to first token" is the sum
after load: what the issue's goal (< 3 s on a later run) counts. --profile N prints the N
functions with the most own time, then the N with the most cumulative time (cProfile), over
build + warm-up + graph + prefill of the last run. Kernels are cached on disk after a machine's
first run, so run 1 pays the compiles.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from tpa_compress.cli_common import open_model
from tpa_compress.runtime import Runner, SamplingParams
from tpa_compress.runtime.cli import encode_prompts
model, device, compile_opt, profile = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t = {"import": time.perf_counter() - t0}

def lap(name, fn):
    s = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t[name] = time.perf_counter() - s
    return out

dtype = "bfloat16" if device.startswith("cuda") else "float32"
ck, net = lap("load", lambda: open_model(model, None, dtype, device, None))
ids = encode_prompts(ck, ck.tokenizer, ["The Python standard library provides"], 32)
opts = {} if compile_opt == "auto" else {"compile": bool(int(compile_opt))}
prof = None
if profile:
    import cProfile
    prof = cProfile.Profile()
    prof.enable()
runner = lap("build", lambda: Runner(net, 1, len(ids[0]) + 32, **opts))
params = SamplingParams()
if runner.use_graph:
    real_graph = torch.cuda.graph
    marks = {}
    class timed_graph(real_graph):
        def __enter__(self):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            marks["graph"] = time.perf_counter()
            return super().__enter__()
    torch.cuda.graph = timed_graph
    s = time.perf_counter()
    runner.prepare(params)
    torch.cuda.synchronize()
    end = time.perf_counter()
    torch.cuda.graph = real_graph
    t["warm-up"], t["graph"] = marks["graph"] - s, end - marks["graph"]
else:
    lap("warm-up", lambda: runner.prepare(params))
lap("prefill", lambda: runner.prefill(ids, params))
if prof is not None:
    prof.disable()
def first():
    runner.prefill(ids, params)
    runner.step(params)
lap("first token", first)
t["compiled"] = runner.options.compile
t["load to first token"] = sum(v for k, v in t.items() if k not in ("import", "load", "compiled"))
print("RESULT " + json.dumps(t), flush=True)
if prof is not None:
    import pstats
    for order in ("tottime", "cumulative"):
        pstats.Stats(prof, stream=sys.stderr).sort_stats(order).print_stats(profile)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--compile", default="auto", choices=["auto", "0", "1"], help="auto: the plan's default")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        help="with the last run: the N functions with most own, then most cumulative time",
    )
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    for i in range(a.runs):
        prof = a.profile if i == a.runs - 1 else 0
        p = subprocess.run(
            [sys.executable, "-c", CHILD, a.model, a.device, a.compile, str(prof)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
        )
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if p.returncode or line is None:
            sys.exit(f"run {i + 1} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
        row = {"run": i + 1, **json.loads(line[7:])}
        rows.append(row)
        print(" | ".join(f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
        if prof:
            print(p.stderr[-30000:])
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "device": a.device, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
