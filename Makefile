# Flywheel developer entry points. Everything runs from the project's own .venv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
# Installed once into the venv; uv then resolves the pinned requirements in seconds.
UV_VERSION := 0.13.8
BASE_PYTHON := $(shell command -v python3.11 || command -v python3)
# torch: where /opt/wheels exists it holds a local CPU-only build of the pinned torch, which
# uv then prefers over PyPI's default build (CUDA libraries, several GiB); elsewhere PyPI's
# build is used. uv does not read pip.conf, hence the flag here.
TORCH_WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)
# Re-install only when the pins or the package metadata change.
STAMP  := $(VENV)/.installed

.PHONY: help venv lint test bench up down status demo demo-short clean

help:
	@echo "make venv    create/update .venv from requirements*.txt"
	@echo "make lint    ruff + mypy"
	@echo "make test    lint, then the whole test suite (starts real Airflow/MLflow on loopback)"
	@echo "make bench   the benchmarks (~45 min; not part of test): table + bench/results.json"
	@echo "             ONLY=drift_check,online_lookup runs some; QUICK=1 the smallest sizes"
	@echo "make up      start Airflow + MLflow in the background; prints URLs and login"
	@echo "make status  which components run"
	@echo "make down    stop every process 'up' started"
	@echo "make demo    the year in review: replay 2013 through the loop, write the report"
	@echo "make demo-short  the same for Q1 + April..June (a quick look)"
	@echo "make clean   down, then remove .flywheel (all local state)"

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -n "$(BASE_PYTHON)" || { echo "need python3.11 (or python3) on PATH"; exit 1; }
	test -x $(PY) || $(BASE_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	# Bytecode now, once: with PYTHONDONTWRITEBYTECODE set (as on CI) every Airflow task
	# process would otherwise recompile its imports from source, ~5 s each.
	$(UV) pip install --python $(PY) --compile-bytecode $(TORCH_WHEELS) -r requirements.txt -r requirements-dev.txt
	$(UV) pip install --python $(PY) --no-deps -e .
	touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy $(wildcard include dags)

test: venv lint
	$(PY) -m pytest tests

# Benchmarks measure this machine, so they stay out of `test` (which runs one quick smoke).
bench: venv
	$(PY) -m bench $(if $(ONLY),--only $(ONLY)) $(if $(QUICK),--quick)

up: venv
	$(PY) -m flywheel.stack up

status: venv
	@$(PY) -m flywheel.stack status || true

down:
	@if [ -x $(PY) ]; then $(PY) -m flywheel.stack down; fi

demo: venv
	$(PY) -m flywheel.demo

demo-short: venv
	$(PY) -m flywheel.demo --short

clean: down
	rm -rf .flywheel .pytest_cache .mypy_cache .ruff_cache
