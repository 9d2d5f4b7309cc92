# The README's two commands: `make run` (the whole platform locally) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test unit contract integration lint fmt clean bench bench-quick schemas schemas-check \
	run-order run-inventory run-payment run-fraud run-notification run-analytics run-sandbox

run: $(INSTALLED) ## start broker, databases, the sandbox provider and all six services; Ctrl-C stops everything
	$(PY) -m devstack up

test: lint schemas-check unit contract bench-quick integration ## lint, type-check, event catalog check, unit, contract, integration tests, quick benchmark

schemas: $(INSTALLED) ## regenerate schemas/ (JSON Schemas, AsyncAPI) and docs/events.md's catalog from shared/contracts
	$(PY) -m shopctl.catalog generate

schemas-check: $(INSTALLED) ## fail on an event change that breaks consumers of the released schemas, or on an unpublished event type
	$(PY) -m shopctl.catalog check

unit: $(INSTALLED)
	$(PY) -m pytest -m unit tests/unit

contract: $(INSTALLED)
	$(PY) -m pytest -m contract tests/contract

integration: $(INSTALLED)
	$(PY) -m pytest -m integration tests/integration

bench: $(INSTALLED) ## the saga under rising load against same-run ceilings (under 10 minutes)
	$(PY) -m bench

bench-quick: $(INSTALLED) ## a few seconds of light load: the benchmark still works (asserts no timing)
	$(PY) -m bench --quick

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

fmt: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

run-order run-inventory run-payment run-fraud run-notification run-analytics: run-%: $(INSTALLED)
	$(PY) -m services.$*

run-sandbox: $(INSTALLED) ## the sandbox payment provider alone (dev and test only)
	$(PY) -m sandbox

$(INSTALLED): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[local,dev]'
	touch $@

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
