# Two commands do all the setup: `make run` (the service) and `make test` (the suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint run bench soak clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 is a CPU build that lies on this machine's disk; pyproject allows a range.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[worker,dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# ruff (check and format); mypy --strict (pyproject's [tool.mypy]: api store worker training mlqueue tests, and the
# conftest.py files of tests/integration and tests/reliability in runs of their own: three modules named conftest);
# import-linter (the layers of docs/architecture.md).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy tests/integration/conftest.py
	$(BIN)/mypy tests/reliability/conftest.py
	$(BIN)/lint-imports

run: $(STAMP)
	$(BIN)/mlq dev

# The benchmark (docs/benchmarks.md): wrk is a Debian package; `make bench ARGS=--quick` for ~5 s runs.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python -m bench $(ARGS)

# The chaos soak (docs/operations.md, "The soak"): `make soak ARGS="--minutes 30"`; 10 minutes by default.
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
