# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench install clean

# Re-installs only when pyproject.toml changed (or the venv is new): fast when already set up.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/llmlb demo

lint: $(STAMP)
	$(BIN)/ruff check llmlb_actors tests benchmarks examples
	$(BIN)/ruff format --check llmlb_actors tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy llmlb_actors

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# Benchmarks need the `bench` extra (aiohttp, litellm, matplotlib); installed on first use.
$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
