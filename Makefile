# Two commands do all the setup: `make run` (the service) and `make test` (the suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint run bench gpu-check soak clean

# torch is pinned here, before the project, so that pip keeps that build: pyproject allows a range, and a bare
# `torch` requirement would otherwise pick the newest release (a multi-GB CUDA build on Linux).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[worker,dev]'
	touch $(STAMP)

# kserve's v2 REST client, for tests/integration/test_oip.py, in a venv of its own: kserve 0.21 pins pandas<3,
# protobuf<7 and psutil<6, below what the project's venv holds (pandas 3, protobuf 7).
KSERVE_STAMP := .venv-kserve/.installed
$(KSERVE_STAMP):
	test -x .venv-kserve/bin/python || $(PY) -m venv .venv-kserve
	.venv-kserve/bin/pip install -q 'kserve==0.21.0'
	touch $(KSERVE_STAMP)

install: $(STAMP) $(KSERVE_STAMP)

test: $(STAMP) $(KSERVE_STAMP)
	$(BIN)/python -m pytest -q

# ruff (check and format); mypy --strict (pyproject's [tool.mypy]: api store worker training mlqueue tests, and the
# conftest.py files of tests/integration and tests/reliability in runs of their own: three modules named conftest);
# import-linter (the layers of docs/architecture.md); no import circle (tests/unit/test_import_cycles.py).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy tests/integration/conftest.py
	$(BIN)/mypy tests/reliability/conftest.py
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_import_cycles.py

run: $(STAMP)
	$(BIN)/mlq dev

# The benchmark (docs/benchmarks.md): wrk is a Debian package; `make bench ARGS=--quick` for ~5 s runs.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench $(ARGS)

# The GPU check (bench/gpu_check.py; docs/benchmarks.md, G1): every visible GPU, one worker each, one table, exit
# status non-zero on any failure; `make gpu-check ARGS=--device=cpu` runs the same flow on the CPU. On a machine
# whose pip found a CPU build of torch (a local wheel), PyPI's Linux wheel of torch 2.13.0 (CUDA 13.0) replaces it.
gpu-check: $(STAMP)
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	$(BIN)/python -m bench.gpu_check --needs-cuda-torch || \
		$(BIN)/pip install -q --isolated --force-reinstall --index-url https://pypi.org/simple torch==2.13.0
	timeout 360 $(BIN)/python -m bench.gpu_check $(ARGS)

# The chaos soak (docs/operations.md, "The soak"): `make soak ARGS="--minutes 30"`; 10 minutes by default.
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
