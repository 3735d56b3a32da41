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
t3)   # the generate command's tests on the CUDA-graph path; keep this call's chunk of the GGUF in /tmp/chunks
  mkdir -p /tmp/chunks && cp devcarry/c* /tmp/chunks/ 2>/dev/null
  s=$SECONDS; env $T timeout 300 python -m pytest tests/test_generate_cli.py -q -p no:cacheprovider 2>&1 | tail -15 > $OUT/tests_t3.txt; echo "tests in $((SECONDS-s)) s"; tail -3 $OUT/tests_t3.txt
  ;;
chunk) mkdir -p /tmp/chunks && cp devcarry/c* /tmp/chunks/ && ls /tmp/chunks ;;
probe) # what the device's python has; which carried parts are there
  python -c "import importlib.util as u; print({m: bool(u.find_spec(m)) for m in ['typer','rich','gguf','tensorly','scipy','tokenizers','safetensors','yaml','transformers']})"
  ls -la devcarry 2>&1 | head
  ;;
e2e)  # the real Gemma 3 270M on the GPU: convert balanced, generate (original, converted, a batch of prompts), validate
  python -m pip install -q --no-deps --no-index --target /tmp/pylib devcarry/wh/*.whl 2>&1 | grep -v WARNING | tail -2
  cat /tmp/chunks/c0 /tmp/chunks/c1 /tmp/chunks/c2 /tmp/chunks/c3 devcarry/c4 > /tmp/gemma-3-270m-q4_k_m.gguf; sha256sum /tmp/gemma-3-270m-q4_k_m.gguf
  export PYTHONPATH=$PWD:/tmp/pylib
  tc() { python -c 'import sys; from tpa_compress.cli import main; sys.argv[0] = "tpa-compress"; main()' "$@"; }
  M=/tmp/gemma-3-270m-q4_k_m.gguf
  s=$SECONDS; tc convert $M --recipe recipes/balanced.yaml --out /tmp/bal --device cuda --eval > $OUT/convert.txt 2>&1; echo "convert rc $? in $((SECONDS-s)) s"; tail -25 $OUT/convert.txt
  printf 'The Python standard library\nIn Python, a list comprehension is a concise way to\ndef fib(n):\n' > /tmp/prompts.txt
  for m in $M /tmp/bal; do
    s=$SECONDS; tc generate $m --prompt "The Python programming language is" --device cuda --max-new-tokens 128 >> $OUT/generate.txt 2>&1; echo "generate $m rc $? in $((SECONDS-s)) s"
    s=$SECONDS; tc generate $m --prompt-file /tmp/prompts.txt --device cuda --max-new-tokens 64 >> $OUT/generate.txt 2>&1; echo "generate batch $m rc $? in $((SECONDS-s)) s"
  done
  tail -60 $OUT/generate.txt
  s=$SECONDS; tc validate /tmp/bal --device cuda --max-kl 0.05 --min-top1 0.9 > $OUT/validate.txt 2>&1; echo "validate rc $? in $((SECONDS-s)) s"; tail -40 $OUT/validate.txt
  ;;
esac
