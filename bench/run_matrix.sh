#!/usr/bin/env bash
# The whole issue-5 benchmark matrix on one GPU machine, in pieces that each fit the
# device tool's 10-minute command limit (run `bench/run_matrix.sh 1`, then `... 2`, on
# the same lease). Each piece writes its JSON into ${OUT:-.} and tees every row as it is
# measured into a .log beside it (a piece cut short still leaves its rows);
# docs/benchmarks.md takes its tables from those files.
#   piece 1: --check, then our runner, Gemma 3 270M: batch 1,32 x 128/4K/32K x original/converted
#            (converted: the ranks recipes/balanced.yaml picks on the real 270M, K 80/96/112, V 112/160/128)
#   piece 2: the same for Gemma 3 1B (no --check; converted: rank 128 on every global layer, a proxy:
#            no 1B weights are installed to convert)
#   piece 3: transformers dynamic + static, 270M, every batch and context
#   piece 4: transformers dynamic + static, 1B
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.}
B="python bench/bench_generate.py"
C="--batches 1,32 --contexts 128,4096,32768"
case "${1:-1}" in
  1) timeout 580 $B --check --models 270m $C --no-hf --ranks 80,96,112/112,160,128 --out "$out/matrix_ours_270m.json" | tee "$out/matrix_ours_270m.log" ;;
  2) timeout 580 $B --models 1b $C --no-hf --out "$out/matrix_ours_1b.json" | tee "$out/matrix_ours_1b.log" ;;
  3) timeout 580 $B --models 270m $C --layouts "" --out "$out/matrix_hf_270m.json" | tee "$out/matrix_hf_270m.log" ;;
  4) timeout 580 $B --models 1b $C --layouts "" --out "$out/matrix_hf_1b.json" | tee "$out/matrix_hf_1b.log" ;;
  *) echo "usage: bench/run_matrix.sh 1|2|3|4" >&2; exit 2 ;;
esac
