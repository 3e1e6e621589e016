# semarize-connector — developer entry points. `make demo` and `make test` are the two that matter.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KAFKA_LOCAL_PORT ?= 9092
export KAFKA_LOCAL_PORT

.PHONY: help install topics demo test test-unit test-integration lint kafka-up kafka-down kafka-libs bench bench-deps bench-quick clean chart-tools chart-check

help:
	@echo "make demo        - the whole main job on this machine (venv, local Kafka, simulator, samples, summary)"
	@echo "make test        - lint + every test, with a private real Kafka broker"
	@echo "make chart-check - the Helm chart, alert and dashboard tests only (installs helm, promtool)"
	@echo "make lint        - ruff + mypy"
	@echo "make kafka-up    - local single-node Kafka on 127.0.0.1:\$$KAFKA_LOCAL_PORT (default 9092)"
	@echo "make kafka-down  - stop it"
	@echo "make topics      - create the connector's topics if missing (CONFIG=file, PARTITIONS=3)"
	@echo "make bench       - benchmarks, writes bench/RESULTS.md"

$(BIN)/semarize-connector: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/semarize-connector

kafka-libs:
	tools/kafka/kafka-local.sh libs

kafka-up:
	tools/kafka/kafka-local.sh up

kafka-down:
	tools/kafka/kafka-local.sh down

# The connector's topics (input, output, dead letters), created if missing, by the settings
# of CONFIG (optional) and the environment.
topics: install
	$(BIN)/python scripts/demo_tools.py create-topics --keep-existing $(if $(CONFIG),--config $(CONFIG)) --partitions $(or $(PARTITIONS),3)

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/demo.sh

lint: install
	$(BIN)/ruff check connector tests $(wildcard bench scripts)
	$(BIN)/ruff format --check connector tests $(wildcard bench scripts)
	$(BIN)/mypy

test-unit: install
	$(BIN)/pytest tests/unit -q

test-integration: install kafka-libs
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest tests/integration -q

test: lint install kafka-libs chart-tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest -q --durations=25

# helm, promtool and kubernetes-validate into .local/bin (idempotent; helm builds once).
chart-tools: install
	tools/chart-tools.sh

chart-check: install chart-tools
	$(BIN)/pytest tests/chart -q

bench-deps: install
	test -x $(BIN)/py-spy || $(BIN)/pip install -q -e '.[dev,bench]'

bench: bench-deps kafka-libs
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run

bench-quick: bench-deps kafka-libs
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m bench.run --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
