"""Runs one notebook in a fresh kernel under a whole-notebook wall-clock limit: the only caller of papermill.

papermill and its kernel run together inside the caller's jail (integrity/jail.py) when one is given, with
the allow-listed environment of integrity/environment.py either way: never the loop's own.

papermill's own timeout is per cell, and killing papermill alone leaves its kernel running (the kernel
lives in a process session of its own). So papermill runs as a child process here, and at the limit (or on
an abort) the whole process tree, kernel included, is killed. The executed notebook is always left at the
output path, whatever happened, so that it can be read in the morning.

A jailed run runs under its jail's resource limits (integrity/limits.py): the runner also watches the run
folder's size, and a run that hit a limit is a crash named by it (`memory limit 6.0 GB`) whose large files are
removed. Everything read back from the run folder is read as untrusted (integrity/untrusted.py): no link
followed, regular files only, capped, and every string cleaned.
"""
from __future__ import annotations

import dataclasses
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

from autoresearch_kernel.integrity import limits as resource_limits
from autoresearch_kernel.integrity import untrusted
from autoresearch_kernel.integrity.environment import experiment_env
from autoresearch_kernel.integrity.jail import Jail
from autoresearch_kernel.integrity.usage import TreeMeter

# How often the runner looks at the child: bounds the delay of a timeout or an abort.
POLL_SECONDS = 0.2
LIMIT_CHECK_SECONDS = 1.0  # how often a jailed run's folder size and fork refusals are looked at

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
    # measured on the trusted side, for the budget's verification (integrity/budget.py)
    cpu_seconds: float | None = None  # CPU time of the whole reaped process tree (integrity/usage.py)
    forward_flops_per_token: float | None = None  # the exported program's, counted by the scorer
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
    confinement = None
    if jail is not None:
        command = jail.command(command)
        confinement = jail.confine()
    started = time.monotonic()
    try:
        with open(log_path, "wb") as log:
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own group, so a Ctrl-C at the loop's terminal is ours to handle
                **(confinement.popen_options() if confinement else {}),
            )
            meter = TreeMeter(child.pid)
            watch = (lambda: confinement.watch(output.parent)) if confinement else None
            stopped_by = _wait(child, started + timeout_s, cancel, meter, watch)
        wall_seconds = time.monotonic() - started
        if confinement is None:
            return _measured(_finish(notebook, output, log_path, metrics_path, child.returncode, stopped_by,
                                     wall_seconds, timeout_s), meter)
        confinement.kill()  # nothing of the jail may still run while its folder is read
        hit = stopped_by if stopped_by not in (None, "timeout", "aborted") else None
        result = _finish(notebook, output, log_path, metrics_path, child.returncode,
                         "timeout" if hit else stopped_by, wall_seconds, timeout_s)
        return _measured(_limited(result, confinement, hit), meter)
    finally:
        if confinement is not None:
            confinement.close()


def _measured(result: RunResult, meter: TreeMeter) -> RunResult:
    """The CPU seconds the run's whole process tree used, for the budget's verification: its jail's cgroup's
    count where the limits use one (exact), else the runner's samples of the tree (integrity/usage.py)."""
    counted = result.usage.cpu_seconds if result.usage is not None else None
    seconds = counted if counted is not None else meter.cpu_seconds
    return dataclasses.replace(result, cpu_seconds=round(seconds, 2))


def _limited(result: RunResult, confinement, hit: str | None) -> RunResult:
    """The result with the jail's usage; a crash named by the limit it hit (`hit`: the one the runner stopped
    it for), its large files removed."""
    import dataclasses

    usage = confinement.usage()
    text = " ".join(filter(None, [result.error_name, result.error_message, result.traceback_tail]))
    limit = hit or (confinement.exceeded(text, result.output_path.parent) if result.status != "aborted" else None)
    if not limit:
        return dataclasses.replace(result, usage=usage)
    removed = resource_limits.remove_large_files(result.output_path.parent)
    detail = f"; its large files were removed ({', '.join(removed[:5])})" if removed else ""
    return dataclasses.replace(result, status="crash", metrics=None, usage=usage, limit=limit,
                               error_name="ResourceLimit", error_message=f"{limit}: the run hit its jail's "
                               f"{limit.rsplit(' limit', 1)[0]} limit and was stopped{detail}")


def _finish(notebook: Path, output: Path, log_path: Path, metrics_path: Path, returncode: int,
            stopped_by: str | None, wall_seconds: float, timeout_s: float) -> RunResult:
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
    return _result(returncode, wall_seconds, output, log_path, metrics_path)


def _wait(child: subprocess.Popen, deadline: float, cancel: threading.Event | None, meter: TreeMeter,
          watch=None) -> str | None:
    """Wait for the child, sampling its tree's CPU time at each poll; kill its tree at the deadline, on cancel,
    or when `watch()` names a limit hit. Returns why it was stopped ("timeout", "aborted", the limit's name),
    if it was."""
    next_check = time.monotonic() + LIMIT_CHECK_SECONDS
    try:
        while True:
            meter.sample()
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
            if watch is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + LIMIT_CHECK_SECONDS
                hit = watch()
                if hit:
                    kill_tree(child.pid)
                    child.wait()
                    return hit
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


def _note_stop(notebook: Path, output: Path, why: str, timeout_s: float) -> None:
    """Leave a readable executed notebook even when papermill was killed, and say in it what happened."""
    try:
        nb = _read_notebook(output)
    except Exception:  # killed before its first save, or mid-write, or a planted link: keep the source
        nb = nbformat.read(notebook, as_version=4)
    text = (
        f"**Stopped by the runner**: ran past its {timeout_s:.0f} s wall-clock limit; the kernel was killed."
        if why == "timeout"
        else "**Stopped by the runner**: aborted by the user; the kernel was killed."
    )
    nb.cells.append(nbformat.v4.new_markdown_cell(text))
    untrusted.write_text(output, nbformat.writes(nb))
