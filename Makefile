# AquaFog: `make run` for the demo, `make test` for every test. Both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.aquafog-installed

.PHONY: help deps run test bench clean

help:
	@echo "make run    demo: Mosquitto + gateway + 200 emulated meters (Ctrl-C stops all)"
	@echo "make test   the whole test suite"
	@echo "make bench  benchmarks (prints a table, writes bench-results/*.json)"
	@echo "make deps   install system packages (apt-get) and the Python venv"

deps: $(STAMP)
	@tools/install-system-deps.sh

$(STAMP): backend/pyproject.toml
	@tools/install-system-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e 'backend[dev]'
	@touch $@

run: deps
	$(PY) tools/demo.py $(ARGS)

test: deps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: deps
	$(PY) tools/bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) run build bench-results .pytest_cache
