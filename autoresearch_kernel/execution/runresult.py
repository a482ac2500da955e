"""What a finished notebook run produced, read from its folder as untrusted: `RunResult`.

Everything read back from the run folder is read as untrusted (integrity/untrusted.py): no link followed,
regular files only, capped, and every string cleaned. The executed notebook is always left at the output
path, whatever happened (a kill included), so that it can be read in the morning.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autoresearch_kernel.integrity import limits as resource_limits
from autoresearch_kernel.integrity import untrusted

TRACEBACK_TAIL_LINES = 15


@dataclass
class RunResult:
    """What one execution of a notebook produced."""

    status: str  # "ok" | "crash" | "timeout" | "aborted" | "suspect" (scored below the profile's floor)
    metrics: dict | None  # the harness's metrics.json, when it was written
    wall_seconds: float
    output_path: Path  # the executed notebook, always present
    log_path: Path  # everything the notebook printed, as it printed it
    error_name: str | None = None
    error_message: str | None = None
    traceback_tail: str | None = None
    node: str = ""  # the machine it ran on, when not this one (a Ray node)
    # measured on the trusted side, for the budget's verification (integrity/budget.py)
    cpu_seconds: float | None = None  # CPU time of the whole reaped process tree (integrity/usage.py)
    forward_flops_per_token: float | None = None  # the exported program's, counted by the scorer
    forward_us_per_token: float | None = None  # the scorer's compute microseconds per token of its evaluation
    # -- resource limits (integrity/limits.py) --
    usage: resource_limits.Usage | None = None  # CPU seconds and peak memory of the jail, where measured
    limit: str = ""  # the limit the run hit, named ("memory limit 6.0 GB"), or ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def failure(self) -> str | None:
        """One line saying why the run failed, or None when it did not."""
        if self.ok:
            return None
        if self.error_name:
            return f"{self.status}: {self.error_name}: {self.error_message or ''}".strip().rstrip(":")
        return self.status


@dataclass(frozen=True)
class RunFiles:
    """Where one run's notebook comes from and what it leaves, all in the run's own folder but the source."""

    source: Path  # the notebook executed
    output: Path  # the executed notebook
    metrics: Path  # the harness's metrics.json (its METRICS_PATH)

    @property
    def log(self) -> Path:
        """Everything the run printed, as it printed it."""
        return self.output.with_suffix(".log")


OVER_BUDGET = "over-budget"  # stopped by the runner past its CPU ceiling (budget.ceiling_seconds)
OVER_BUDGET_ERROR = "OverBudget"  # the error name of such a run (a crash the loop settles over-budget)


def read_result(files: RunFiles, returncode: int, stopped_by: str | None, wall_seconds: float,
                timeout_s: float, cpu_ceiling_s: float | None = None) -> RunResult:
    """The result of a run whose processes are all gone: stopped (`stopped_by`: timeout, aborted or
    over-budget), or ended with `returncode`, its figures and its first error read from its folder."""
    if stopped_by:
        why = {"timeout": f"the notebook ran past its {timeout_s:.0f} s wall-clock limit and was killed",
               "aborted": "the run was aborted by the user",
               OVER_BUDGET: f"the run passed {cpu_ceiling_s or 0:.0f} CPU seconds, more than any run on its "
                            "budget may spend, and was stopped"}[stopped_by]
        _note_stop(files.source, files.output, why)
        return RunResult(
            status="crash" if stopped_by == OVER_BUDGET else stopped_by,
            metrics=None,
            wall_seconds=wall_seconds,
            output_path=files.output,
            log_path=files.log,
            error_name={"timeout": "Timeout", "aborted": "Aborted", OVER_BUDGET: OVER_BUDGET_ERROR}[stopped_by],
            error_message=why,
        )
    return _result(returncode, wall_seconds, files.output, files.log, files.metrics)


def _result(returncode: int, wall_seconds: float, output: Path, log_path: Path, metrics_path: Path) -> RunResult:
    metrics = _read_metrics(metrics_path)
    error_name, error_message, traceback_tail = _notebook_error(output)
    if error_name is None and returncode != 0:
        error_name, error_message, traceback_tail = _log_error(log_path)
    refused = _refusals(output.parent, [metrics_path, log_path, output])
    if refused:  # a link, FIFO or device where the run's own files belong: recorded, never followed
        metrics, error_name, error_message = None, "RefusedFile", refused
    if returncode == 0 and metrics is not None and metrics.get("status") == "ok":
        status = "ok"
    else:
        status = "crash"
        if error_name is None:
            if metrics is not None and metrics.get("failure"):
                error_name, error_message = "TrainingFailed", str(metrics["failure"])
            else:
                error_name, error_message = "NoMetrics", "the notebook finished without writing its metrics"
    return RunResult(
        status=status,
        metrics=metrics,
        wall_seconds=wall_seconds,
        output_path=output,
        log_path=log_path,
        error_name=error_name,
        error_message=error_message,
        traceback_tail=traceback_tail,
    )


def _refusals(folder: Path, paths: list[Path]) -> str:
    """Why the run's own files in its folder are refused (not regular files), one clause each; "" if none."""
    found = []
    for path in paths:
        if path.parent != folder:
            continue
        try:
            os.close(untrusted.open_in(folder, path.name))
        except untrusted.RefusedFile as error:
            found.append(str(error))
        except OSError:  # absent: said elsewhere (no metrics, no notebook)
            continue
    return "; ".join(found)


def _read_metrics(path: Path) -> dict | None:
    try:
        metrics = json.loads(untrusted.read_text(path, untrusted.METRICS_BYTES))
    except (OSError, ValueError):  # a link, a FIFO, too large, not JSON: no metrics (the run is a crash)
        return None
    return metrics if isinstance(metrics, dict) else None


def _read_notebook(path: Path) -> nbformat.NotebookNode:
    """The executed notebook, read as untrusted (no link followed, capped); raises when it cannot be."""
    return nbformat.reads(untrusted.read_text(path, untrusted.NOTEBOOK_BYTES), as_version=4)


def traceback_tail(output: Path) -> str | None:
    """The last lines of the first traceback in an executed notebook, or None (for the agent's step)."""
    return _notebook_error(output)[2]


def _notebook_error(output: Path) -> tuple[str | None, str | None, str | None]:
    """The first error output in the executed notebook: (name, message, last lines of traceback)."""
    try:
        nb = _read_notebook(output)
    except untrusted.RefusedFile as error:
        return "RefusedFile", untrusted.clean(error), None
    except Exception:  # a notebook cut short by a kill mid-write is not worth a second error
        return None, None, None
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                lines = untrusted.clean("\n".join(map(str, out.get("traceback", []))), 10 * untrusted.TEXT_CHARS,
                                        tail=True).splitlines()
                return (untrusted.clean(out.get("ename"), 200), untrusted.clean(out.get("evalue")),
                        untrusted.clean("\n".join(lines[-TRACEBACK_TAIL_LINES:]), tail=True))
    return None, None, None


def _log_error(log_path: Path) -> tuple[str | None, str | None, str | None]:
    """papermill's own complaint (a dead kernel, a bad notebook) from the end of its log."""
    try:
        lines = untrusted.read_text(log_path, untrusted.LOG_TAIL_BYTES, tail=True).splitlines()
    except OSError:
        return None, None, None
    tail = [untrusted.clean(line, 500) for line in lines[-TRACEBACK_TAIL_LINES:]]
    for line in reversed(tail):
        match = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)):\s*(.*)$", line.strip())
        if match:
            return match.group(1).rsplit(".", 1)[-1], match.group(2), "\n".join(tail)
    return "KernelDied", (tail[-1] if tail else "papermill exited without a message"), "\n".join(tail)


def _note_stop(notebook: Path, output: Path, why: str) -> None:
    """Leave a readable executed notebook even when papermill was killed, and say in it what happened."""
    try:
        nb = _read_notebook(output)
    except Exception:  # killed before its first save, or mid-write, or a planted link: keep the source
        nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell(f"**Stopped by the runner**: {why}."))
    untrusted.write_text(output, nbformat.writes(nb))
