# AquaFog: `make run` for the demo, `make test` for every test. Both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.aquafog-installed

.PHONY: help deps run test bench flash clean

help:
	@echo "make run    demo: 2 fogs (Mosquitto + gateway + 100 emulated meters each) and the cloud (Ctrl-C stops all)"
	@echo "make test   the whole test suite"
	@echo "make bench  benchmarks (prints a table, writes bench-results/*.json)"
	@echo "make deps   install system packages (apt-get) and the Python venv"
	@echo "make flash PORT=/dev/ttyUSB0 METER=<id>   put the firmware and that meter's config on a board"

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

# The meters' configs (written by tools/provision.py; git-ignored, they hold passwords).
METERS_DIR ?= firmware/meters

flash: deps
	@if [ -z "$(PORT)" ] || [ -z "$(METER)" ]; then \
	    echo "usage: make flash PORT=/dev/ttyUSB0 METER=<meter id>" >&2; \
	    echo "  PORT: the board's serial port (ls /dev/ttyUSB* /dev/ttyACM*)" >&2; \
	    echo "  METER: a provisioned meter (firmware/meters/<id>/config.json, from python tools/provision.py meter <id> ...)" >&2; \
	    exit 2; \
	fi
	$(PY) tools/flash.py --meters-dir "$(METERS_DIR)" $(ARGS) "$(PORT)" "$(METER)"

clean:
	rm -rf $(VENV) run build bench-results .pytest_cache test-artifacts
