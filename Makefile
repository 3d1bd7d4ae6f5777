# Tidal — the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TYPED := scaler scalers metrics_api

.PHONY: help venv sysdeps env lint test test-unit demo bench clean image manifests

help:
	@echo "make demo   start the local environment (and Tidal) and show it working"
	@echo "make test   lint + every test against real components (what CI runs)"
	@echo "make env    build/refresh the local environment's binaries (cached)"
	@echo "make lint   ruff + mypy --strict + import-linter"
	@echo "make bench  run benchmarks/, write JSON results and the README table"
	@echo "make image  build the container image tidal:<version> with buildah (IMAGE_ARGS=--oci-archive F)"
	@echo "make manifests  render deploy/manifests/ (and the chart's copies) from deploy/helm/tidal"

$(STAMP): pyproject.toml
	@echo "[venv] creating $(VENV) and installing tidal[all,dev]"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	@touch $@

venv: $(STAMP)

sysdeps:
	@bash deploy/local/install-system-deps.sh

env: sysdeps venv
	@bash deploy/local/build.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(TYPED)
	$(VENV)/bin/lint-imports

test: lint env
	$(VENV)/bin/pytest tests

test-unit: venv
	$(VENV)/bin/pytest tests/unit

demo: env
	PYTHONPATH=deploy/local $(PY) -m localenv.demo $(DEMO_ARGS)

bench: env
	PYTHONPATH=deploy/local $(PY) -m benchmarks.run $(BENCH_ARGS)

manifests: venv
	@bash deploy/local/build.sh helm
	PYTHONPATH=deploy/local $(PY) -m localenv.helm

image:
	@bash deploy/image/build.sh $(IMAGE_ARGS)

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache
