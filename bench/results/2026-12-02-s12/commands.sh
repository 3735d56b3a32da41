#!/bin/bash
# run1 ran on the merge of wip/wg-b1 and main (0827651); _main/ was `git archive main tpa_compress bench` (0a6d5d3)
# session-12 device script (not committed)
set -u
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
K="python bench/bench_decode_kernel.py --contexts 8192,32768 --batches 1,32 --kinds latent/latent --k-scale 1"
case "$1" in
run1)
  TPA_TEST_DEVICE=cuda timeout 240 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -2 $OUT/tests.txt
  $K --backend triton,cuda --kernel-times 2>&1 | grep -v Warn > $OUT/kernel_branch.txt
  $K --backend cuda --phases 2>&1 | grep -v Warn > $OUT/phases_branch.txt
  (cd _main && $K --backend triton,cuda --kernel-times 2>&1 | grep -v Warn > $OUT/kernel_main.txt)
  python bench/bench_decode_kernel.py --contexts 8192,32768 --batches 1,32 --kinds full/full --kernel-times 2>&1 | grep -v Warn > $OUT/kernel_full.txt
  for f in kernel_main kernel_branch kernel_full phases_branch; do echo "== $f"; sed -E 's/block .* lc 1://' $OUT/$f.txt | cut -c1-230; done
  python bench/bench_generate.py --models 270m --batches 1 --contexts 32768 --no-hf --layouts original,converted --out $OUT/e2e_b1.json > $OUT/e2e_b1.log 2>&1
  grep -o '"model": "[a-z0-9]*", "batch": [0-9]*, "context": [0-9]*.\{0,80\}"layout": "[a-z]*".\{0,120\}tok_s": [0-9.]*' $OUT/e2e_b1.log | sed 's/"runner.*layout"//; s/, "ranks.*tok_s"//'
  ;;
esac
# run2 ran on the halves kernel (this commit); _exp/ was the same tree with a build knob
# TPA_NOU=1 that skips the U copies (garbage output, rel.err nan: only its timing counts)
run2)
  $K --backend triton,cuda 2>&1 | grep -v Warn > $OUT/kernel_halves.txt
  $K --backend cuda --phases 2>&1 | grep -v Warn > $OUT/phases_halves.txt
  (cd _exp && for n in 0 1; do TPA_NOU=$n $K --backend cuda --phases 2>&1 | grep -v Warn > $OUT/phases_nou$n.txt; done)
  for f in kernel_halves phases_halves phases_nou0 phases_nou1; do echo "== $f"; sed -E 's/block .* lc 1://' $OUT/$f.txt | cut -c1-250; done
  TPA_TEST_DEVICE=cuda timeout 240 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -2 $OUT/tests.txt
  timeout 220 python bench/bench_generate.py --check --models 270m,1b --batches 1,32 --contexts 128,32768 --no-hf --layouts original,converted --out $OUT/e2e.json > $OUT/e2e.log 2>&1
  grep "gpu check" $OUT/e2e.log | head -3
  eval "$E2E \$OUT/e2e.log" | sed 's/"runner.*layout"//; s/, "ranks.*tok_s"//'
  ;;
# run3 ran on branch wip/wg-pipeline (the tile loop two tiles at a time, straight-line; not merged:
# slower, see docs/benchmarks.md)
run3)
  $K --backend triton,cuda --k-scale 0,1 2>&1 | grep -v Warn > $OUT/kernel_pairs.txt
  $K --backend cuda --phases 2>&1 | grep -v Warn > $OUT/phases_pairs.txt
  for f in kernel_pairs phases_pairs; do echo "== $f"; sed -E 's/block .* lc 1://' $OUT/$f.txt | cut -c1-250; done
  TPA_TEST_DEVICE=cuda timeout 240 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -x -q -p no:cacheprovider 2>&1 | tail -25 > $OUT/tests.txt
  tail -2 $OUT/tests.txt
  timeout 220 python bench/bench_generate.py --check --models 270m,1b --batches 1,32 --contexts 128,32768 --no-hf --layouts original,converted --out $OUT/e2e.json > $OUT/e2e.log 2>&1
  grep "gpu check" $OUT/e2e.log | head -3
  eval "$E2E \$OUT/e2e.log" | sed 's/"runner.*layout"//; s/, "ranks.*tok_s"//'
  ;;
# run4 ran on main e60f8f0 (== 2b2bddb's code): b1 32K e2e, three repeats
run4)
  for r in 1 2 3; do
    timeout 120 python bench/bench_generate.py --models 270m,1b --batches 1 --contexts 32768 --no-hf --layouts original,converted --out $OUT/e2e_b1_rep$r.json > $OUT/e2e_b1_rep$r.log 2>&1
    eval "$E2E \$OUT/e2e_b1_rep$r.log" | sed 's/"runner.*layout"//; s/, "ranks.*tok_s"//'
  done
  ;;
