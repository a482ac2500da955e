"""Runs one notebook in a fresh kernel under a whole-notebook wall-clock limit: the only caller of papermill.

papermill and its kernel run together inside the caller's jail (integrity/jail.py) when one is given, with
the allow-listed environment of integrity/environment.py either way: never the loop's own.

papermill's own timeout is per cell, and killing papermill alone leaves its kernel running (the kernel
lives in a process session of its own). So papermill runs as a child process here, and at the limit (or on
an abort) the whole process tree, kernel included, is killed. The executed notebook is always left at the
output path, whatever happened, so that it can be read in the morning.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil

from autoresearch_kernel.integrity.environment import experiment_env
from autoresearch_kernel.integrity.jail import Jail
from autoresearch_kernel.text import ANSI_ESCAPE

# How often the runner looks at the child: bounds the delay of a timeout or an abort.
POLL_SECONDS = 0.2

# papermill saves the output notebook this often during a long cell, so a killed run still shows progress.
AUTOSAVE_SECONDS = 10

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


def run_notebook(
    notebook: str | os.PathLike,
    output: str | os.PathLike,
    parameters: dict | None = None,
    timeout_s: float = 600.0,
    cwd: str | os.PathLike | None = None,
    device: str | None = None,
    cancel: threading.Event | None = None,
    jail: Jail | None = None,
    threads: int | None = None,
) -> RunResult:
    """Execute `notebook` into `output` with `parameters`, killing it after `timeout_s` seconds of wall time.

    The harness inside the notebook writes its metrics to the `METRICS_PATH` parameter; unless the caller
    names one, it is `output` with the suffix `.metrics.json`. Setting `cancel` aborts the run at once.
    `jail`: run papermill and the kernel inside it (its writable folder must hold `output`). `threads`: the
    kernel's torch/BLAS thread count (lanes sharing a CPU).
    """
    notebook, output = Path(notebook), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    parameters = dict(parameters or {})
    metrics_path = Path(parameters.setdefault("METRICS_PATH", str(output.with_suffix(".metrics.json"))))
    log_path = output.with_suffix(".log")
    # A metrics file left by an earlier attempt must never be mistaken for this run's.
    metrics_path.unlink(missing_ok=True)

    command = [
        sys.executable, "-m", "papermill", str(notebook), str(output),
        "--parameters_yaml", json.dumps(parameters),  # JSON is YAML: no quoting surprises
        "--kernel", "python3",
        "--cwd", str(Path(cwd or notebook.parent)),
        "--log-output", "--no-progress-bar",
        "--autosave-cell-every", str(AUTOSAVE_SECONDS),
    ]
    env = experiment_env(device, threads=threads)
    if jail is not None:
        command = jail.command(command)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own group, so a Ctrl-C at the loop's terminal is ours to handle
        )
        stopped_by = _wait(child, started + timeout_s, cancel)
    wall_seconds = time.monotonic() - started

    if stopped_by:
        _note_stop(notebook, output, stopped_by, timeout_s)
        return RunResult(
            status=stopped_by,
            metrics=None,
            wall_seconds=wall_seconds,
            output_path=output,
            log_path=log_path,
            error_name="Timeout" if stopped_by == "timeout" else "Aborted",
            error_message=(
                f"the notebook ran past its {timeout_s:.0f} s wall-clock limit and was killed"
                if stopped_by == "timeout"
                else "the run was aborted by the user"
            ),
        )
    return _result(child.returncode, wall_seconds, output, log_path, metrics_path)


def _wait(child: subprocess.Popen, deadline: float, cancel: threading.Event | None) -> str | None:
    """Wait for the child; kill its tree at the deadline or on cancel. Returns why it was stopped, if it was."""
    try:
        while True:
            try:
                child.wait(timeout=POLL_SECONDS)
                return None
            except subprocess.TimeoutExpired:
                pass
            if cancel is not None and cancel.is_set():
                kill_tree(child.pid)
                child.wait()
                return "aborted"
            if time.monotonic() >= deadline:
                kill_tree(child.pid)
                child.wait()
                return "timeout"
    except BaseException:
        # KeyboardInterrupt or any error in the caller: never leave a kernel running behind us.
        kill_tree(child.pid)
        child.wait()
        raise


def kill_tree(pid: int) -> None:
    """Kill a process and every descendant, the kernel in its own session included."""
    try:
        root = psutil.Process(pid)
        # Collect first: once the parent dies its children are re-parented and harder to find.
        tree = root.children(recursive=True) + [root]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=5)


def _result(returncode: int, wall_seconds: float, output: Path, log_path: Path, metrics_path: Path) -> RunResult:
    metrics = _read_metrics(metrics_path)
    error_name, error_message, traceback_tail = _notebook_error(output)
    if error_name is None and returncode != 0:
        error_name, error_message, traceback_tail = _log_error(log_path)
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


def _read_metrics(path: Path) -> dict | None:
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def traceback_tail(output: Path) -> str | None:
    """The last lines of the first traceback in an executed notebook, or None (for the agent's step)."""
    return _notebook_error(output)[2]


def _notebook_error(output: Path) -> tuple[str | None, str | None, str | None]:
    """The first error output in the executed notebook: (name, message, last lines of traceback)."""
    try:
        nb = nbformat.read(output, as_version=4)
    except Exception:  # a notebook cut short by a kill mid-write is not worth a second error
        return None, None, None
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                lines = [ANSI_ESCAPE.sub("", line) for line in out.get("traceback", [])]
                text = "\n".join(lines).splitlines()
                return out.get("ename"), out.get("evalue"), "\n".join(text[-TRACEBACK_TAIL_LINES:])
    return None, None, None


def _log_error(log_path: Path) -> tuple[str | None, str | None, str | None]:
    """papermill's own complaint (a dead kernel, a bad notebook) from the end of its log."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None, None, None
    tail = [ANSI_ESCAPE.sub("", line) for line in lines[-TRACEBACK_TAIL_LINES:]]
    for line in reversed(tail):
        match = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)):\s*(.*)$", line.strip())
        if match:
            return match.group(1).rsplit(".", 1)[-1], match.group(2), "\n".join(tail)
    return "KernelDied", (tail[-1] if tail else "papermill exited without a message"), "\n".join(tail)


def _note_stop(notebook: Path, output: Path, why: str, timeout_s: float) -> None:
    """Leave a readable executed notebook even when papermill was killed, and say in it what happened."""
    try:
        nb = nbformat.read(output, as_version=4)
    except Exception:  # killed before its first save, or mid-write: keep the source at least
        nb = nbformat.read(notebook, as_version=4)
    text = (
        f"**Stopped by the runner**: ran past its {timeout_s:.0f} s wall-clock limit; the kernel was killed."
        if why == "timeout"
        else "**Stopped by the runner**: aborted by the user; the kernel was killed."
    )
    nb.cells.append(nbformat.v4.new_markdown_cell(text))
    tmp = output.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, output)
