# Every target CI or the README names. A fresh machine needs only python3 (3.11+) and two Debian
# packages, which `make test` installs when they are missing: `prometheus` (observability tests) and
# `pgbouncer` (the suite's second run, through a real PgBouncer in transaction pooling mode).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test test-pgbouncer test-typescript node lint openapi docs bench bench-docs bench-gateway fleet tools clean

$(BIN)/session-broker: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/pip install -q -e 'clients/python[mcp,fastmcp]'
	@touch $@

## Start the service on the embedded PostgreSQL (data in ./.session-broker-data) at 127.0.0.1:8080.
run: $(BIN)/session-broker
	$(BIN)/session-broker serve

## Install test needs and run every test (unit, API, contract fuzzing, chart, dashboard on a real Prometheus,
## failover on a real primary + standby, the gateway kits), printing the coverage of app/ (the floor is in
## pyproject.toml), then the API and lifecycle modules again through PgBouncer.
test: $(BIN)/session-broker tools lint test-typescript
	$(BIN)/python -m pytest --cov --cov-report=term
	$(MAKE) --no-print-directory test-pgbouncer

TS_KIT := clients/typescript

## The TypeScript gateway kit (clients/typescript): npm ci, build, strict typecheck, then its tests, which
## start this repository's broker ($(BIN)/session-broker) on temporary data dirs and stop it again.
test-typescript: $(BIN)/session-broker node
	cd $(TS_KIT) && npm ci --no-audit --no-fund --loglevel=error
	cd $(TS_KIT) && npm run --silent build
	cd $(TS_KIT) && npm run --silent typecheck
	cd $(TS_KIT) && BROKER_BIN=$(abspath $(BIN))/session-broker npm test --silent

## Node.js >= 20 and npm: the machine's, else Debian's packages (as `tools` installs prometheus).
node:
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null && command -v npm >/dev/null 2>&1 || { \
		(apt-get update -qq || sudo apt-get update -qq) && \
		(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null || \
		 sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null); }
	@node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' || { \
		echo "clients/typescript needs Node.js >= 20; this machine has $$(node --version)" >&2; exit 1; }

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
	$(BIN)/ruff check app tests migrations bench observability scripts clients/python/src examples
	$(BIN)/ruff format --check app tests migrations bench observability scripts clients/python/src examples
	$(BIN)/mypy

## Regenerate openapi.yaml from the app (a test fails when it is stale).
openapi: $(BIN)/session-broker
	$(BIN)/session-broker openapi --output openapi.yaml

## Regenerate the README's configuration table from app/config.py (a test fails when it is stale).
docs: $(BIN)/session-broker
	$(BIN)/python -m scripts.settings_table --write

## Side-by-side benchmark against reference implementations (see bench/README.md); under 10 minutes.
bench: $(BIN)/session-broker
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	@command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	$(BIN)/python -m bench

## A two-replica MCP fleet (SDK and FastMCP) on the broker behind round-robin proxies; Ctrl-C stops it.
fleet: $(BIN)/session-broker
	$(BIN)/python -m examples.fleet

## The gateway kit's benchmark: tools/call through the brokered fleet vs one stock stateful replica.
bench-gateway: $(BIN)/session-broker
	@command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
	$(BIN)/python -m bench.gateway

## Regenerate the README's Performance table and bench/README.md's target list from bench/targets.py
## (a test fails when they are stale). RESULT=latest quotes the newest full run, RESULT=<path> that file.
bench-docs: $(BIN)/session-broker
	$(BIN)/python -m bench.readme --write $(if $(RESULT),--result $(RESULT))

clean:
	rm -rf $(VENV) .session-broker-data .pytest_cache .ruff_cache .mypy_cache $(TS_KIT)/node_modules $(TS_KIT)/dist
