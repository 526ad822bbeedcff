# The two commands of the README: `make book` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= quick
DEVICE ?= auto
# chapters run side by side (each with a share of the cores); they wait for the ones they read
JOBS ?= 2
# a CPU build of torch here; elsewhere e.g. TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
# or TORCH=torch (your platform's default, CUDA on Linux)
TORCH ?= torch==2.13.0

.PHONY: env book test lint clean-book

$(VENV)/.capq-env: pyproject.toml
	@echo "[make] creating the environment in $(VENV) (once)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

env: $(VENV)/.capq-env

book: env
	$(BIN)/capq build --profile $(PROFILE) --device $(DEVICE) --jobs $(JOBS)

test: env
	$(BIN)/python -m pytest

lint: env
	$(BIN)/ruff check capq_lib tests benchmarks
	$(BIN)/lint-imports

clean-book:
	rm -rf _build
