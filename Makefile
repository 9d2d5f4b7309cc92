# The README's two commands: `make run` (the whole platform locally) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run test unit contract integration lint fmt clean \
	run-order run-inventory run-payment run-fraud run-notification

run: $(INSTALLED) ## start broker, databases and all five services; Ctrl-C stops everything
	$(PY) -m devstack up

test: lint unit contract integration ## lint, type-check, unit, store contract and integration tests

unit: $(INSTALLED)
	$(PY) -m pytest -m unit tests/unit

contract: $(INSTALLED)
	$(PY) -m pytest -m contract tests/contract

integration: $(INSTALLED)
	$(PY) -m pytest -m integration tests/integration

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

fmt: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

run-order run-inventory run-payment run-fraud run-notification: run-%: $(INSTALLED)
	$(PY) -m services.$*

$(INSTALLED): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[local,dev]'
	touch $@

clean:
	rm -rf $(VENV) .run .pytest_cache .mypy_cache .ruff_cache
