#!/bin/bash
# session-13 device script, run as `bash devrun.sh runN` from the repository root on the device tool
# run1: wip/pdl 2e60a99 (PDL); run2: e9bc588 (+ STAGGER 1-3 builds, TPA_STAGGER; reverted in 1e4a6aa);
# run3: 1e4a6aa; run4: a25d017 (+ STAGGER 4 and --cold; STAGGER 4 reverted in 85b7a7a); run5: 2a6e0ab
# (+ L2 prefetch, then up to half of L2); run6: 062a49c (+ PREFETCH_MAX_L2: the original forced with 1.0)
set -u
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
SUM='import json,sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["rows"]:
        print(r["model"], "b%d" % r["batch"], r["context"], r.get("layout"), "pdl", r.get("pdl"), "pf", r.get("prefetch"), "%.1f tok/s" % r.get("tok_s", 0), r.get("error", ""), "kv_ok", r.get("kv_bytes") == r.get("predicted_kv_bytes"))'
K="python bench/bench_decode_kernel.py --contexts 8192,32768 --batches 1,32"
case "$1" in
run1)
  TPA_TEST_DEVICE=cuda timeout 300 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 0,1,2 2>&1 | grep -v Warn > $OUT/kernel_latent.txt
  $K --kinds full/full --pdl 0,1 2>&1 | grep -v Warn > $OUT/kernel_full.txt
  for f in kernel_latent kernel_full; do echo "== $f"; sed -E 's/block .* lc 1://' $OUT/$f.txt | cut -c1-200; done
  timeout 200 python bench/bench_generate.py --check --models 270m --batches 1 --contexts 128,32768 --no-hf --layouts original,converted --pdl 0,1 --out $OUT/e2e_b1.json > $OUT/e2e_b1.log 2>&1
  grep "gpu check" $OUT/e2e_b1.log | head -3; tail -3 $OUT/e2e_b1.log | grep -i error
  python -c "$SUM" $OUT/e2e_b1.json
  ;;
run2)
  for v in 0 1 2 3; do
    TPA_STAGGER=$v $K --kinds latent/latent --k-scale 1 --backend triton,cuda --pdl 2 2>&1 | grep -v Warn > $OUT/kernel_stagger$v.txt
    echo "== stagger $v"; grep cuda $OUT/kernel_stagger$v.txt | sed -E 's/block .* lc 1://' | cut -c1-150
  done
  for v in 0 3; do
    TPA_STAGGER=$v $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 2 --phases 2>&1 | grep -v Warn > $OUT/phases_stagger$v.txt
    echo "== phases $v"; grep -A1 cuda $OUT/phases_stagger$v.txt | sed -E 's/block .* lc 1://' | cut -c1-250
  done
  TPA_STAGGER=3 TPA_TEST_DEVICE=cuda timeout 200 python -m pytest tests/test_cuda_decode.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests_stagger3.txt
  tail -3 $OUT/tests_stagger3.txt
  ;;
run3)
  for lay in original converted; do
    timeout 150 python bench/profile_decode.py --model 270m --layout $lay --batch 1 --context 32768 --top 14 2>&1 | grep -v Warn > $OUT/profile_$lay.txt
    cat $OUT/profile_$lay.txt | cut -c1-150
  done
  timeout 300 python bench/bench_generate.py --check --models 270m,1b --batches 1,32 --contexts 128,32768 --no-hf --layouts original,converted --out $OUT/e2e.json > $OUT/e2e.log 2>&1
  grep "gpu check" $OUT/e2e.log | head -3
  python -c "$SUM" $OUT/e2e.json
  for r in 1 2; do
    timeout 120 python bench/bench_generate.py --models 270m,1b --batches 1 --contexts 32768 --no-hf --layouts original,converted --out $OUT/e2e_b1_rep$r.json > $OUT/e2e_b1_rep$r.log 2>&1
    python -c "$SUM" $OUT/e2e_b1_rep$r.json
  done
  ;;
run4)
  K1="python bench/bench_decode_kernel.py --contexts 8192,32768 --batches 1"
  for v in 0 4; do
    for c in "" "--cold"; do
      TPA_STAGGER=$v $K1 --kinds latent/latent --k-scale 1 --backend cuda --pdl 2 $c 2>&1 | grep -v Warn > $OUT/kernel_s${v}${c}.txt
      echo "== stagger $v $c"; grep cuda $OUT/kernel_s${v}${c}.txt | sed -E 's/block .* lc 1://' | cut -c1-150
    done
  done
  $K1 --kinds full/full --pdl 1 --cold 2>&1 | grep -v Warn > $OUT/kernel_full_cold.txt
  echo "== full cold"; sed -E 's/block .* lc 1://' $OUT/kernel_full_cold.txt | cut -c1-120
  TPA_STAGGER=4 $K --kinds latent/latent --k-scale 1 --backend cuda --pdl 2 --phases 2>&1 | grep -v Warn > $OUT/phases_s4.txt
  echo "== phases s4"; grep -A1 cuda $OUT/phases_s4.txt | sed -E 's/block .* lc 1://' | cut -c1-250
  TPA_STAGGER=4 TPA_TEST_DEVICE=cuda timeout 200 python -m pytest tests/test_cuda_decode.py -x -q -p no:cacheprovider -k "wg or equals" 2>&1 | tail -3
  ;;
run5)
  TPA_TEST_DEVICE=cuda timeout 200 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider -k "prefetch or step_write or sink or decode_path" 2>&1 | tail -25 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  for r in 1 2; do
    timeout 150 python bench/bench_generate.py --models 270m,1b --batches 1 --contexts 32768 --no-hf --layouts original,converted --prefetch 0,1 --out $OUT/e2e_pf_rep$r.json > $OUT/e2e_pf_rep$r.log 2>&1
    python -c "$SUM" $OUT/e2e_pf_rep$r.json
  done
  ;;
run6)
  python -c "import torch; print('L2 MB', torch.cuda.get_device_properties(0).L2_cache_size / 2**20)"
  timeout 150 python bench/bench_generate.py --models 270m,1b --batches 1 --contexts 32768 --no-hf --layouts original --prefetch 0,1 --prefetch-max 1.0 --out $OUT/e2e_orig_pf.json > $OUT/e2e_orig_pf.log 2>&1
  python -c "$SUM" $OUT/e2e_orig_pf.json
  ;;
esac
