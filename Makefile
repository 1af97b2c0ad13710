# The two commands of the README:  `make run` (the whole system on the built-in simulator,
# every Procfile role under supervisord: a crashed role is restarted, Redis stops last)
# and `make test`. Both are idempotent: they create .venv when missing, and .env (or the
# role passwords missing from it) with `charles init`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
COLLECTORS ?= 2
# `make run CONFIG=configs/x.toml` runs that config; so does `CHARLES_CONFIG=configs/x.toml make run`
# (the shell's value wins over .env's, which wins over configs/default.toml)
CONFIG ?=
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test lint bench clean-data

setup: $(STAMP)
	@$(BIN)/charles init >/dev/null

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: setup
	@command -v redis-server >/dev/null 2>&1 || { $(BIN)/python -c "from workers.redis_server import INSTALL_HINT; print(INSTALL_HINT)"; exit 1; }
	$(if $(CONFIG),CHARLES_CONFIG=$(CONFIG) )$(BIN)/charles supervise -c collector=$(COLLECTORS)

test: setup
	scripts/install-test-deps.sh
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check pipeline workers tests

bench: setup
	$(BIN)/charles bench all

clean-data:
	rm -rf var/redis runs checkpoints
