#!/usr/bin/env bash
# The whole issue-5 benchmark matrix on one GPU machine, in pieces that each fit the
# device tool's 10-minute command limit (run `bench/run_matrix.sh 1`, then `... 2`, on
# the same lease). Each piece writes its JSON into ${OUT:-.}; docs/benchmarks.md takes
# its tables from those files.
#   piece 1: --check, our runner everywhere (2 models x batch 1,32 x 128/4K/32K x
#            original/converted); time not yet measured
#   piece 2: transformers dynamic + static, 270M, every batch and context
#   piece 3: transformers dynamic + static, 1B
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.}
B="python bench/bench_generate.py"
case "${1:-1}" in
  1) timeout 580 $B --check --models 270m,1b --batches 1,32 --contexts 128,4096,32768 --no-hf \
       --out "$out/matrix_ours.json" ;;
  2) timeout 580 $B --models 270m --batches 1,32 --contexts 128,4096,32768 --layouts "" \
       --out "$out/matrix_hf_270m.json" ;;
  3) timeout 580 $B --models 1b --batches 1,32 --contexts 128,4096,32768 --layouts "" \
       --out "$out/matrix_hf_1b.json" ;;
  *) echo "usage: bench/run_matrix.sh 1|2|3" >&2; exit 2 ;;
esac
