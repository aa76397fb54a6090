# tomo: the two commands are `make run` and `make test`; everything else is set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export OMP_WAIT_POLICY ?= passive
# Build llama.cpp for this machine's CPU; pip keeps the built wheel in its cache.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: run test install install-test system-deps lint typecheck imports pytest bench clean help

help:
	@echo "make run    set up everything and start tomo (terminal chat, or the configured platforms)"
	@echo "make test   set up everything plus test tools; run lint, type checks and all tests"

# Debian packages: espeak-ng speaks languages that have no piper voice (and the speech
# tests use it); libcairo2 renders the avatar's SVG parts (cairosvg); fonts-wqy-microhei
# covers Chinese and Japanese sticker captions; redis-server backs the bus tests (each test
# session starts its own). Installed when missing (root or sudo).
SYSTEM_PACKAGES := espeak-ng libcairo2 fonts-wqy-microhei redis-server
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:$$missing"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
		$$SUDO apt-get install -y -q $$missing >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q $$missing >/dev/null; } \
		|| { echo "Could not install$$missing: install them with apt-get, then run make again."; exit 1; }; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The first install compiles llama-cpp-python (about 10 minutes on 2 cores).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "Installing tomo; the first time, llama.cpp is compiled (about 10 minutes)..."
	$(BIN)/pip install --quiet -e .
	@touch $@

# The tests train small LoRA adapters on the CPU: the `train` extra, with torch's CPU
# build (TORCH; a plain `torch` from PyPI is a CUDA build of several GB).
TORCH ?= torch==2.13.0
$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[test,train]'
	@touch $@

install: system-deps $(VENV)/.installed
install-test: system-deps $(VENV)/.installed-test

run: install
	$(BIN)/tomo migrate
	$(BIN)/tomo run

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-test
	$(BIN)/mypy

imports: install-test
	$(BIN)/lint-imports

# Postgres (with pgvector) is started by the test session itself from the pip package
# pgserver; see tests/conftest.py.
pytest: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck imports pytest

bench: install
	$(BIN)/tomo bench pipeline --stub-llm
	$(BIN)/tomo bench model
	$(BIN)/tomo bench startup
	$(BIN)/tomo bench speech

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
