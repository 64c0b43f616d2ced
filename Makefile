# The two commands a fresh machine needs: `make up` and `make test`.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
PYTHON ?= python3
# uv from PATH; else one that pip installs into a private venv on first use (a venv, because
# distributions' own Pythons refuse `pip install` outside one: PEP 668).
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo "$(TOOLS)/bin/uv")
ifeq ($(UV),$(TOOLS)/bin/uv)
# What the recipes run may call `uv` by name (the acceptance harness, a benchmark): it must find ours.
export PATH := $(CURDIR)/$(TOOLS)/bin:$(PATH)
endif
DATA_DIR ?= var
PYTEST_ARGS ?=

.PHONY: help bootstrap sync up test test-fast test-browser fuzz lint fmt bench soak accept assets clean

help:
	@echo "make up      run the three services on the embedded database (data in ./$(DATA_DIR))"
	@echo "make test    lint, type-check and run every test (PostgreSQL at 127.0.0.1:5432 or CEF_TEST_DATABASE_URL)"
	@echo "make fuzz    schema-fuzz the three APIs at length (CEF_FUZZ_EXAMPLES examples per operation)"
	@echo "make bench   run the benchmarks and print their figures"
	@echo "make soak    locust for 5 minutes against cef up on PostgreSQL (127.0.0.1:5432): req/s, p50/p99, errors"
	@echo "make accept  drive a fresh system with the shared sample world (needs ../shared)"
	@echo "make assets  rebuild the web app's NHS.UK frontend files from their lockfile (needs Node.js)"
	@echo "then         .venv/bin/cef --help   (the cef command; make up prints what to run)"

bootstrap:
	@if [ "$(UV)" = "$(TOOLS)/bin/uv" ] && [ ! -x "$(TOOLS)/bin/uv" ]; then \
		echo "uv is not installed: installing it with pip into $(TOOLS)/"; \
		$(PYTHON) -m venv $(TOOLS) && $(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv; \
	fi

sync: bootstrap
	@$(UV) sync --frozen --quiet

up: sync
	$(UV) run cef up --data-dir $(DATA_DIR)

lint: sync
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

test: lint
	$(UV) run pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: sync
	$(UV) run pytest -q -x -n 2 --dist loadfile -m "not e2e" $(PYTEST_ARGS)

# The browser tests alone: Playwright driving Debian's Chromium over a real `cef up`.
test-browser: sync
	$(UV) run pytest -q -m browser tests/browser $(PYTEST_ARGS)

# The schema fuzzing `make test` runs briefly, run with many more examples per operation.
CEF_FUZZ_EXAMPLES ?= 500
fuzz: sync
	CEF_FUZZ_EXAMPLES=$(CEF_FUZZ_EXAMPLES) $(UV) run pytest -q -n 2 --dist load -m fuzz $(PYTEST_ARGS)

fmt: sync
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

bench: sync
	$(UV) run python benchmarks/run_all.py

# Load: 20 providers submitting 100-line invoices, staff deciding, finance reading, for 5 minutes
# (docs/load.md); SOAK_ARGS="--duration 60s" for a short run.
SOAK_ARGS ?=
soak: sync
	$(UV) run python benchmarks/soak/run_soak.py $(SOAK_ARGS)

accept: sync
	$(UV) run python ../shared/tools/accept_sample.py sample-v2

# The NHS.UK frontend the web app serves, from services/web/assets/package-lock.json. The result is
# committed, so `make up` needs no Node.js; run this after changing the pinned version.
assets:
	services/web/assets/build.sh

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache benchmarks/out $(TOOLS)
