# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp

.PHONY: install demo test test-all reliability lint format bench bench-full bench-tools clean

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

# Postfix's smtp-sink and wrk from Debian's packages when missing (postfix's mail service
# is not started: only its smtp-sink tool is used). Without them the benchmark falls back
# to an aiosmtpd sink and skips the web rows, and says so in its report.
bench-tools:
	@if ! command -v wrk >/dev/null || [ ! -x /usr/sbin/smtp-sink ]; then \
	  echo "Installing Debian's postfix (for smtp-sink) and wrk"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
	    apt-get install -y -qq --no-install-recommends postfix wrk >/dev/null) \
	  || echo "Could not install postfix and wrk; the benchmark falls back without them."; \
	fi

bench: $(STAMP) $(BENCH_STAMP) bench-tools
	$(BIN)/python -m benchmarks.run

bench-full: $(STAMP) $(BENCH_STAMP) bench-tools
	$(BIN)/python -m benchmarks.run --full

# The last line checks that every test's fixtures resolve (a renamed fixture otherwise
# surfaces only when the reliability suite reaches it, minutes into CI); nothing runs.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest --setup-plan -q -r fE > $(VENV)/setup-plan.log || { grep -E '^(E |ERROR)' $(VENV)/setup-plan.log; exit 1; }

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
