#!/bin/bash
# session-22 device script: `bash bench/results/2026-12-06-s22/devrun.sh STEP...` from the
# repository root on the device tool. Weights travel as chunks in .stage/ (git-ignored), one
# per call, into /tmp/st on the warm machine; `setup` joins them, checks the sha256 recorded
# below and installs the wheels the device lacks (gguf, tensorly). Every step writes its
# results under $OUT as it goes, so a step cut by the call's limit keeps what it measured.
set -u
export PYTHONUNBUFFERED=1
G=/tmp/gemma-3-270m-q4_k_m.gguf S=/tmp/SmolLM2-135M-Instruct.Q4_1.gguf Q=/tmp/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
tc() { python -c 'import sys; from tpa_compress.cli import main; sys.argv[0] = "tpa-compress"; main()' "$@"; }
export PYTHONPATH=$PWD:/tmp/pylib
R=bench/recipes
for step in "$@"; do
s=$SECONDS
case "$step" in
chunk) mkdir -p /tmp/st && cp .stage/[gsq]0* /tmp/st/ && ls /tmp/st ;;
setup)  # Gemma (chunks g*) and the wheels the device lacks
  mkdir -p /tmp/st && cp .stage/[gsq]0* /tmp/st/ 2>/dev/null
  python -m pip install -q --no-deps --no-index --target /tmp/pylib .stage/wh/*.whl 2>&1 | grep -v WARNING | tail -2
  cat /tmp/st/g0* > $G
  echo "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818  $G" | sha256sum -c -
  nvidia-smi --query-gpu=name --format=csv,noheader ;;
ssetup)  # SmolLM2 (chunks s*)
  mkdir -p /tmp/st && cp .stage/[gsq]0* /tmp/st/ 2>/dev/null; cat /tmp/st/s0* > $S
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $S" | sha256sum -c - ;;
fq)  # Gemma 3 270M: grouped-cache parameters on the original and on fat (one-shot 4x goal)
  python bench/frontier.py --model $G --name "Gemma 3 270M" --device cuda --recipes recipes/fat.yaml \
    --caches "bf16,int3,int3:sink=1,int3:group=64,int3:group=64,sink=1,int3:group=128,sink=1,int3:recent=32,sink=1,int4:sink=1,int4:group=128,sink=1" \
    --recipe-caches "int3,int3:group=64,int3:group=128,int3:group=64,recent=32,int3:recent=64" \
    --out $OUT/fq-gemma.json > $OUT/fq.log 2>&1
  tail -2 $OUT/fq.log ;;
fh)  # Gemma 3 270M healed through the cache vs on exact reads (8x goal)
  python bench/frontier.py --model $G --name "Gemma 3 270M" --device cuda --skip-original --save-dir /tmp/fold \
    --recipes $R/bh-int3g64r32.yaml,$R/bh-int3g64r32-exact.yaml --out $OUT/fh-gemma.json > $OUT/fh.log 2>&1
  grep -h "variant\|heal:" $OUT/fh.log | cut -c1-200 ;;
fh6)  # healed longer (600 steps, lr 1e-4, <= 300 s)
  python bench/frontier.py --model $G --name "Gemma 3 270M" --device cuda --skip-original --save-dir /tmp/fold \
    --recipes $R/bh-int3g64r32-600.yaml --out $OUT/fh6-gemma.json > $OUT/fh6.log 2>&1
  grep -h "variant\|heal:" $OUT/fh6.log | cut -c1-200 ;;
fs)  # SmolLM2-135M (every layer global): grouped-cache parameters on the original (4x goal)
  python bench/frontier.py --model $S --name "SmolLM2-135M-Instruct" --device cuda --recipes "" \
    --caches "bf16,int3,int3:sink=1,int3:group=64,int3:group=64,sink=1,int3:group=128,sink=1,int3:recent=32,sink=1,int4:group=128,sink=1" \
    --out $OUT/fs-smollm2.json > $OUT/fs.log 2>&1
  tail -2 $OUT/fs.log ;;
lc)  # long context: the original (bf16, int3, the 4x one-shot cache) and the healed 8x candidate
  python bench/long_context.py --model $G --cache "bf16,int3,int3:group=64,sink=1" --seq-lens 4096,8192 --windows 4 \
    --contexts 4096,16384,32768 --depths 0.1,0.5,0.9 --keys 2 --out $OUT/lc-orig.json > $OUT/lc.log 2>&1
  python bench/long_context.py --model /tmp/fold/bh-int3g64r32 --cache "int3:group=64,recent=32" --seq-lens 4096,8192 \
    --windows 4 --contexts 4096,16384,32768 --depths 0.1,0.5,0.9 --keys 2 --out $OUT/lc-bh.json >> $OUT/lc.log 2>&1
  grep -h '^{' $OUT/lc.log | cut -c1-400 ;;
qsetup)
  mkdir -p /tmp/st && cp .stage/[gsq]0* /tmp/st/ 2>/dev/null; cat /tmp/st/q0* > $Q; echo "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32  $Q" | sha256sum -c - ;;
qf)  # Qwen2.5-Coder 0.5B (24 global layers, 2 KV heads): the frontier
  python bench/frontier.py --model $Q --name "Qwen2.5-Coder-0.5B-Instruct" --device cuda \
    --recipes recipes/fat.yaml,recipes/balanced.yaml,bench/recipes/balanced-heal150.yaml \
    --caches "bf16,int8,fp8,int4,int3,int3:group=64,sink=1" --recipe-caches "bf16,int4,int3" \
    --out $OUT/qf-qwen.json > $OUT/qf.log 2>&1
  grep -h '^{' $OUT/qf.log | cut -c1-200 ;;
qh)  # Qwen2 head mode: per-head latents vs shared-factor Tucker vs TPA head factors, equal bytes
  python bench/qwen2/head_mode.py --model $Q --device cuda --windows 130 --calib-tokens 32768 \
    --json $OUT/head-mode.json > $OUT/qh.log 2>&1; grep -h '^{\|original' $OUT/qh.log | cut -c1-250 ;;
qcli)  # Qwen2 through the CLI on the GPU: convert, validate, generate (head_dim 64 kernels)
  tc convert $Q --recipe recipes/balanced.yaml --out /tmp/qbal --device cuda --force > $OUT/q-convert.txt 2>&1; tail -3 $OUT/q-convert.txt
  tc validate /tmp/qbal --device cuda > $OUT/q-validate.txt 2>&1; tail -6 $OUT/q-validate.txt
  tc generate /tmp/qbal --device cuda --max-new-tokens 64 --prompt "def fibonacci(n):" > $OUT/q-generate.txt 2>&1; tail -8 $OUT/q-generate.txt
  tc generate $Q --device cuda --max-new-tokens 64 --prompt "def fibonacci(n):" > $OUT/q-generate-orig.txt 2>&1; tail -8 $OUT/q-generate-orig.txt ;;
esac
echo "step $step: $((SECONDS-s)) s"
done
