# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test env sysdeps lint typecheck unit bench clean

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

env: $(STAMP)

## System packages the tests need (mosquitto, chromium). Installed with apt when root.
sysdeps:
	@bash .ci/sysdeps.sh

demo: env
	$(PY) -m twin demo

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
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
