#!/bin/bash
# session-14 device script, run as `bash devrun.sh runN` from the repository root on the device tool
# run1: main 6107158 (as shipped in session 13); run2: 91cd34a (U multicast in clusters; its --cluster
# bench options were removed with the clusters in 6ff54fe); run3: 6ff54fe (U by one bulk copy, q in one
# round trip); run4: cddf14e (+ the write slot loaded first, V up-projection before the combine's wait);
# run5: 68fe4f4 + bench_generate.py memory_before (committed right after)
set -u
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
SUM='import json,sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["rows"]:
        print(r["model"], "b%d" % r["batch"], r["context"], r.get("layout"), "pdl", r.get("pdl"), "pf", r.get("prefetch"), "cl", r.get("cluster"), "%.1f tok/s" % r.get("tok_s", 0), r.get("error", ""), "kv_ok", r.get("kv_bytes") == r.get("predicted_kv_bytes"))'
K="python bench/bench_decode_kernel.py --contexts 8192,32768 --batches 1"
case "$1" in
run1)
  for p in 0 2; do
    $K --kinds latent/latent --k-scale 1 --backend cuda --pdl $p --phases 2>&1 | grep -v Warn > $OUT/phases_pdl$p.txt
    echo "== phases pdl $p"; sed -E 's/block .* lc 1://' $OUT/phases_pdl$p.txt | cut -c1-420
  done
  for lay in original converted; do
    timeout 150 python bench/profile_decode.py --model 270m --layout $lay --batch 1 --context 32768 --top 40 2>&1 | grep -v Warn > $OUT/profile_$lay.txt
    cut -c1-160 $OUT/profile_$lay.txt
  done
  timeout 150 python bench/bench_generate.py --models 270m --batches 1 --contexts 32768 --no-hf --layouts original,converted --out $OUT/e2e_b1.json > $OUT/e2e_b1.log 2>&1
  python -c "$SUM" $OUT/e2e_b1.json
  ;;
esac
case "$1" in
run2)
  TPA_TEST_DEVICE=cuda timeout 300 python -m pytest tests/test_cuda_decode.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 2 --cluster 1,2,4 2>&1 | grep -v Warn > $OUT/kernel_cluster.txt
  $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 2 --cluster 1,2,4 --cold 2>&1 | grep -v Warn > $OUT/kernel_cluster_cold.txt
  $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 0,2 --cluster 2,4 --phases 2>&1 | grep -v Warn > $OUT/phases_cluster.txt
  for f in kernel_cluster kernel_cluster_cold phases_cluster; do echo "== $f"; sed -E 's/block .* lc 1://' $OUT/$f.txt | cut -c1-420; done
  timeout 200 python bench/bench_generate.py --models 270m --batches 1 --contexts 32768 --no-hf --layouts original,converted --cluster 1,auto --out $OUT/e2e_b1.json > $OUT/e2e_b1.log 2>&1
  python -c "$SUM" $OUT/e2e_b1.json
  grep -i "error\|Trace" $OUT/e2e_b1.log | head -5
  ;;
esac
case "$1" in
run3)
  TPA_TEST_DEVICE=cuda timeout 300 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 0,2 --phases 2>&1 | grep -v Warn > $OUT/phases.txt
  $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 2 --cold 2>&1 | grep -v Warn > $OUT/kernel_cold.txt
  $K --kinds full/full --pdl 1 --cold 2>&1 | grep -v Warn > $OUT/kernel_full_cold.txt
  for f in phases kernel_cold kernel_full_cold; do echo "== $f"; sed -E 's/block .* lc 1://' $OUT/$f.txt | cut -c1-470; done
  for r in 1 2; do
    timeout 200 python bench/bench_generate.py --models 270m,1b --batches 1 --contexts 32768 --no-hf --layouts original,converted --out $OUT/e2e_b1_rep$r.json > $OUT/e2e_b1_rep$r.log 2>&1
    python -c "$SUM" $OUT/e2e_b1_rep$r.json
  done
  ;;
esac
case "$1" in
run4)
  TPA_TEST_DEVICE=cuda timeout 300 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 0,2 --phases 2>&1 | grep -v Warn > $OUT/phases.txt
  for f in phases; do echo "== $f"; sed -E 's/block .* lc 1://' $OUT/$f.txt | cut -c1-470; done
  for r in 1 2; do
    timeout 200 python bench/bench_generate.py --models 270m,1b --batches 1 --contexts 32768 --no-hf --layouts original,converted --out $OUT/e2e_b1_rep$r.json > $OUT/e2e_b1_rep$r.log 2>&1
    python -c "$SUM" $OUT/e2e_b1_rep$r.json
  done
  ;;
esac
P='import json,sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["rows"]:
        print(r["model"], "b%d" % r["batch"], r["context"], r.get("layout"), "%.1f tok/s" % r.get("tok_s", 0), "peak %.3f GiB" % (r.get("peak_memory", 0) / 2**30), "before %.3f GiB" % (r.get("memory_before", 0) / 2**30), r.get("error", ""))'
case "$1" in
run5)
  timeout 200 python bench/bench_generate.py --models 270m --batches 1 --contexts 128,32768 --no-hf --layouts original,converted --out $OUT/e2e_mem.json > $OUT/e2e_mem.log 2>&1
  python -c "$P" $OUT/e2e_mem.json
  timeout 100 python bench/bench_generate.py --models 270m --batches 1 --contexts 32768 --no-hf --layouts original --out $OUT/e2e_mem_alone.json > $OUT/e2e_mem_alone.log 2>&1
  python -c "$P" $OUT/e2e_mem_alone.json
  grep -i "error\|Trace" $OUT/*.log | head -5
  ;;
esac
