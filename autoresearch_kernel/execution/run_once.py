"""One experiment, outside the loop: the sandbox notebook run once through the runner, like `uv run train.py`.

`python -m autoresearch_kernel run-once` calls `run_once`: it executes the notebook with the given
parameters in a fresh kernel, leaves the executed notebook, its log, metrics.json and the checkpoint
under the output folder, and prints the summary block the harness wrote.
"""
from __future__ import annotations

from pathlib import Path

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.execution.runner import RunResult, run_notebook
from autoresearch_kernel.harness.finish import summary
from autoresearch_kernel.harness.metrics import Metrics
from autoresearch_kernel.harness.parameters import ExperimentParameters
from autoresearch_kernel.harness.prepare import default_data_dir
from autoresearch_kernel.workspace.notebook import SANDBOX
from autoresearch_kernel.workspace.runfolder import RUNS

TEMPLATE = Path(__file__).resolve().parents[2] / SANDBOX
DEFAULT_OUT = Path(RUNS) / "once"
# Whole-notebook wall-clock limit: the gpu profile's 300 s budget, compile and evaluation fit well inside.
TIMEOUT_S = 1800.0


def run_once(
    notebook: str | Path = TEMPLATE,
    out_dir: str | Path = DEFAULT_OUT,
    profile: str = "cpu",
    data_dir: str | None = None,
    device: str = "auto",
    seed: int = 0,
    budget_seconds: float = 0.0,
    budget_tokens: int = 0,
    timeout_s: float = TIMEOUT_S,
    budget_flops: float = 0.0,
) -> RunResult:
    """Execute `notebook` once into `out_dir`; AutoresearchError when it did not finish with a val_bpb."""
    notebook, out_dir = Path(notebook), Path(out_dir).resolve()
    if not notebook.is_file():
        raise AutoresearchError(f"no notebook at {notebook}; pass --notebook PATH")
    out_dir.mkdir(parents=True, exist_ok=True)
    # The user's own run of their notebook: trusted, so the kernel evaluates (as when run by hand).
    parameters = ExperimentParameters(
        profile=profile,
        # resolved here: the kernel's environment has its own HOME and none of the user's variables
        data_dir=str(Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()),
        device=device,
        seed=seed,
        budget_seconds=float(budget_seconds),
        budget_tokens=int(budget_tokens),
        budget_flops=float(budget_flops),
        metrics_path=str(out_dir / "metrics.json"),
    )
    result = run_notebook(notebook, out_dir / notebook.name, parameters.for_papermill(), timeout_s=timeout_s,
                          cwd=out_dir)
    if not result.ok:
        tail = f"\n{result.traceback_tail}" if result.traceback_tail else ""
        raise AutoresearchError(f"the experiment failed ({result.failure}); see {result.output_path}{tail}")
    return result


def summary_of(result: RunResult) -> str:
    """The summary block of a finished run, rebuilt from its metrics.json."""
    return summary(Metrics(**result.metrics))
