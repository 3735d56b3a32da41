#!/bin/bash
# session-17 device script, run as `bash devrun.sh runN` from the repository root on the device tool
# Code of each run:
#   run01: f541bc3 plus, uncommitted, the combine merged into the Triton partial kernel (removed: slower)
#          and inductor's argmax in the compiled greedy tail (removed: 54 us)
#   run02: never ran (the device was not lent); run03 repeats its A/B
#   run03: 9a9a0e2 plus gemv.py as first committed in 64b9fa5 (sliced rows, no pre-wait fetch);
#          oldpkg/ = `git archive 0d71c01 tpa_compress bench/bench_generate.py bench/profile_decode.py`
#          (the session-16 package), carried with `carry: ["oldpkg"]`
#   run04, run05: 1ac3988 (gemv with the pre-wait fetch and the GLU prologue)
set -u
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
SUM='import json,sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["rows"]:
        print(f.split("/")[-1], r["model"], "b%d" % r["batch"], r["context"], r.get("runner"), r.get("layout"), r.get("runner_options"), r.get("kernel_options"), "%.1f tok/s" % r.get("tok_s", 0), "%.4f ms" % r.get("ms_per_step", 0), r.get("kernels"), r.get("error", ""))'
case "$1" in
run1)   # GPU tests of the new pieces (compiled step ends, entries kernel, merge in the partial kernel), then where the step's time goes
  TPA_TEST_DEVICE=cuda timeout 330 python -m pytest tests/test_runtime_kernels.py tests/test_runtime_sink.py tests/test_cuda_decode.py -x -q -p no:cacheprovider 2>&1 | tail -6 > $OUT/tests.txt
  tail -4 $OUT/tests.txt
  for c in 128 32768; do
    timeout 120 python bench/profile_decode.py --model 270m --layout original --batch 1 --context $c --top 30 --steps 30 2>&1 | grep -v -i warn | tee $OUT/profile_orig_$c.txt | cut -c1-160
  done
  ;;
run2)   # the step's end-to-end speed, 270M batch 1: session-16 package (0d71c01, oldpkg/) vs now, and each new piece off
  G="python bench/bench_generate.py --models 270m --no-hf --batches 1"
  O="python oldpkg/bench/bench_generate.py --models 270m --no-hf --batches 1"
  for rep in 1 2; do
    timeout 60 $O --layouts original --contexts 128 --out $OUT/old.json > $OUT/log.txt 2>&1; python -c "$SUM" $OUT/old.json
    timeout 60 $G --layouts original --contexts 128 --out $OUT/new.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new.json
  done
  timeout 60 $G --layouts original --contexts 128 --runner-options entries_kernel=0 --out $OUT/new.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new.json
  timeout 60 $G --layouts original --contexts 128 --kernel-options fuse_combine=0 --out $OUT/new.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new.json
  grep -i "error\|Trace" $OUT/log.txt | head -5
  ;;
run3)   # after removing the merge in the partial kernel (slower, run1) and inductor's argmax (54 us): tests, gemv, A/B, profile
  TPA_TEST_DEVICE=cuda timeout 200 python -m pytest tests/test_runtime_kernels.py tests/test_runtime_sink.py tests/test_cuda_decode.py -x -q -p no:cacheprovider -k "entries or fused_weights or compiled or decode_path or graph or runner or gemv" 2>&1 | tail -6 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  timeout 60 python bench/bench_gemv.py 2>&1 | tee $OUT/gemv.txt
  G="python bench/bench_generate.py --models 270m --no-hf --batches 1"
  O="python oldpkg/bench/bench_generate.py --models 270m --no-hf --batches 1"
  for rep in 1 2; do
    timeout 60 $O --layouts original --contexts 128 --out $OUT/old.json > $OUT/log.txt 2>&1; python -c "$SUM" $OUT/old.json
    timeout 60 $G --layouts original --contexts 128 --out $OUT/new.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new.json
  done
  for ro in gemv=0 entries_kernel=0; do
    timeout 60 $G --layouts original --contexts 128 --runner-options $ro --out $OUT/new.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/new.json
  done
  grep -i "error\|Trace" $OUT/log.txt | head -5
  timeout 100 python bench/profile_decode.py --model 270m --layout original --batch 1 --context 128 --top 16 --steps 30 2>&1 | grep -v -i warn | tee $OUT/profile_orig_128.txt | cut -c1-140
  ;;
esac
case "$1" in
run4)   # the table at 9a9a0e2+gemv: 270M batch 1 at 128 / 4K / 32K, original and balanced's real ranks; transformers at 128; batch 32 at 32K
  TPA_TEST_DEVICE=cuda timeout 150 python -m pytest tests/test_runtime_kernels.py tests/test_runtime_sink.py -x -q -p no:cacheprovider -k "entries or fused_weights or compiled or decode_path or gemv" 2>&1 | tail -4 > $OUT/tests.txt
  tail -2 $OUT/tests.txt
  timeout 40 python bench/bench_gemv.py --shapes 270m 2>&1 | tee $OUT/gemv.txt
  R=80,96,112/112,160,128
  G="python bench/bench_generate.py --models 270m --ranks $R"
  timeout 200 $G --batches 1 --contexts 128 --layouts original,converted --hf-impls static,dynamic --out $OUT/b1_128.json > $OUT/log.txt 2>&1; python -c "$SUM" $OUT/b1_128.json
  timeout 150 $G --batches 1 --contexts 4096,32768 --layouts original,converted --no-hf --out $OUT/b1_long.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/b1_long.json
  timeout 120 $G --batches 32 --contexts 32768 --layouts original,converted --no-hf --out $OUT/b32.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/b32.json
  timeout 60 $G --batches 1 --contexts 128 --layouts original --no-hf --runner-options gemv=0 --out $OUT/nogemv.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/nogemv.json
  grep -i "error\|Trace" $OUT/log.txt | head -5
  ;;
esac
case "$1" in
run5)   # the whole GPU suite of the runtime at HEAD; where a 32K batch-1 step's time goes now, original vs balanced's real ranks
  TPA_TEST_DEVICE=cuda timeout 250 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py tests/test_runtime_kernels.py -x -q -p no:cacheprovider 2>&1 | tail -4 > $OUT/tests.txt
  tail -2 $OUT/tests.txt
  for lay in original converted; do
    timeout 75 python bench/profile_decode.py --model 270m --layout $lay --batch 1 --context 32768 --ranks 80,96,112/112,160,128 --top 22 --steps 20 2>&1 | grep -v -i warn | tee $OUT/profile_$lay.txt | cut -c1-150
  done
  ;;
esac
