#!/bin/bash
# session-15 device script, run as `bash devrun.sh runN` from the repository root on the device tool
# run4, run5: see their blocks. run1: 91763a8 (ping-pong build, kernel constants in the L2 prefetch; its new test assertion was
# wrong, fixed in e43c07d); run2: e43c07d, the GPU tests (the run also timed a standalone wgmma
# harness that was not kept: it reported rates above the tensor cores' peak). Both reverted in 7ef77e0.
set -u
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
SUM='import json,sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["rows"]:
        print(r["model"], "b%d" % r["batch"], r["context"], r.get("layout"), r.get("cuda_kernel", ""), "pf", r.get("prefetch"), "pfc", r.get("prefetch_constants"), "%.1f tok/s" % r.get("tok_s", 0), r.get("error", ""))'
K="python bench/bench_decode_kernel.py --contexts 8192,32768 --batches 1"
case "$1" in
run1)
  TPA_TEST_DEVICE=cuda timeout 330 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 2 --cuda-builds 1,1:::wg:4:1 --phases 2>&1 | grep -v Warn > $OUT/phases.txt
  $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 2 --cuda-builds 1,1:::wg:4:1 --cold 2>&1 | grep -v Warn > $OUT/kernel_cold.txt
  for f in phases kernel_cold; do echo "== $f"; sed -E 's/block .* lc 1://' $OUT/$f.txt | cut -c1-470; done
  for r in 1 2; do
    timeout 200 python bench/bench_generate.py --models 270m,1b --batches 1 --contexts 32768 --no-hf --layouts original,converted --cuda-kernels wg,wg+pp --prefetch auto,cache --out $OUT/e2e_b1_rep$r.json > $OUT/e2e_b1_rep$r.log 2>&1
    python -c "$SUM" $OUT/e2e_b1_rep$r.json
    grep -i "error\|Trace" $OUT/e2e_b1_rep$r.log | head -3
  done
  ;;
esac
case "$1" in
run2)
  TPA_TEST_DEVICE=cuda timeout 300 python -m pytest tests/test_cuda_decode.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  ;;
esac

case "$1" in
run4)   # main 94e9393 as shipped, batch 32 at 32K (two repeats)
  SUM='import json,sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["rows"]:
        print(r["model"], "b%d" % r["batch"], r["context"], r.get("layout"), "%.1f tok/s" % r.get("tok_s", 0), "peak %.2f GiB" % (r.get("peak_memory", 0) / 2**30), "kv_ok", r.get("kv_bytes") == r.get("predicted_kv_bytes"), r.get("error", ""))'
  for r in 1 2; do
    timeout 270 python bench/bench_generate.py --models 270m,1b --batches 32 --contexts 32768 --no-hf --layouts original,converted --out $OUT/e2e_b32_rep$r.json > $OUT/e2e_b32_rep$r.log 2>&1
    python -c "$SUM" $OUT/e2e_b32_rep$r.json
    grep -i "error\|Trace" $OUT/e2e_b32_rep$r.log | head -3
  done
  ;;
esac

case "$1" in
run5)   # batch 32 at 32K, 1B: the thirteenth session's main (6107158, unpacked in old13/ by
        # `git archive 6107158 | tar -x -C old13`) against main as shipped (94e9393), alternating in one lease
  SUM='import json,sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["rows"]:
        print(f.split("/")[-1], r["model"], "b%d" % r["batch"], r["context"], r.get("layout"), "%.1f tok/s" % r.get("tok_s", 0), r.get("error", ""))'
  B="bench/bench_generate.py --models 1b --batches 32 --contexts 32768 --no-hf --layouts original,converted"
  for run in old13:1 new:1 new:2 old13:2; do   # alternating: old, new, new, old
    tree=${run%:*}; pass=${run#*:}
    d=.; [ $tree = old13 ] && d=old13
    (cd $d && timeout 120 python $B --out $OUT/b32_${tree}_$pass.json > $OUT/b32_${tree}_$pass.log 2>&1)
    python -c "$SUM" $OUT/b32_${tree}_$pass.json
  done
  ;;
esac
