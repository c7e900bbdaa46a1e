# Developer entry points. `make test` is what CI runs (see .ci/run).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# pip warns once per missing local index directory; the warnings are noise, not problems.
PIP_NOISE := is ignored: it is neither a file nor a directory

.PHONY: venv test lint demo bench clean

venv: $(VENV)/.installed

# Reinstall whenever the dependencies in pyproject.toml change.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]' 2>&1 | { grep -v '$(PIP_NOISE)' || true; }
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy journal restore backup rewind

test: venv
	$(BIN)/ruff check .
	$(BIN)/mypy journal restore backup rewind
	$(BIN)/pytest -q

demo: venv
	$(BIN)/python -m rewind.demo

bench: venv
	$(BIN)/python bench/capture_overhead.py --reference
	$(BIN)/python bench/capture_parts.py
	$(BIN)/python bench/capture_instructions.py
	$(BIN)/python bench/capture_overhead.py --mode stream
	$(BIN)/python bench/bulk_overhead.py
	$(BIN)/python bench/undo_throughput.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/snapshot.py
	$(BIN)/python bench/slot_lag.py

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
