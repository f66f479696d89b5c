# Strongroom: `make demo` runs the main job on local services; `make test` runs the whole suite.
# Both do all set-up on a fresh Debian machine (PostgreSQL 15 tools from apt, Python packages into .venv).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# the suite on two workers, a file per worker at a time (each worker has its own services); PYTEST_ARGS= runs it serially
PYTEST_ARGS ?= -n 2 --dist loadfile
PYTHON ?= $(shell command -v python3.11 || command -v python3)
PG_BIN := /usr/lib/postgresql/15/bin
STAMP := $(VENV)/.installed

.PHONY: help venv system-deps bench-deps demo test lint unit up bench bench-dedup clean

help:
	@echo "make demo   - snapshot a sample database through Airflow into local S3, restore it, prove it equal"
	@echo "make test   - install everything and run lint, type checks and the whole test suite"
	@echo "make up     - the Airflow UI on http://localhost:8080 against the same local stack"
	@echo "make bench  - snapshot/restore benchmark on a >1 GB database (writes bench/results/)"
	@echo "make bench-dedup - deduplicated snapshots (simulated chunk store) against restic, issue 20 (long)"

$(STAMP): requirements.txt requirements-dev.txt requirements-lock.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c requirements-lock.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# PostgreSQL 15 server and client tools (tests and the demo start their own throwaway cluster);
# Chromium for the Backups page test in a real browser; docker-compose to validate deploy/docker-compose.yaml
system-deps:
	@if [ ! -x $(PG_BIN)/initdb ] || [ ! -x $(PG_BIN)/pg_dump ]; then \
	  echo "installing PostgreSQL 15 from Debian's packages"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15; \
	fi
	@id postgres >/dev/null 2>&1 || { echo "the postgres OS user is missing (it comes with postgresql-15)"; exit 1; }
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing Chromium from Debian's packages (the Backups page browser test)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi
	@if ! command -v docker-compose >/dev/null 2>&1; then \
	  echo "installing docker-compose from Debian's packages (the deployment test validates deploy/ with it; no daemon needed)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose; \
	fi

# what only the benchmarks need: restic, the deduplicating backup bench/dedup.py compares with
bench-deps:
	@if ! command -v restic >/dev/null 2>&1; then \
	  echo "installing restic from Debian's packages (bench/dedup.py's comparison)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic; \
	fi

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest tests/unit -q

test: venv system-deps lint
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

demo: venv system-deps
	$(PY) scripts/demo.py

up: venv system-deps
	$(PY) scripts/up.py

bench: venv system-deps bench-deps
	$(PY) bench/snapshot.py

bench-dedup: venv system-deps bench-deps
	$(PY) bench/dedup.py

clean:
	rm -rf .demo .airflow .pytest_cache .mypy_cache .ruff_cache
