# Every target installs what it needs first, so on a fresh clone each is one command.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
AZURITE := $(VENV)/node/node_modules/.bin/azurite-blob
AZURITE_VERSION := 3.37.0

.DEFAULT_GOAL := help
.PHONY: help install run test test-stores test-fast bench lint format clean chromium azurite

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its dev extras

run: $(STAMP) ## run the demo job against the built-in emulator (no key needed)
	$(BIN)/pipeline run jobs/demo.yaml --emulator

# Playwright drives the system Chromium (it cannot download its own browser here).
chromium: ## install Chromium with apt for the browser tests, when /usr/bin/chromium is missing
	@test -x /usr/bin/chromium || (apt-get update && apt-get install -y chromium)

# Azurite, Azure Blob's local server for the store tests, comes from npm into .venv/node (the
# tests look for it there; `make clean` removes it with the rest).
azurite: ## install Azurite with npm for the Azure store tests, when .venv/node lacks it
	@test -x $(AZURITE) || npm install --prefix $(VENV)/node --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

# -n auto: one worker a CPU (pytest-xdist); tests sharing a Ray instance or a browser keep to one.
PARALLEL = -n auto --dist loadgroup
# pytest keeps the test modules it rewrote for its assertion messages as bytecode; a shell that
# sets PYTHONDONTWRITEBYTECODE would make every worker of every run rewrite all of them again
# (about 7 s a worker on two cores).
PYTEST = env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest

test: $(STAMP) chromium ## run the test suite (unit, end-to-end, reliability, browser)
	$(PYTEST) -q -m "not stores" $(PARALLEL)

# Apart from `make test` to keep each under five minutes on two cores; CI runs both.
test-stores: $(STAMP) azurite ## every object store against its local server (S3, GCS, Azure)
	$(PYTEST) -q -m stores $(PARALLEL)

test-fast: $(STAMP) ## the suite without slow (processes, kills, signals) and browser tests
	$(PYTEST) -q -m "not slow and not browser and not stores" $(PARALLEL)

bench: $(STAMP) ## run the benchmarks, write bench/results/latest.{json,md}
	$(BIN)/python -m bench

lint: $(STAMP) ## ruff check, format check and the type checker (mypy)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## remove the virtual environment, caches and demo outputs
	rm -rf $(VENV) out .pytest_cache .ruff_cache
