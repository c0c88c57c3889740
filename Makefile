# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench install clean redis-server

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

# The shared-state tests (tests/shared) run a real redis-server (Debian's package; TLS
# built in). Installed here when missing, with apt-get (root, or sudo when there is one).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		echo "redis-server not found: installing Debian's redis-server package"; \
		$$SUDO apt-get install -y --no-install-recommends redis-server >/dev/null 2>&1 || { \
			$$SUDO apt-get update >/dev/null && \
			$$SUDO apt-get install -y --no-install-recommends redis-server >/dev/null; }; \
	}
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is required (apt-get install redis-server)"; exit 1; }

pytest: $(STAMP) redis-server
	$(BIN)/pytest

test: lint typecheck pytest

# Benchmarks need the `bench` extra (aiohttp, litellm, matplotlib); installed on first use.
$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

bench: $(VENV)/.bench-installed redis-server
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
