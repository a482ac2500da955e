"""notebooks/train_template.ipynb: its committed shape, and real executions through the runner at a tiny size.

A token budget makes each run deterministic, so the same seed must give the same val_bpb to the last digit,
and a longer budget must give a lower one (the metric moves with training, it is not a constant).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from autoresearch_kernel.execution.runner import run_notebook

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "notebooks" / "train_template.ipynb"
STEP_TOKENS = 8 * 256  # the cpu baseline's TOTAL_BATCH_SIZE
SHORT_TOKENS = 2 * STEP_TOKENS
LONG_TOKENS = 25 * STEP_TOKENS
PARAMETERS = '''\
PROFILE = "cpu"        # cpu | gpu: sizes of the prepared data and of the evaluation
DATA_DIR = ""          # prepared data folder; "" means the default
DEVICE = "auto"        # auto picks cuda, then mps, then cpu
SEED = 0
BUDGET_SECONDS = 0.0   # > 0: wall-clock training seconds (warm-up steps excluded); all 0: the profile's default
BUDGET_TOKENS = 0      # > 0: a fixed number of training tokens instead (deterministic)
METRICS_PATH = "metrics.json"
EVALUATE = True        # False in the loop: its scorer measures the model outside this kernel
BUDGET_FLOPS = 0.0     # > 0: training FLOPs instead, counted by the harness (deterministic, compute-fair)'''


def _execute(notebook, out_dir, prepared_dir, **parameters):
    parameters = dict(PROFILE="cpu", DATA_DIR=str(prepared_dir), DEVICE="cpu", SEED=0, **parameters)
    return run_notebook(notebook, out_dir / "train.ipynb", parameters, timeout_s=600, cwd=out_dir)


def _text_of(notebook_path, cell_id):
    cell = next(c for c in nbformat.read(notebook_path, as_version=4).cells if c.get("id") == cell_id)
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


@pytest.fixture(scope="module")
def short_run(prepared_dir, tmp_path_factory):
    return _execute(TEMPLATE, tmp_path_factory.mktemp("short"), prepared_dir, BUDGET_TOKENS=SHORT_TOKENS)


def test_committed_notebook_has_the_contract_cells_and_no_outputs():
    notebook = nbformat.read(TEMPLATE, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3" and "widgets" not in notebook.metadata
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code[0].source == PARAMETERS and code[0].metadata["tags"] == ["parameters"]
    assert code[1].metadata["tags"] == ["harness"] and "run = harness.start(" in code[1].source
    assert code[-1].source == "harness.finish(run, model)" and code[-1].metadata["tags"] == ["harness"]
    assert all(not cell.get("tags") for cell in (c.metadata for c in code[2:-1]))
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    # Hyperparameters are plain `NAME = number` lines, the form the mutation proposer edits.
    hyperparameters = next(c.source for c in code if c.get("id") == "hyperparameters")
    for name in ("DEPTH", "MATRIX_LR", "EMBEDDING_LR", "WARMDOWN_RATIO", "TOTAL_BATCH_SIZE"):
        assert f"\n{name} = " in hyperparameters or f"    {name} = " in hyperparameters


def test_a_run_writes_metrics_checkpoint_curve_and_summary(short_run):
    assert short_run.status == "ok", short_run.failure
    metrics = short_run.metrics
    assert metrics["status"] == "ok" and 0 < metrics["val_bpb"] < 10
    assert metrics["num_steps"] == 2 and metrics["total_tokens_M"] == pytest.approx(SHORT_TOKENS / 1e6, abs=1e-3)
    assert metrics["depth"] == 4 and metrics["num_params_M"] > 1 and metrics["peak_vram_mb"] > 0
    assert metrics["budget_tokens"] == SHORT_TOKENS and metrics["budget_seconds"] is None
    state = torch.load(metrics["checkpoint"], weights_only=True)
    assert "embed.weight" in state and "head.weight" in state
    training = _text_of(short_run.output_path, "training")
    assert "step 00000 | loss " in training and "100% done" in training
    report = _text_of(short_run.output_path, "harness-report")
    assert f"---\nval_bpb:          {metrics['val_bpb']:.6f}\ntraining_seconds: " in report
    assert "\nnum_steps:        2\nnum_params_M:     " in report and report.rstrip().endswith("depth:            4")
    cell = next(c for c in nbformat.read(short_run.output_path, as_version=4).cells if c.get("id") == "harness-report")
    assert any("image/png" in o.get("data", {}) for o in cell.outputs)  # the loss curve


def _run_once(out_dir, prepared_dir, *budget, by_environment=False):
    """`autoresearch run-once` on seed 0 in a subprocess (a kernel of its own); the completed process.
    `by_environment`: the data folder named by AUTORESEARCH_DATA_DIR (the default's way), not --data-dir."""
    data = [] if by_environment else ["--data-dir", str(prepared_dir)]
    env = dict(os.environ, AUTORESEARCH_DATA_DIR=str(prepared_dir)) if by_environment else None
    completed = subprocess.run(
        [sys.executable, "-m", "autoresearch_kernel", "run-once", *budget,
         *data, "--device", "cpu", "--seed", "0", "--out", str(out_dir)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert completed.returncode == 0, completed.stderr
    return completed


def test_run_once_gives_the_same_val_bpb_for_the_same_seed(short_run, prepared_dir, tmp_path):
    # the default data folder is the caller's, not the one the kernel's own HOME would give
    completed = _run_once(tmp_path, prepared_dir, "--budget-tokens", str(SHORT_TOKENS), by_environment=True)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val_bpb"] == short_run.metrics["val_bpb"]
    assert f"---\nval_bpb:          {metrics['val_bpb']:.6f}\n" in completed.stdout


def test_a_flop_budget_gives_the_same_val_bpb_twice_and_prices_the_baselines_tokens(prepared_dir, tmp_path):
    """Two steps' worth of the baseline's counted FLOPs (19,484,170.625 per token): the notebook in a kernel,
    then run-once in another; the same seed gives the same val_bpb and FLOPs to the last digit."""
    flops = 2 * STEP_TOKENS * 19_484_170.625 * 0.999
    first = _execute(TEMPLATE, tmp_path, prepared_dir, BUDGET_FLOPS=flops)
    assert first.status == "ok", first.failure
    metrics = first.metrics
    assert (metrics["num_steps"], metrics["budget_flops"], metrics["flops_per_token"]) == (2, flops, 19_484_170.625)
    assert metrics["flops"] == 2 * STEP_TOKENS * 19_484_170.625 and metrics["budget_tokens"] is None
    again = tmp_path / "again"
    _run_once(again, prepared_dir, "--budget-flops", repr(flops))
    repeated = json.loads((again / "metrics.json").read_text())
    assert (repeated["val_bpb"], repeated["flops"]) == (metrics["val_bpb"], metrics["flops"])


def test_training_longer_lowers_val_bpb(short_run, prepared_dir, tmp_path):
    longer = _execute(TEMPLATE, tmp_path, prepared_dir, BUDGET_TOKENS=LONG_TOKENS)
    assert longer.status == "ok", longer.failure
    assert longer.metrics["num_steps"] == 25
    assert longer.metrics["val_bpb"] < short_run.metrics["val_bpb"] - 0.1


def test_a_failing_edit_leaves_the_error_in_the_output_notebook(prepared_dir, tmp_path):
    notebook = nbformat.read(TEMPLATE, as_version=4)
    training = next(c for c in notebook.cells if c.get("id") == "training")
    training.source = training.source.replace("    run.tick(step, loss.detach())", "    raise RuntimeError('injected failure')")
    assert "injected failure" in training.source
    edited = tmp_path / "edited.ipynb"
    nbformat.write(notebook, edited)
    result = _execute(edited, tmp_path, prepared_dir, BUDGET_TOKENS=SHORT_TOKENS)
    assert result.status == "crash" and result.error_name == "RuntimeError"
    assert "injected failure" in result.error_message
    executed = nbformat.read(result.output_path, as_version=4)
    cell = next(c for c in executed.cells if c.get("id") == "training")
    assert any(o.output_type == "error" and o.ename == "RuntimeError" for o in cell.outputs)
    assert result.metrics is None or result.metrics["status"] == "failed"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_path_compiles_and_trains(prepared_dir, tmp_path):
    # The cpu profile's data on a GPU: torch.compile, flex attention for the sliding windows, bf16 autocast.
    result = _execute(TEMPLATE, tmp_path, prepared_dir, DEVICE="cuda", BUDGET_TOKENS=20 * STEP_TOKENS)
    assert result.status == "ok", result.failure
    assert result.metrics["device"] == "cuda" and result.metrics["num_steps"] == 20
    assert result.metrics["peak_vram_mb"] > 0
