#!/bin/bash
# session-18 device script, run as `bash devrun.sh runN` from the repository root on the device tool
# Code of each run (oldpkg/ = `git archive e8d8870 tpa_compress bench/bench_generate.py bench/profile_decode.py`,
# the seventeenth session's package, carried with `carry: ["oldpkg"]`):
#   run1: 76d8536 (the latent combine in unrolled slices of 32 columns, no U prefetch)
#   run2: 96f7313's kernel with the slices still unrolled (static_range) and 32 wide
#   run3: 96f7313 (slices in a loop; widths as kernel options)
#   run4: 96f7313 (default 64) + the fused-norms removal (afe3abb)
#   run5: 635742c (default 128 columns)
set -u
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
SUM='import json,sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["rows"]:
        print(f.split("/")[-1], r["model"], "b%d" % r["batch"], r["context"], r.get("runner"), r.get("layout"), r.get("runner_options"), r.get("kernel_options"), "%.1f tok/s" % r.get("tok_s", 0), "%.4f ms" % r.get("ms_per_step", 0), r.get("kernels"), r.get("error", ""))'
case "$1" in
run1)   # the latent combine in slices: kernel alone per build, then end to end old (e8d8870) vs new at 32K batch 1; fused_norms A/B
  TPA_TEST_DEVICE=cuda timeout 120 python -m pytest tests/test_runtime_kernels.py -x -q -p no:cacheprovider -k "combine or latent_v or decode_path" 2>&1 | tail -4 > $OUT/tests.txt
  tail -2 $OUT/tests.txt
  timeout 150 python bench/bench_decode_kernel.py --kinds latent/latent,full/full --ranks 112/160 --batches 1,32 --contexts 32768 --kernel-times --pdl 0 \
     --combine 0:128:4:64,0:16:4:64,32:128:4:64,32:64:4:64,16:128:4:64,32:128:4:32,32:128:8:64,64:64:4:64 2>&1 | grep -v -i warn | tee $OUT/kernel.txt | cut -c1-100 | grep -v "^ *$"
  grep "kernels (us)" $OUT/kernel.txt
  R=80,96,112/112,160,128
  G="python bench/bench_generate.py --models 270m --no-hf --batches 1 --ranks $R"
  O="python oldpkg/bench/bench_generate.py --models 270m --no-hf --batches 1 --ranks $R"
  for rep in 1 2; do
    timeout 80 $O --layouts original,converted --contexts 32768 --out $OUT/old.json > $OUT/log.txt 2>&1; python -c "$SUM" $OUT/old.json
    timeout 80 $G --layouts original,converted --contexts 32768 --out $OUT/new.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new.json
  done
  timeout 80 $G --layouts original,converted --contexts 128,32768 --runner-options fused_norms=1 --out $OUT/fused.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/fused.json
  timeout 60 $G --layouts original --contexts 128 --out $OUT/new128.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new128.json
  grep -i "error\|Trace" $OUT/log.txt | head -5
  ;;
run2)   # the combine in slices with U prefetched into L2 before the wait, den in the first slice's pass: kernel per build, end to end vs e8d8870
  TPA_TEST_DEVICE=cuda timeout 100 python -m pytest tests/test_runtime_kernels.py -x -q -p no:cacheprovider -k "combine or latent_v or decode_path" 2>&1 | tail -4 > $OUT/tests.txt
  tail -2 $OUT/tests.txt
  timeout 120 python bench/bench_decode_kernel.py --kinds latent/latent --ranks 112/160 --batches 1,32 --contexts 32768 --kernel-times --pdl 0,1 \
     --combine 32:4:64,32:4:32,32:8:64,16:4:64,64:4:64 2>&1 | grep -v -i warn > $OUT/kernel.txt
  grep "kernels (us)" $OUT/kernel.txt
  R=80,96,112/112,160,128
  G="python bench/bench_generate.py --models 270m --no-hf --batches 1 --ranks $R"
  O="python oldpkg/bench/bench_generate.py --models 270m --no-hf --batches 1 --ranks $R"
  for rep in 1 2; do
    timeout 80 $O --layouts original,converted --contexts 32768 --out $OUT/old.json > $OUT/log.txt 2>&1; python -c "$SUM" $OUT/old.json
    timeout 80 $G --layouts original,converted --contexts 32768 --out $OUT/new.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new.json
  done
  for ko in combine_warps=8 combine_block_d=32; do
    timeout 60 $G --layouts converted --contexts 32768 --kernel-options $ko --out $OUT/var.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/var.json
  done
  timeout 80 $O --layouts converted --contexts 32768 --batches 32 --out $OUT/old32.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/old32.json
  timeout 80 $G --layouts converted --contexts 32768 --batches 32 --out $OUT/new32.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new32.json
  grep -i "error\|Trace" $OUT/log.txt | head -5
  ;;
esac
case "$1" in
run3)   # the combine's slices in a loop (not unrolled: 120-168 registers, so its programs fit beside the wg kernel's): builds end to end vs e8d8870
  R=80,96,112/112,160,128
  G="python bench/bench_generate.py --models 270m --no-hf --batches 1 --ranks $R --layouts converted --contexts 32768"
  O="python oldpkg/bench/bench_generate.py --models 270m --no-hf --batches 1 --ranks $R --layouts converted --contexts 32768"
  timeout 60 $O --out $OUT/old.json > $OUT/log.txt 2>&1; python -c "$SUM" $OUT/old.json
  for ko in combine_rv_block=32 combine_rv_block=16 combine_block_d=32 combine_warps=8 combine_rv_block=64; do
    timeout 60 $G --kernel-options $ko --out $OUT/var.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/var.json
  done
  timeout 60 $O --out $OUT/old.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/old.json
  grep -i "error\|Trace" $OUT/log.txt | head -5
  ;;
esac
case "$1" in
run4)   # default combine slices 64 (dynamic loop) vs e8d8870, alternating; 128-column slices; the original for the ratio; batch 32
  R=80,96,112/112,160,128
  G="python bench/bench_generate.py --models 270m --no-hf --batches 1 --ranks $R --contexts 32768"
  O="python oldpkg/bench/bench_generate.py --models 270m --no-hf --batches 1 --ranks $R --contexts 32768"
  for rep in 1 2; do
    timeout 60 $O --layouts converted --out $OUT/old.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/old.json
    timeout 60 $G --layouts original,converted --out $OUT/new.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new.json
  done
  timeout 60 $G --layouts converted --kernel-options combine_rv_block=128 --out $OUT/var.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/var.json
  timeout 80 $G --layouts original,converted --batches 32 --out $OUT/new32.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new32.json
  grep -i "error\|Trace" $OUT/log.txt | head -5
  ;;
esac
case "$1" in
run5)   # default combine slices 128: original vs converted twice; slices of 256 (one for rank 160)
  R=80,96,112/112,160,128
  G="python bench/bench_generate.py --models 270m --no-hf --batches 1 --ranks $R --contexts 32768"
  for rep in 1 2; do
    timeout 60 $G --layouts original,converted --out $OUT/new.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new.json
  done
  timeout 45 $G --layouts converted --kernel-options combine_rv_block=256 --out $OUT/var.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/var.json
  grep -i "error\|Trace" $OUT/log.txt | head -5
  ;;
esac
