# kafka-etl: the two set-up commands are `make demo` and `make test`; everything they need they
# install themselves (Python venv, Debian packages, Kafka's jars from Maven Central).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: demo test install system-deps services kafka ui lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Debian packages the tests use: database servers (scripts/local-db installs them too) and
# Chromium for the UI test. Java 17 and Maven are on the machine image.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
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

demo: install
	@bootstrap=$$(scripts/local-kafka start | tail -n 1) && \
	  KAFKA_BOOTSTRAP_SERVERS=$$bootstrap $(BIN)/python examples/demo.py

test: install services
	@# pytest exits 5 when it collected no test: that is a failure here, like any non-zero exit.
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

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
	-scripts/local-db stop
	@# Servers relocated out of a private clone (see scripts/local-db) keep their files there.
	@for f in .local/db/*.dir; do [ -f "$$f" ] && rm -rf -- "$$(cat "$$f")"; done; true
	rm -rf .local
