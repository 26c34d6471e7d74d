# Two commands do all set-up: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv, install torch first, then this package with its extras; a stamp file skips
# the install when nothing changed. torch comes from pip's own sources (this development machine
# has the CPU wheel in its find-links); elsewhere, pass TORCH_INDEX_URL (e.g.
# `make test TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu`) so pip takes the CPU build
# from that index, not PyPI's multi-GB CUDA-linked one.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.gatekeeper-installed
TORCH  ?= torch==2.13.0
TORCH_INDEX_URL ?=

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH)"
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
