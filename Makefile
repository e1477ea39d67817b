# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
# Both are idempotent: the virtual environment and the embedded model are built once.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SLLMBO := $(VENV)/bin/sllmbo
STAMP := $(VENV)/.installed
# CPU build of torch that lies on these machines; GPU users bring their own torch.
TORCH_PIN ?= torch==2.13.0
export SLLMBO_HOME ?= $(CURDIR)/.sllmbo
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup model demo test lint bench bench-inference clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

model: $(STAMP)
	$(SLLMBO) models pull

demo: setup model
	$(SLLMBO) tune --task bike_sharing --model lightgbm --sampler llm-tpe --n-trials 20 \
		--storage sqlite:///$(SLLMBO_HOME)/demo.db --study demo-bike-lightgbm --seed 0 \
		--output $(SLLMBO_HOME)/demo-result.json

test: setup model
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

bench: bench-inference

bench-inference: setup model
	$(PY) -m sllmbo.eval.bench_inference

clean:
	rm -rf $(VENV) build dist *.egg-info
