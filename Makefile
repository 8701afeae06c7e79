# poyo-relay: `make run` serves on SQLite in sandbox mode; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: install run test lint format fuzz bench bench-smoke chaos clean

# A Python without its venv module (Debian and Ubuntu ship it apart) fails here with the fix.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make: $(PYTHON) must be Python 3.11+ with its venv module; on Debian/Ubuntu:" >&2; \
	  echo "      sudo apt-get install python3-venv   (or PYTHON=python3.12 make ...)" >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## migrate the database and serve the API with its worker (sandbox mode without POYO_API_KEY)
	$(BIN)/poyo-relay migrate
	$(BIN)/poyo-relay serve --host $(HOST) --port $(PORT)

test: $(STAMP)  ## the whole suite, on SQLite and on PostgreSQL
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff, ruff format, mypy --strict (app, bench, tests), import layers
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

fuzz: $(STAMP)  ## schemathesis against a live server's OpenAPI document
	$(BIN)/python -m bench.fuzz

bench: $(STAMP)  ## every benchmark at full size
	$(BIN)/python -m bench.run --size full

bench-smoke: $(STAMP)  ## every benchmark at a tiny size, to prove they still work
	$(BIN)/python -m bench.run --size smoke

chaos: $(STAMP)  ## the chaos run: kills, provider faults, lost and duplicated callbacks
	$(BIN)/python -m bench.chaos

clean:
	rm -rf $(VENV) poyo_relay.db poyo_relay.db-shm poyo_relay.db-wal .pytest_cache .mypy_cache .ruff_cache
