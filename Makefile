# Two set-up commands: `make run` (the main job) and `make test` (lint, then the whole suite).
# Both create .venv when it is missing and install what they need into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel on this kind of machine; on a Linux GPU box the same pin is PyPI's CUDA build.
# Override to match your CUDA: make run TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0

.PHONY: install install-dev run lint test test-fast lab bench clean

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

# The main job: data prepared once (the embedded corpus, cpu profile), then a bounded loop with the
# offline mutate proposer (2 baseline seeds + 3 experiments of 1.25e12 training FLOPs each, counted by the
# harness: the baseline's 65,536 tokens, and a larger model fewer; a budget in FLOPs so that a busy machine
# measures the same as a quiet one and a change cannot buy its gain with compute), then the report.
# --paired-runs 3 caps what the paired gate spends on one borderline change (8 by default: an overnight run
# keeps gains of 0.005 bpb, this short one gains of about 0.02). Each `make run` is a new run tag; the loop
# prints how to resume it or run it longer.
run: install
	@data="$${AUTORESEARCH_DATA_DIR:-$$HOME/.cache/autoresearch_kernel}"; \
	test -f "$$data/cpu/manifest.json" || $(BIN)/python -m autoresearch_kernel prepare
	@tag="make-$$(date +%Y%m%d-%H%M%S)"; \
	$(BIN)/python -m autoresearch_kernel loop --tag $$tag --proposer mutate --budget-flops 1.25e12 \
		--baseline-seeds 2 --paired-runs 3 --max-experiments 3 && \
	$(BIN)/python -m autoresearch_kernel report --tag $$tag

# ruff, configured in pyproject.toml; CI (.ci/run) runs it through `make test`.
lint: install-dev
	$(BIN)/ruff check .

# Two workers, each given whole test modules, the longest first (tests/conftest.py): most of a module's time is
# one chain of processes (loop, papermill, kernel, scorer) that keeps about one core busy, so two chains fill
# two cores. WORKERS=0 runs the suite in one process.
WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The quick tier while developing (a minute or two): no kernels, loops, training subprocesses or browser.
# The tests marked slow are listed in tests/conftest.py.
test-fast: install-dev
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Rooted at the project (not notebooks/), so the dashboard's links to executed notebooks under runs/ open;
# it opens on the controller notebook.
lab: install
	$(BIN)/jupyter lab --LabApp.default_url=/lab/tree/notebooks/loop.ipynb

bench: install
	for script in bench/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) runs
