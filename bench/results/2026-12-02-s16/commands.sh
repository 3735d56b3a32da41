#!/bin/bash
# session-16 device script, run as `bash devrun.sh runN` from the repository root on the device tool
set -u
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
SUM='import json,sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["rows"]:
        print(f.split("/")[-1], r["model"], "b%d" % r["batch"], r["context"], r.get("layout"), r.get("ranks"), "%.1f tok/s" % r.get("tok_s", 0), "kv %.3f GB" % (r.get("kv_bytes", 0) / 1e9), "kv_ok", r.get("kv_bytes") == r.get("predicted_kv_bytes"), r.get("kernels"), r.get("error", ""))'
NEW=80,96,128/128,128,128      # balanced with rank_limits {multiple: 16, max: 128} on the real 270M (runs 1-3)
OLD=81,91,116/117,163,134      # balanced before rank_limits on the real 270M
NEW2=80,96,112/112,160,128     # balanced with rank_limits {multiple: 16, max: {k: 112, v: 160}} (run4)
case "$1" in
run1)
  TPA_TEST_DEVICE=cuda timeout 300 python -m pytest tests/test_cuda_decode.py -x -q -p no:cacheprovider 2>&1 | tail -5 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  G="python bench/bench_generate.py --models 270m --contexts 32768 --no-hf"
  for b in 1 32; do
    timeout 150 $G --batches $b --layouts original,converted --ranks $NEW --out $OUT/b${b}_new_1.json > $OUT/b${b}_new_1.log 2>&1
    timeout 100 $G --batches $b --layouts converted --ranks 128/128 --out $OUT/b${b}_proxy.json > $OUT/b${b}_proxy.log 2>&1
    timeout 100 $G --batches $b --layouts converted --ranks $OLD --out $OUT/b${b}_old.json > $OUT/b${b}_old.log 2>&1
    timeout 150 $G --batches $b --layouts original,converted --ranks $NEW --out $OUT/b${b}_new_2.json > $OUT/b${b}_new_2.log 2>&1
    for f in new_1 proxy old new_2; do python -c "$SUM" $OUT/b${b}_$f.json; grep -i "error\|Trace" $OUT/b${b}_$f.log | head -3; done
  done
  ;;
esac
case "$1" in
run2)   # where the step's GPU time goes, 270M b1 32K: original vs balanced's real ranks
  for lay in original converted; do
    echo "== $lay"
    timeout 200 python bench/profile_decode.py --model 270m --layout $lay --batch 1 --context 32768 --ranks $NEW --top 40 --steps 30 2>&1 | grep -v Warn | tee $OUT/profile_$lay.txt | cut -c1-200
  done
  ;;
esac
case "$1" in
run3)   # GPU tests (rank 80 / 96 key-scale cases, V ranks 160 / 192 fall back); the latent combine's
        # width per program, alternating with the shipped one (270M b1 32K, balanced's real ranks)
  TPA_TEST_DEVICE=cuda timeout 300 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -4 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  G="python bench/bench_generate.py --models 270m --contexts 32768 --no-hf --batches 1 --ranks $NEW"
  for rep in 1 2; do
    timeout 120 $G --layouts original,converted --out $OUT/ship_$rep.json > $OUT/log.txt 2>&1; python -c "$SUM" $OUT/ship_$rep.json
    timeout 100 $G --layouts converted --kernel-options latent_combine_block=256,latent_combine_warps=8 --out $OUT/c256w8_$rep.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/c256w8_$rep.json
    timeout 100 $G --layouts converted --kernel-options latent_combine_block=128 --out $OUT/c128_$rep.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/c128_$rep.json
  done
  grep -i "error\|Trace" $OUT/log.txt | head -5
  ;;
esac
case "$1" in
run4)   # the wg kernel with V ranks above 128 (where its buffers fit): GPU tests, then balanced's new ranks end to end
  TPA_TEST_DEVICE=cuda timeout 240 python -m pytest tests/test_cuda_decode.py -x -q -p no:cacheprovider -k "key_scales or equals_torch_tiles or between or refuses" 2>&1 | tail -15 > $OUT/tests.txt
  tail -3 $OUT/tests.txt
  G="python bench/bench_generate.py --models 270m --contexts 32768 --no-hf --ranks $NEW2"
  timeout 120 $G --batches 1 --layouts original,converted --out $OUT/b1_1.json > $OUT/log.txt 2>&1; python -c "$SUM" $OUT/b1_1.json
  timeout 120 $G --batches 32 --layouts original,converted --out $OUT/b32.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/b32.json
  timeout 120 $G --batches 1 --layouts original,converted --out $OUT/b1_2.json >> $OUT/log.txt 2>&1; python -c "$SUM" $OUT/b1_2.json
  grep -i "error\|Trace\|warn" $OUT/log.txt | grep -v _warn_once | head -5
  ;;
esac
