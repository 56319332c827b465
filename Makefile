# bnlab — every command a user needs. `make seed` runs the notebook reproduction,
# `make test` runs the test suite; both install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: seed test test-fast lint data test-tools notebook bench bench-envs clean
.DEFAULT_GOAL := seed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The package (editable) with every extra the README's commands use: ONNX, Keras files,
# Ray, TensorBoard.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[all]"
	touch $@

# Test-only dependencies (pytest, hypothesis, ruff, Keras for reference checks).
$(VENV)/.test: pyproject.toml $(VENV)/.runtime
	$(BIN)/pip install -q -e ".[test]"
	touch $@

data:
	@bash scripts/install-data.sh

# Debian's chromium for the HTML report's browser test (skipped, with a reason, if absent).
test-tools:
	@bash scripts/install-test-tools.sh

seed: $(VENV)/.runtime data
	$(BIN)/bnlab seed $(ARGS)

# Every test, on both cores: a module's tests on one, the longest modules first (their order
# in tests/conftest.py, which xdist keeps with --no-loadscope-reorder); then the notebook's
# Jupyter kernel alone (beside the others its execution once stalled for ten minutes).
test: $(VENV)/.test data test-tools
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder \
		--ignore=tests/examples/test_notebook.py $(ARGS)
	$(BIN)/python -m pytest tests/examples/test_notebook.py $(ARGS)

# The inner loop: the unit tests, on both cores (no run trained, no real data, no servers,
# none of the unit tests marked slow: those run in `make test`).
test-fast: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not realdata and not server and not e2e and not slow" -n 2 $(ARGS)

# The example notebook, executed in place with its full parameters (its outputs are committed;
# the test suite executes a copy cut to a few hundred steps).
notebook: $(VENV)/.test data
	cd examples && ../$(BIN)/jupyter-execute --inplace reproduce_the_notebook.ipynb

# Speed benchmark: bnlab, the notebook's Keras code and PyTorch eager side by side (see
# benchmarks/README.md). The peers live in their own environments (.venv-keras, .venv-torch).
bench-envs:
	PYTHON=$(PYTHON) bash scripts/bench-envs.sh

bench: $(VENV)/.runtime data bench-envs
	$(BIN)/python benchmarks/epoch_speed.py --torch-threads 1,2 --side-by-side 2 --out bench-out $(ARGS)

lint: $(VENV)/.test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
