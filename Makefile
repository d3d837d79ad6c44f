# The two set-up commands (README.md): `make run` and `make test`.
# Both work on a fresh Debian machine; as root they install the Debian packages they need.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_RUN := python3 python3-venv
APT_TEST := $(APT_RUN) rabbitmq-server postgresql postfix nginx chromium chromium-driver

.PHONY: run test lint format system-run system-test clean bench

run: system-run $(VENV)/.run
	$(PY) -m jmapmono serve

test: system-test $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy
	$(PY) tests/run_parallel.py

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(VENV)/.dev
	$(PY) bench/run_all.py

system-run:
	@sh conf/install-system-packages.sh $(APT_RUN)

system-test:
	@sh conf/install-system-packages.sh $(APT_TEST)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

$(VENV)/.run: requirements.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $(VENV)/.run $@

clean:
	rm -rf $(VENV)
