#!/bin/bash
# session-21 device script: `bash bench/results/2026-12-06-s21/devrun.sh STEP` from the repository
# root on the device tool. Weights travel as chunks in .stage/ (git-ignored), one per call, into
# /tmp/st on the warm machine; `assemble` joins them and checks the sha256 recorded here.
set -u
D=bench/results/2026-12-06-s21
case "$1" in
chunk) mkdir -p /tmp/st && cp .stage/[gs]0* /tmp/st/ && ls -la /tmp/st ;;
setup) # wheels the device lacks (gguf, tensorly) + the two GGUF files
  mkdir -p /tmp/st && cp .stage/[gs]0* /tmp/st/ 2>/dev/null
  python -m pip install -q --no-deps --no-index --target /tmp/pylib .stage/wh/*.whl 2>&1 | grep -v WARNING | tail -2
  cat /tmp/st/g0* > /tmp/gemma-3-270m-q4_k_m.gguf; cat /tmp/st/s0* > /tmp/smollm2.gguf
  sha256sum /tmp/gemma-3-270m-q4_k_m.gguf /tmp/smollm2.gguf
  ;;
esac
