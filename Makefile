# One-command entry points. `make demo` runs the main job, `make test` the whole test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: setup test demo lint clean

setup: $(INSTALLED)
	@scripts/setup-host.sh
	@$(BIN)/llamas llm fetch

$(INSTALLED): pyproject.toml scripts/setup-host.sh
	scripts/setup-host.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,llm]'
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# The worked example (examples/numa-check) runs as another project would: its own pytest, the plugin alone.
test: lint
	$(BIN)/pytest
	cd examples/numa-check && ../../$(BIN)/pytest

demo: setup
	$(BIN)/llamas demo

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
