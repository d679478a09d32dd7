# Every target creates .venv (Python 3.11 + pip only) when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench eval dev clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "python3.11 not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tyche_assets.demo

test: lint $(STAMP)
	$(PY) -m pytest -q

# The layering contracts (import-linter), lint and format (ruff) and types (mypy on tyche_lib).
lint: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/round_bench.py

eval: $(STAMP)
	$(PY) eval/decision_quality.py

dev: $(STAMP)
	mkdir -p dagster_home && cp -n dagster.yaml dagster_home/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/dagster_home $(VENV)/bin/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) data dagster_home landing plans reports storage
