#!/usr/bin/env bash
# Decode speed before / after the decode-plan refactor (issue 30), on one GPU machine, one
# lease: bench/bench_generate.py (random 270M-shaped Gemma 3, no weights needed) at batch
# 1 and 32, contexts 4K and 32K, original and converted layouts (the ranks recipes/balanced.yaml
# picks on the real 270M), bf16 cache; the after tree also an int4 cache (grouped, torch
# backends; the before tree refuses it on CUDA). Prints one table: decode tok/s per row.
#   usage: plan_check.sh BEFORE_TREE AFTER_TREE   (each a checkout holding tpa_compress/ and bench/)
#   e.g.   git worktree add /tmp/before <main's commit>; plan_check.sh /tmp/before .
# Each tree's rows take ~3-4 min on an H100 (a fresh model, compile and capture per row); the
# script fits the device tool's 10-minute command when run alone.
set -euo pipefail
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd)
out=${OUT:-/tmp/plan_check}; mkdir -p "$out"
C="--models 270m --batches 1,32 --contexts ${CONTEXTS:-4096,32768} --no-hf --new-tokens 64 --ranks 80,96,112/112,160,128"
(cd "$before" && PYTHONPATH="$before" timeout ${TREE_T:-280} python bench/bench_generate.py $C \
    --out "$out/before.json" > "$out/before.log" 2>&1) || echo "before: exit $?"
(cd "$after" && PYTHONPATH="$after" timeout ${TREE_T:-280} python bench/bench_generate.py $C --cache-dtypes ${AFTER_CACHES:-bf16,int4} \
    --out "$out/after.json" > "$out/after.log" 2>&1) || echo "after: exit $?"
python - "$out/before.json" "$out/after.json" <<'PY'
import json, sys
rows = {}
for tag, path in zip(("before", "after"), sys.argv[1:]):
    try:
        doc = json.load(open(path))
    except (OSError, ValueError) as e:
        print(f"{tag}: no results ({e})"); continue
    print(f"{tag}: {doc.get('device')} torch {doc.get('torch')}")
    for r in doc["rows"]:
        key = (r.get("layout"), r.get("cache_dtype"), r["batch"], r["context"])
        rows.setdefault(key, {})[tag] = r.get("tok_s") or r.get("error", "?")
print(f"{'layout':<10} {'cache':<6} {'batch':>5} {'context':>7} {'before tok/s':>13} {'after tok/s':>12} {'after/before':>12}")
for (lay, cd, b, t), v in sorted(rows.items(), key=lambda kv: tuple(map(str, kv[0]))):
    bf, af = v.get("before"), v.get("after")
    ratio = f"{af / bf:.3f}" if isinstance(bf, float) and isinstance(af, float) else "-"
    fmt = lambda x: f"{x:,.0f}" if isinstance(x, float) else str(x or "-")[:12]
    print(f"{lay:<10} {cd:<6} {b:>5} {t:>7} {fmt(bf):>13} {fmt(af):>12} {ratio:>12}")
PY
