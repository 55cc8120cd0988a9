# AquaFog: `make run` for the demo, `make test` for every test. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# What each job installs: the demo and the field tools need Mosquitto and the [tools] extra;
# the tests need everything (browser, PostgreSQL, Node, systemd-nspawn, qemu, the [dev] extra).
STAMP_RUN := $(VENV)/.aquafog-run
STAMP_TEST := $(VENV)/.aquafog-test

.PHONY: help deps run test bench flash deb clean

help:
	@echo "make run    demo: 2 fogs (Mosquitto + gateway + 100 emulated meters each) and the cloud (Ctrl-C stops all)"
	@echo "make test   the whole test suite"
	@echo "make bench  benchmarks (prints a table, writes bench-results/*.json)"
	@echo "make deb    the Debian packages of a fog and a cloud (build/*.deb; docs/install-fog.md)"
	@echo "make flash PORT=/dev/ttyUSB0 METER=<id>   put the firmware and that meter's config on a board"
	@echo "make deps   install what make run needs (make test installs the rest itself)"

deps: $(STAMP_RUN)

$(VENV)/bin/python:
	@tools/install-system-deps.sh run
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_RUN): backend/pyproject.toml | $(VENV)/bin/python
	@tools/install-system-deps.sh run
	$(PIP) install -q -e 'backend[tools]'
	@touch $@

$(STAMP_TEST): backend/pyproject.toml | $(VENV)/bin/python
	@tools/install-system-deps.sh test
	$(PIP) install -q -e 'backend[dev]'
	@touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(PY) tools/demo.py $(ARGS)

test: $(STAMP_TEST)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP_TEST)
	$(PY) tools/bench/run.py $(ARGS)

deb: $(STAMP_RUN)
	$(PY) backend/deploy/build_deb.py --out build $(ARGS)

# The meters' configs (written by `aquafog meter provision`; git-ignored, they hold passwords).
METERS_DIR ?= firmware/meters

flash: $(STAMP_RUN)
	@if [ -z "$(PORT)" ] || [ -z "$(METER)" ]; then \
	    echo "usage: make flash PORT=/dev/ttyUSB0 METER=<meter id>" >&2; \
	    echo "  PORT: the board's serial port (ls /dev/ttyUSB* /dev/ttyACM*)" >&2; \
	    echo "  METER: a provisioned meter (firmware/meters/<id>/config.json, from .venv/bin/aquafog meter provision <id> ...)" >&2; \
	    exit 2; \
	fi
	$(VENV)/bin/aquafog flash --meters-dir "$(METERS_DIR)" $(ARGS) "$(PORT)" "$(METER)"

clean:
	rm -rf $(VENV) run build bench-results .pytest_cache test-artifacts
