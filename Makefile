# streamrec: `make demo` runs everything locally; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/streamrec demo

test: install lint typecheck
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest -m "not integration"

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy core online_models index offline infra consumers api cli

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
