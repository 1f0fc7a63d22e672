# The two set-up commands of the README: `make dev` runs the pipeline, `make test` runs the suite.
# Both create .venv and install what they need on a fresh machine (PyPI only).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test test-tools lint typecheck install clean bench

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

# What the tests install from Debian when missing: tests/e2e/test_kafka_security.py puts stunnel4
# (a real TLS endpoint) in front of the embedded broker and makes certificates with openssl.
test-tools:
	command -v stunnel4 >/dev/null && command -v openssl >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q stunnel4 openssl) || \
		echo "stunnel4/openssl not installed (needs root): the Kafka TLS tests will be skipped"
	@# The browser test drives Debian's chromium (required); the Prometheus test runs Debian's
	@# prometheus where it can be installed (skipped where it cannot).
	command -v chromium >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	command -v prometheus >/dev/null || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus) || true

test: lint typecheck test-tools
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .eventpipe .pytest_cache .mypy_cache .ruff_cache test-artifacts
