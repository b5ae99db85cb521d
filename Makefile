# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev
# The viewer's JavaScript (three.js, msgpack) comes from npm at install time, pinned by
# viewer/package-lock.json, and is served locally from viewer/static/vendor (no CDN).
VENDOR := viewer/static/vendor/.installed

.PHONY: demo test env sysdeps lint typecheck unit bench clean

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

$(VENDOR): viewer/package.json viewer/package-lock.json
	@bash .ci/sysdeps.sh npm
	cd viewer && npm ci --no-audit --no-fund --loglevel=error
	rm -rf viewer/static/vendor
	mkdir -p viewer/static/vendor/three/examples viewer/static/vendor/msgpack
	cp -r viewer/node_modules/three/build viewer/static/vendor/three/
	cp -r viewer/node_modules/three/examples/jsm viewer/static/vendor/three/examples/
	cp -r viewer/node_modules/@msgpack/msgpack/dist.esm viewer/static/vendor/msgpack/
	@touch $@

env: $(STAMP) $(VENDOR)

## System packages the tests need (mosquitto, chromium). Installed with apt when root.
sysdeps:
	@bash .ci/sysdeps.sh

# `make demo MQTT=mqtt://HOST:PORT` runs the plant and its twin through a real broker
demo: env
	$(PY) -m twin demo $(if $(MQTT),--mqtt $(MQTT),)

lint: env
	$(VENV)/bin/ruff check twin physics scenes streaming viewer tests benchmarks
	$(VENV)/bin/ruff format --check twin physics scenes streaming viewer tests benchmarks

typecheck: env
	$(VENV)/bin/mypy

unit: env
	$(PY) -m pytest -n 2 -q

test: env sysdeps lint typecheck unit

bench: env
	$(PY) benchmarks/bench_process.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache viewer/node_modules viewer/static/vendor
