#!/bin/bash
# session-20 device script, run as `bash devrun.sh cN` from the repository root on the device tool
set -u
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
git log --oneline -1 2>/dev/null
T="TPA_TEST_DEVICE=cuda"
case "$1" in
t1)   # the GPU tests of the CUDA decode path and the exact sinks
  s=$SECONDS; env $T timeout 570 python -m pytest tests/test_cuda_decode.py tests/test_runtime_sink.py -q -p no:cacheprovider 2>&1 | tail -15 > $OUT/tests_t1.txt; echo "tests in $((SECONDS-s)) s"; tail -4 $OUT/tests_t1.txt
  ;;
t2)   # tests/test_runtime_kernels.py whole
  s=$SECONDS; env $T timeout 570 python -m pytest tests/test_runtime_kernels.py -q -p no:cacheprovider --durations=5 2>&1 | tail -20 > $OUT/tests_t2.txt; echo "tests in $((SECONDS-s)) s"; tail -10 $OUT/tests_t2.txt
  ;;
esac
