# Every target creates and uses .venv itself: `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The client library is tested from a venv of its own, installed from ./client as a user
# would (not editable): what it needs beyond httpx and pyjwt shows up as a failure there.
CLIENT_VENV := .venv-client
CLIENT_STAMP := $(CLIENT_VENV)/.installed-stamp
CLIENT_SOURCES := $(shell find client/src -name '*.py' -o -name 'py.typed')

HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench venv client-venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e './client[test]'
	touch $(STAMP)

client-venv: $(CLIENT_STAMP)

$(CLIENT_STAMP): client/pyproject.toml $(CLIENT_SOURCES)
	test -x $(CLIENT_VENV)/bin/python || $(PYTHON) -m venv $(CLIENT_VENV)
	$(CLIENT_VENV)/bin/pip install --quiet --upgrade pip
	$(CLIENT_VENV)/bin/pip install --quiet --force-reinstall --no-deps ./client
	$(CLIENT_VENV)/bin/pip install --quiet './client[test]'
	rm -rf client/build  # setuptools' copy of the sources: not ours to keep
	touch $(CLIENT_STAMP)

run: venv
	$(BIN)/auth-service migrate
	$(BIN)/auth-service serve --host $(HOST) --port $(PORT)

test: venv client-venv
	scripts/test.sh

lint: venv
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy src
	cd client && ../$(BIN)/ruff check src tests && ../$(BIN)/ruff format --check src tests && ../$(BIN)/mypy src
	$(BIN)/auth-service-client ssot-check examples

bench: venv
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	scripts/bench.sh

clean:
	rm -rf $(VENV) $(CLIENT_VENV) .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache var
