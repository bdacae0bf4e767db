# memstress: the two commands a newcomer needs are `make run` and `make test`.
# Both install into .venv first; the install re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest browser redis gdb chroma chroma-ci bench soak service clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The quick stress run against the bundled reference service, ending in a report.
run: $(STAMP)
	$(BIN)/python run_stress_test.py --quick $(ARGS)

# Lint, type check and the test suite (real service and real Locust processes on loopback).
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The tests run on PYTEST_WORKERS processes (pytest-xdist). Most of their time is real
# runs waiting on their stage plans, so 4 workers keep 2 cores busy; a file's tests stay
# on one worker (they share its runs) and the longest start first: tests/conftest.py.
# PYTEST_WORKERS=0 runs them in this process, one after another.
PYTEST_WORKERS ?= 4

pytest: $(STAMP) browser redis gdb chroma-ci
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The live memory view is checked in headless Chromium (Debian's chromium). In CI
# (CI set) it is installed when missing (root and apt-get needed), and a failed
# install fails `make test` here; elsewhere those two tests skip, saying so,
# unless chromium is on PATH.
browser:
	@if [ -n "$$CI" ] && ! command -v chromium >/dev/null 2>&1; then \
	  if ! command -v apt-get >/dev/null 2>&1 || [ "$$(id -u)" != 0 ]; then \
	    echo "make browser: CI is set and chromium is missing; installing it needs root and apt-get" >&2; \
	    exit 1; \
	  fi; \
	  echo "installing chromium for the browser tests (CI)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
	  || { echo "make browser: apt-get could not install chromium; the browser tests need it in CI" >&2; exit 1; }; \
	fi

# The Redis tests (tests/test_own_load.py, tests/test_adapters.py) start Debian's redis-server on a loopback
# port. In CI (CI set) it is installed when missing, and make fails, saying why, when it
# cannot be; elsewhere those tests skip, saying so, unless redis-server is on PATH.
redis:
	@if [ -n "$$CI" ] && ! command -v redis-server >/dev/null 2>&1; then \
	  echo "installing redis-server for the Redis tests (CI)"; \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "redis-server is missing and cannot be installed here (needs root and apt-get)" >&2; \
	    exit 1; \
	  fi; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends redis-server >/dev/null) \
	  || { echo "redis-server could not be installed; the Redis tests need it" >&2; exit 1; }; \
	fi

# --profile-leaks attaches to the target with gdb (Debian's gdb). In CI (CI set, root,
# apt-get there) it is installed when missing, and make test stops here if it cannot be;
# elsewhere a missing gdb is named, and the profiling tests fail saying so.
gdb:
	@if ! command -v gdb >/dev/null 2>&1; then \
	  if [ -z "$$CI" ]; then \
	    echo "gdb is not installed (apt-get install gdb): the --profile-leaks tests will fail" >&2; \
	  elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing gdb for the --profile-leaks tests (CI)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends gdb >/dev/null) \
	    || { echo "gdb could not be installed; the --profile-leaks tests need it" >&2; exit 1; }; \
	  else \
	    echo "gdb is missing and cannot be installed here (needs root and apt-get)" >&2; exit 1; \
	  fi; \
	fi

# The Chroma test (tests/test_chroma.py) starts `chroma run` from PyPI chromadb, kept in
# an environment of its own (.venv-chroma: its server and its many dependencies stay out
# of the suite's). Made in CI (CI set) when missing, and make fails, saying why, when it
# cannot be; elsewhere `make chroma` makes it, and the test skips, saying so, without it.
CHROMA_STAMP := .venv-chroma/.installed

chroma: $(CHROMA_STAMP)

chroma-ci:
	@if [ -n "$$CI" ] && [ ! -e $(CHROMA_STAMP) ]; then $(MAKE) --no-print-directory chroma; fi

$(CHROMA_STAMP):
	@echo "making .venv-chroma (PyPI chromadb, for the Chroma test)"
	test -x .venv-chroma/bin/python || $(PYTHON) -m venv .venv-chroma
	.venv-chroma/bin/python -m pip install --quiet 'chromadb>=1.0,<2' \
	  || { echo "chromadb could not be installed; the Chroma test needs it" >&2; exit 1; }
	touch $(CHROMA_STAMP)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# Soak (not in CI): endurance at full length (10 min), then all ten scenarios at
# full length (--comprehensive: 41 min of load, about 42 min with start-up and reports).
soak: $(STAMP)
	$(BIN)/python run_stress_test.py --scenario endurance $(ARGS)
	$(BIN)/python run_stress_test.py --comprehensive $(ARGS)

# The reference service in the foreground (faults enabled), for trying things by hand.
service: $(STAMP)
	$(BIN)/python -m memstress.service --enable-faults --data-dir results/service-data $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
