# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: install demo test test-all reliability lint format bench bench-full clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/gazette demo

# The whole suite but the fault and hostile-input scenarios (make reliability).
test: $(STAMP)
	$(BIN)/pytest -m "not reliability"

# Everything, as CI runs it.
test-all: $(STAMP)
	$(BIN)/pytest

# The fault and hostile-input suite, with its figures written to docs/reliability.md.
reliability: $(STAMP)
	rm -f artifacts/reliability.jsonl
	GAZETTE_FIGURES=artifacts/reliability.jsonl $(BIN)/pytest -m reliability; \
	  status=$$?; \
	  $(BIN)/python -m scripts.reliability_report artifacts/reliability.jsonl docs/reliability.md \
	    "pytest -m reliability exited with status $$status"; \
	  exit $$status

# The bench extra (psutil, matplotlib, py-spy) on top of the dev install, once.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run

bench-full: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run --full

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
