# Two set-up commands: `make run` (the main job) and `make test` (the whole suite).
# Both create .venv when it is missing and install what they need into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel on this kind of machine; on a Linux GPU box the same pin is PyPI's CUDA build.
# Override to match your CUDA: make run TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0

.PHONY: install install-dev run test lab bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/python -m autoresearch_kernel prepare

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Rooted at the project (not notebooks/), so the dashboard's links to executed notebooks under runs/ open;
# it opens on the controller notebook.
lab: install
	$(BIN)/jupyter lab --LabApp.default_url=/lab/tree/notebooks/loop.ipynb

bench: install
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) runs
