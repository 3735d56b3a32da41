#!/bin/bash
# session-19 device script, run as `bash devrun.sh cN` from the repository root on the device tool (commit 7fd65cc)
set -u
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
SUM='import json,sys
for f in sys.argv[1:]:
    for r in json.load(open(f))["rows"]:
        print(f.split("/")[-1], r["model"], "b%d" % r["batch"], r["context"], r.get("runner"), r.get("layout"), r.get("kernel_options"), "%.1f tok/s" % r.get("tok_s", 0), "%.4f ms" % r.get("ms_per_step", 0), "wall %.0f" % r.get("wall_s", 0), r.get("error", ""))'
T="TPA_TEST_DEVICE=cuda"
case "$1" in
c1)   # matrix piece 1 (ours, 270M, --check), then the GPU tests of the latent combine
  s=$SECONDS; timeout 400 bash bench/run_matrix.sh 1 > $OUT/p1.txt 2>&1; echo "piece 1 rc $? in $((SECONDS-s)) s"; grep -i "check\|error\|Trace" $OUT/p1.txt | head -8
  python -c "$SUM" $OUT/matrix_ours_270m.json
  s=$SECONDS; env $T timeout $((560-SECONDS)) python -m pytest tests/test_runtime_kernels.py -x -q -p no:cacheprovider -k "combine or latent_v or decode_path" 2>&1 | tail -4 > $OUT/tests_c1.txt; echo "tests in $((SECONDS-s)) s"; tail -2 $OUT/tests_c1.txt
  ;;
c2)   # matrix piece 2 (ours, 1B), then combine_rv_block=0 vs the default (128-column slices), 270M converted 32K
  s=$SECONDS; timeout 330 bash bench/run_matrix.sh 2 > $OUT/p2.txt 2>&1; echo "piece 2 rc $? in $((SECONDS-s)) s"; grep -i "error\|Trace" $OUT/p2.txt | head -5
  python -c "$SUM" $OUT/matrix_ours_1b.json
  G="python bench/bench_generate.py --models 270m --no-hf --batches 1,32 --ranks 80,96,112/112,160,128 --layouts converted --contexts 32768"
  s=$SECONDS; timeout $((585-SECONDS)) $G --kernel-options combine_rv_block=0 --out $OUT/ab_rv0.json > $OUT/ab.txt 2>&1; python -c "$SUM" $OUT/ab_rv0.json; echo "ab in $((SECONDS-s)) s"
  ;;
c3)   # matrix piece 3 (transformers, 270M)
  s=$SECONDS; bash bench/run_matrix.sh 3 > $OUT/p3.txt 2>&1; echo "piece 3 rc $? in $((SECONDS-s)) s"; grep -i "error\|Trace" $OUT/p3.txt | head -5
  python -c "$SUM" $OUT/matrix_hf_270m.json
  ;;
c4)   # matrix piece 4 (transformers, 1B)
  s=$SECONDS; bash bench/run_matrix.sh 4 > $OUT/p4.txt 2>&1; echo "piece 4 rc $? in $((SECONDS-s)) s"; grep -i "error\|Trace" $OUT/p4.txt | head -5
  python -c "$SUM" $OUT/matrix_hf_1b.json
  ;;
c5)   # the rest of the GPU suite
  s=$SECONDS; env $T timeout 560 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -4 > $OUT/tests_c5.txt; echo "tests in $((SECONDS-s)) s"; tail -2 $OUT/tests_c5.txt
  ;;
esac
