# Two commands do all set-up: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv, install the CPU build of torch first (never a multi-GB CUDA build), then
# this package with its extras; a stamp file skips the install when nothing changed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.gatekeeper-installed
TORCH  ?= torch==2.13.0

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gatekeeper demo

test: $(STAMP)
	$(BIN)/ruff check gatekeeper tests eval
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check gatekeeper tests eval
	$(BIN)/ruff format --check gatekeeper tests eval
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .gatekeeper reports .pytest_cache .mypy_cache .ruff_cache
