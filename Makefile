# Every target CI or the README names. A fresh machine needs only python3 (3.11+) and two Debian
# packages, which `make test` installs when they are missing: `prometheus` (observability tests) and
# `pgbouncer` (the suite's second run, through a real PgBouncer in transaction pooling mode).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test test-pgbouncer lint openapi docs bench tools clean

$(BIN)/session-broker: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

## Start the service on the embedded PostgreSQL (data in ./.session-broker-data) at 127.0.0.1:8080.
run: $(BIN)/session-broker
	$(BIN)/session-broker serve

## Install test needs and run every test (unit, API, contract fuzzing, chart, dashboard on a real Prometheus,
## failover on a real primary + standby), then the API and lifecycle modules again through PgBouncer.
test: $(BIN)/session-broker tools lint
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-pgbouncer

## The API and lifecycle modules with the service behind a real PgBouncer (transaction pooling).
test-pgbouncer: $(BIN)/session-broker tools
	$(BIN)/python -m pytest --pgbouncer

## promtool and prometheus (alert-rule and dashboard tests), pgbouncer (the PgBouncer run): Debian.
tools:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	{ command -v pgbouncer || test -x /usr/sbin/pgbouncer; } >/dev/null 2>&1 || missing="$$missing pgbouncer"; \
	if [ -n "$$missing" ]; then \
		(apt-get update -qq || sudo apt-get update -qq) && \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || \
		 sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null); \
	fi

lint: $(BIN)/session-broker
	$(BIN)/ruff check app tests migrations bench observability scripts
	$(BIN)/ruff format --check app tests migrations bench observability scripts
	$(BIN)/mypy

## Regenerate openapi.yaml from the app (a test fails when it is stale).
openapi: $(BIN)/session-broker
	$(BIN)/session-broker openapi --output openapi.yaml

## Regenerate the README's configuration table from app/config.py (a test fails when it is stale).
docs: $(BIN)/session-broker
	$(BIN)/python -m scripts.settings_table --write

## Side-by-side benchmark against reference implementations (see bench/README.md); under 10 minutes.
bench: $(BIN)/session-broker
	$(BIN)/pip install -q -e '.[test,bench]'
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	@command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .session-broker-data .pytest_cache .ruff_cache .mypy_cache
