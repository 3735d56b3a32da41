"""Where `tpa-compress generate` spends its wall time: the command run in-process under cProfile.

    python bench/profile_generate.py MODEL --device cuda [--top 60] [--stats prof.out]
    python bench/profile_generate.py MODEL --device cuda -- --cache-dtype int8   # more generate args

Runs `generate MODEL --max-new-tokens 8` once (cold caches make the first run of a machine
slower: run it twice and read the second), then prints the functions with the largest
cumulative time, and the time of the phases a cold start is made of (imports are not
profiled: `python -X importtime` shows them). The generate summary line still prints
(load / build / capture / prefill / decode), so the profile can be read against it.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (label, function name as pstats keys it): what a cold start is made of
PHASES = (
    ("open_model (load)", "open_model"),
    ("build_runner (build)", "build_runner"),
    ("  Runner._compile", "_compile"),
    ("  Runner._build_plan", "_build_plan"),
    ("  NVRTC kernel cache", "compile_kernel"),
    ("capture (warm-up + graph)", "capture"),
    ("  dynamo frame compiles", "_compile_inner"),
    ("  inductor compile_fx", "compile_fx"),
    ("  inductor graph cache load", "load_with_key"),
    ("  triton kernel loads", "_init_handles"),
    ("  CUDA graph capture_end", "capture_end"),
    ("generate (prefill + decode)", "generate"),
)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--top", type=int, default=60, help="functions listed by cumulative time")
    ap.add_argument("--stats", type=Path, help="also write the raw profile here (pstats)")
    ap.add_argument("rest", nargs="*", help="more generate arguments, after --")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    from tpa_compress.cli import main as cli_main

    t_import = time.perf_counter() - t0
    sys.argv = ["tpa-compress", "generate", a.model, "--device", a.device, "--max-new-tokens", "8"]
    sys.argv += ["--prompt", "The Python standard library provides", *a.rest]
    prof = cProfile.Profile()
    t1 = time.perf_counter()
    try:
        prof.runcall(cli_main)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    t_run = time.perf_counter() - t1
    if a.stats:
        prof.dump_stats(a.stats)
    stats = pstats.Stats(prof)
    print(f"\nimport tpa_compress.cli {t_import:.2f} s; generate {t_run:.2f} s (profiled, so slower)")
    totals: dict[str, float] = {}
    for (_, _, name), (_, _, _, ct, _) in stats.stats.items():
        totals[name] = max(totals.get(name, 0.0), ct)
    for label, name in PHASES:
        print(f"{label:<32} {totals.get(name, 0.0):7.2f} s")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(a.top)
    print(buf.getvalue())


if __name__ == "__main__":
    main()
