# The two set-up commands of the README: `make dev` runs the pipeline, `make test` runs the suite.
# Both create .venv and install what they need on a fresh machine (PyPI only).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test lint typecheck install clean bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 13), "eventpipe needs Python 3.11 to 3.13"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

dev: install
	$(BIN)/eventpipe dev $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .eventpipe .pytest_cache .mypy_cache .ruff_cache
