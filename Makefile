# The two commands of the README. Each sets up what it needs in .venv (created on first use).
#   make demo   train a model on the generated dataset on CPU, evaluate it, write pictures
#   make test   run the default test suite (no slow or GPU tests; `make test-slow` / `make test-gpu` run those)
#   make test-isolated   each member's tests with only that member and the members it declares installed

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Every member of the workspace; pip resolves their dependencies (torch with torchvision, for timm) together.
MEMBERS := packages/core packages/datasets ./cli $(filter-out packages/core/ packages/datasets/,$(sort $(dir $(wildcard packages/*/pyproject.toml))))
# The dev install adds optional extras the tests use: segcore[onnx] for the ONNX export checks, and transformers,
# which only the tests import (to make reference logits for the transformers converters; loading never needs it),
# and the tensorboard and wandb trackers, which the tracker tests write offline runs of.
DEV_MEMBERS := $(patsubst packages/core,'packages/core[onnx]',$(MEMBERS))
STAMP := $(VENV)/.segcore-installed
DEMO_DIR ?= runs/demo

.PHONY: install demo test test-isolated test-slow test-gpu lint wheels clean

$(STAMP): $(wildcard packages/*/pyproject.toml) cli/pyproject.toml pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install $(addprefix -e ,$(DEV_MEMBERS)) pytest pytest-xdist ruff hatchling transformers tensorboard wandb
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py --output-dir $(DEMO_DIR)

# One torch thread per test worker: two workers with two OpenMP threads each on two cores spend their time
# waiting for each other (measured: a small training step is 4x slower oversubscribed).
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile

# A fresh venv per member under .venv-isolated/ (reused until a pyproject.toml changes; about 5 GB each, torch
# included): a test or module importing a package its member does not declare fails here, not in the dev venv.
test-isolated:
	PYTHON=$(PYTHON) bash scripts/test_isolated.sh

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

# CUDA checks (CPU parity, bf16, channels_last, fused attention, compile, a bf16 training run); skip without a GPU.
test-gpu: $(STAMP)
	$(PY) -m pytest -m gpu

lint: $(STAMP)
	$(VENV)/bin/ruff check packages cli tests scripts
	$(VENV)/bin/ruff format --check packages cli tests scripts

wheels: $(STAMP)
	$(PY) -m pip wheel --no-deps --no-build-isolation -w dist $(MEMBERS)

clean:
	rm -rf $(VENV) .venv-isolated dist runs
