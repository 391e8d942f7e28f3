# kafka-etl: the two set-up commands are `make demo` and `make test`; everything they need they
# install themselves (Python venv, Debian packages, Kafka's jars from Maven Central).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The slowest tests are listed at the end of each run: the suite is to stay under ~25 minutes.
PYTEST_ARGS ?= --durations=30
# Two pytest processes (pytest-xdist), each given whole files (`loadfile`: a module's shared
# services start once, and its tests keep their order). Most of a test's time is a CLI
# subprocess starting, a broker or database answering, or a daemon's tick: two workers overlap
# those waits even on 2 cores. Every test makes its own topics, databases and files; a worker
# with no KAFKA_BOOTSTRAP_SERVERS starts its own broker. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2

.PHONY: demo test test-lowest install system-deps services kafka connect ui lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: database servers (scripts/local-db installs them too),
# Chromium for the UI test and redis-server (the Celery executor's broker in the Dagster tests,
# started by the tests on loopback). Java 17 and Maven are on the machine image.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
	fi

services: system-deps
	scripts/local-db start

kafka:
	@scripts/local-kafka start

# Kafka Connect's worker jars and Debezium's connector plugin from Maven Central (one-time); the
# CDC test (tests/integration/test_cdc_debezium.py) starts its worker with scripts/local-connect.
connect: system-deps
	@scripts/local-connect resolve

demo: install
	@bootstrap=$$(scripts/local-kafka start | tail -n 1) && \
	  KAFKA_BOOTSTRAP_SERVERS=$$bootstrap $(BIN)/python examples/demo.py

test: install services connect
	@# pytest exits 5 when it collected no test: that is a failure here, like any non-zero exit.
	@$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# The lowest versions pyproject.toml allows (uv --resolution lowest-direct: each direct
# dependency at its floor) run the unit tests, a JSON -> DuckDB load through the CLI and the
# quick sink tests on DuckDB, PostgreSQL, MariaDB and SQLite; a core-only `pip install .` (no
# extras) must do the same CLI load and import no Dagster.
# uv comes from PyPI into its own venv. About four minutes (the tests ~3 of them); the tests
# are bounded by TEST_LOWEST_TIMEOUT seconds, so CI's 90 minutes keep room after `make test`.
UV := .local/venv-uv/bin/uv
LOWEST := .local/venv-lowest
CORE := .local/venv-core
TEST_LOWEST_TIMEOUT ?= 480

test-lowest: export UV_PYTHON_DOWNLOADS = never
test-lowest: services
	@test -x $(UV) || { $(PYTHON) -m venv .local/venv-uv && \
	  .local/venv-uv/bin/python -m pip install -q uv; }
	rm -rf $(LOWEST) $(CORE)
	$(UV) venv -q -p $(PYTHON) $(LOWEST)
	@# --compile-bytecode, as pip does: without .pyc files (and with PYTHONDONTWRITEBYTECODE set)
	@# every CLI start would compile SQLAlchemy and the rest again, a second of CPU per process.
	timeout 600 $(UV) pip install -q -p $(LOWEST)/bin/python --resolution lowest-direct \
	  --compile-bytecode -e '.[postgres,mysql,protobuf]'
	timeout 300 $(UV) pip install -q -p $(LOWEST)/bin/python pytest pytest-timeout hypothesis
	@echo "lowest versions:"; $(UV) pip freeze -p $(LOWEST)/bin/python | tr '\n' ' '; echo
	$(UV) venv -q -p $(PYTHON) $(CORE)
	@# setuptools builds in the tree: a stale build/ could ship files the tree no longer has.
	rm -rf build
	timeout 600 $(UV) pip install -q -p $(CORE)/bin/python --compile-bytecode .
	KAFKA_ETL_INSTALLED_PYTHONS=$(CURDIR)/$(LOWEST)/bin/python:$(CURDIR)/$(CORE)/bin/python \
	  timeout $(TEST_LOWEST_TIMEOUT) $(LOWEST)/bin/python -m pytest -p no:cacheprovider \
	  -m 'not slow' tests/unit tests/install tests/integration/test_sinks.py

ui: install
	scripts/ui

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy kafka_etl connector sinks pipelines dagster_project

bench: install
	$(BIN)/python bench/bench_json.py

clean:
	-scripts/local-kafka stop
	-scripts/local-connect stop
	-scripts/local-db stop
	@# Servers relocated out of a private clone (see scripts/local-db) keep their files there.
	@for f in .local/db/*.dir; do [ -f "$$f" ] || continue; d="$$(cat "$$f")"; \
	  rm -rf -- "$$d"; rmdir -- "$$(dirname "$$d")" 2>/dev/null; done; true
	rm -rf .local
