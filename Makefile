# Tahoe Auth — developer commands. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint format proto proto-check lock bench clean

help: ## list the commands
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv with the locked dependencies

run: $(STAMP) ## run everything locally on embedded defaults (SQLite, in-process store)
	$(BIN)/python scripts/run_local.py

test: $(STAMP) ## run the whole test suite (PostgreSQL/Redis from TAHOE_TEST_DATABASE_URL/TAHOE_TEST_REDIS_URL)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## unit tests only (no PostgreSQL, Redis or Envoy needed)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

node_modules/.bin/buf: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	@touch $@

lint: $(STAMP) node_modules/.bin/buf ## ruff, mypy, import contracts, buf lint, buf breaking, stale stubs and Envoy HTTP config
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy tahoe_auth
	$(BIN)/lint-imports
	cd protos && ../node_modules/.bin/buf lint
	$(BIN)/python scripts/buf_breaking.py
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/python scripts/envoy_configs.py --check

format: $(STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: $(STAMP) ## regenerate tahoe_auth/v1, envoy/tahoe_auth.pb and envoy/openapi.json from protos/
	$(BIN)/python scripts/gen_protos.py

proto-check: $(STAMP) ## fail if the committed stubs or descriptor set are stale
	$(BIN)/python scripts/gen_protos.py --check

lock: $(STAMP) ## re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 --quiet -o requirements.lock

bench: $(STAMP) ## run the benchmarks (see bench/README.md)
	$(BIN)/python bench/run_all.py

clean: ## remove the virtualenv, local data and caches
	rm -rf $(VENV) var node_modules .pytest_cache .mypy_cache .ruff_cache
