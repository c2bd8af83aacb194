# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv first,
# and only when pyproject.toml or constraints.txt changed since the last install.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Offline, no telemetry (shared/notes/stack.md); src/bertops/env.py sets the same for direct use.
export DO_NOT_TRACK=true PREFECT_SERVER_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true
export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PREFECT_HOME := $(CURDIR)/.prefect
export PIP_DISABLE_PIP_VERSION_CHECK=1
# dvc.yaml runs `python -m bertops.stages ...`: the venv's python (and commands) come first.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install system-deps run test lint data ui bench lock clean postgres-deps stack-up stack-down stack-status

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the CPU build, unless a torch (e.g. a CUDA build on a GPU machine) is already there
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import bertops, lightning, transformers, prefect, mlflow, dvc, great_expectations"
	touch $@

data: install
	$(BIN)/bertops data fetch

run: install data
	$(BIN)/bertops run

# Debian's Chromium drives the registry-UI test (headless, loopback only); Debian's PostgreSQL 15
# backs the scale-out stack (`make stack-up`, tests/integration/test_stack.py).
system-deps: postgres-deps
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

postgres-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }

# The scale-out stack on this machine (README "Scale out"): PostgreSQL, SeaweedFS S3, MLflow and
# Prefect servers on 127.0.0.1, state and data in .stack/. Then: source .stack/stack.env
# STACK_ARGS passes options to `up`, e.g. STACK_ARGS="--bind 0.0.0.0 --advertise HOST".
stack-up: install postgres-deps
	$(BIN)/python -m bertops.stack up $(STACK_ARGS)

stack-down:
	$(BIN)/python -m bertops.stack down

stack-status:
	$(BIN)/python -m bertops.stack status

lint: install
	$(BIN)/ruff check src flows tests bench

test: install system-deps lint
	$(BIN)/python -m pytest -q --durations=15  # the slowest tests: the suite aims at < 20 min on 2 cores

ui: install
	$(BIN)/mlflow server --host 127.0.0.1 --port 5000 --workers 1 \
	  --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlartifacts

bench: install
	$(BIN)/python bench/pretrain_throughput.py

lock:
	{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v -E '^(torch==|-e )'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf artifacts .prefect mlflow.db mlartifacts
