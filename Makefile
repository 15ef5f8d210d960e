# userlibri: the two sacred commands are `make demo` and `make test`; both set everything up first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
USERLIBRI := $(VENV)/bin/userlibri
WORK ?= work/demo
JOBS ?= $(shell nproc)

.PHONY: setup demo test test-all bench lint clean

setup:
	@bash tools/setup.sh

demo: setup
	@bash recipes/mini/run.sh --work $(WORK) --jobs $(JOBS)

test: setup
	@$(PY) -m pytest -q -n 2 -p no:cacheprovider tests

test-all: setup
	@$(PY) -m pytest -q -n 2 -p no:cacheprovider -m "" tests

bench: setup
	@$(USERLIBRI) corpora fetch
	@$(PY) benchmarks/run_all.py

lint: setup
	@$(VENV)/bin/ruff check userlibri tests tools benchmarks
	@$(VENV)/bin/ruff format --check userlibri tests tools benchmarks

clean:
	rm -rf $(WORK) .pytest_cache
