#!/usr/bin/env bash
# Regenerate the analyze examples: docs/examples/gemma3-270m/ and docs/examples/smollm2-135m/
# (report.md, report.json, plots), with the default settings (bundled calibration split,
# 32K tokens, contexts 4096 and 32768, batch 1). About 3 + 2 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
if "$BIN/tpa-compress" analyze --help >/dev/null 2>&1; then
  RUN=("$BIN/tpa-compress" analyze)
else  # before the command is registered in tpa_compress/cli.py
  RUN=("$BIN/python" -m tpa_compress.analyze.cli)
fi
for model in gemma3-270m smollm2-135m; do
  out="docs/examples/$model"
  rm -f "$out"/*.png "$out"/report.md "$out"/report.json
  "${RUN[@]}" "$model" --out "$out"
done
