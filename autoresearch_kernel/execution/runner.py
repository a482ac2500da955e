"""Runs one notebook in a fresh kernel under a whole-notebook wall-clock limit: the only caller of papermill.

A `Kernel` is one process tree, inside the caller's jail (integrity/jail.py) when one is given, with the
allow-listed environment of integrity/environment.py either way (never the loop's own): the kernel host
(kernel_host.py), which starts a Jupyter kernel, may warm it with trusted code, and then runs exactly one
notebook through papermill when `Kernel.run` names it. `run_notebook` starts one and runs it at once (a cold
start); the loop's lanes start the next experiment's kernel while the current one runs (execution/warm.py),
so that its imports and data are ready when the candidate arrives.

At the limit (or on an abort) the whole process tree, kernel included, is killed: papermill's own timeout is
per cell, and the kernel lives in a process session of its own. The executed notebook is always left at the
output path, whatever happened, so that it can be read in the morning.

A jailed run runs under its jail's resource limits (integrity/limits.py): the runner also watches the run
folder's size, and a run that hit a limit is a crash named by it (`memory limit 6.0 GB`) whose large files are
removed. What the run left is read as untrusted (runresult.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from autoresearch_kernel.execution.runresult import OVER_BUDGET, RunFiles, RunResult, read_result, traceback_tail
from autoresearch_kernel.integrity import limits as resource_limits
from autoresearch_kernel.integrity.environment import experiment_env
from autoresearch_kernel.integrity.jail import Jail
from autoresearch_kernel.integrity.usage import TreeMeter

__all__ = ["Kernel", "RunResult", "kill_tree", "run_notebook", "traceback_tail"]

# How often the runner looks at the child: bounds the delay of a timeout or an abort.
POLL_SECONDS = 0.2
LIMIT_CHECK_SECONDS = 1.0  # how often a jailed run's folder size and fork refusals are looked at

# papermill saves the output notebook this often during a long cell, so a killed run still shows progress.
AUTOSAVE_SECONDS = 10

HOST_LOG = "kernel.log"  # a kernel's log before it knows its run's name (then renamed to <run>.log)


class Kernel:
    """One kernel host, started now in `cwd` (the kernel's working folder, in `jail` when given), that runs
    exactly one notebook. `warm_up`: trusted code the kernel runs before it is given the notebook.

    Use: `Kernel(...).run(notebook, output, ...)` once; `close()` a kernel that will not be used."""

    def __init__(self, cwd: str | os.PathLike, env: dict[str, str], jail: Jail | None = None, warm_up: str = "",
                 log_path: Path | None = None):
        self.cwd = Path(cwd)
        self.log_path = Path(log_path or self.cwd / HOST_LOG)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "autoresearch_kernel.execution.kernel_host",
                   "--autosave", str(AUTOSAVE_SECONDS), "--warm-up", warm_up]
        self.confinement = None
        if jail is not None:
            command = dataclasses.replace(jail, cwd=self.cwd).command(command)
            self.confinement = jail.confine()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,  # the one request; nothing else ever flows into the jail
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,  # its own group, so a Ctrl-C at the loop's terminal is ours to handle
                **(self.confinement.popen_options() if self.confinement else {}),
            )
        self.meter = TreeMeter(self.process.pid)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, notebook: str | os.PathLike, output: str | os.PathLike, parameters: dict | None = None,
            timeout_s: float = 600.0, cancel: threading.Event | None = None,
            cpu_ceiling_s: float | None = None) -> RunResult:
        """Execute `notebook` into `output` (both where the kernel can reach them) with `parameters`, killing it
        after `timeout_s` seconds of wall time from now; `cancel` aborts it at once; past `cpu_ceiling_s` CPU
        seconds of its tree it is stopped as over its budget (an `OverBudget` crash). The kernel is done after.

        The harness inside writes its metrics to the `METRICS_PATH` parameter (relative to the kernel's folder
        when relative); unless the caller names one, it is `output` with the suffix `.metrics.json`."""
        notebook, output = Path(notebook), Path(output)
        parameters = dict(parameters or {})
        metrics = self.cwd / parameters.setdefault("METRICS_PATH", str(output.with_suffix(".metrics.json")))
        files = RunFiles(notebook, output, metrics)
        # A metrics file left by an earlier attempt must never be mistaken for this run's.
        metrics.unlink(missing_ok=True)
        if self.log_path != files.log:  # the log, open in the host, follows the run's name
            os.replace(self.log_path, files.log)
            self.log_path = files.log
        started = time.monotonic()
        try:
            self._send({"notebook": str(notebook), "output": str(output), "parameters": parameters})
            stopped_by = _wait(self.process, started + timeout_s, cancel, self.meter,
                               self._watch(output.parent, cpu_ceiling_s))
            wall_seconds = time.monotonic() - started
            if self.confinement is None:
                return _measured(read_result(files, self.process.returncode, stopped_by, wall_seconds, timeout_s,
                                             cpu_ceiling_s), self.meter)
            self.confinement.kill()  # nothing of the jail may still run while its folder is read
            hit = stopped_by if stopped_by not in (None, "timeout", "aborted", OVER_BUDGET) else None
            result = read_result(files, self.process.returncode, "timeout" if hit else stopped_by, wall_seconds,
                                 timeout_s, cpu_ceiling_s)
            return _measured(_limited(result, self.confinement, hit), self.meter)
        finally:
            self.close()

    def _watch(self, folder: Path, cpu_ceiling_s: float | None):
        """What the runner checks every few seconds while the run runs: its CPU seconds against the ceiling,
        then the jail's limits (the name of what it passed, or None)."""
        def watch() -> str | None:
            if cpu_ceiling_s is not None and self._cpu_seconds() > cpu_ceiling_s:
                return OVER_BUDGET
            return self.confinement.watch(folder) if self.confinement else None

        return watch if cpu_ceiling_s is not None or self.confinement else None

    def _cpu_seconds(self) -> float:
        """The tree's CPU seconds so far: its jail's cgroup's count where there is one (exact, whatever escaped
        the tree), else the runner's samples."""
        counted = self.confinement.usage().cpu_seconds if self.confinement else None
        return counted if counted is not None else self.meter.cpu_seconds

    def close(self) -> None:
        """Kill what still runs of this kernel's tree and release its limits (a kernel is never reused)."""
        if self.alive:
            kill_tree(self.process.pid)
            self.process.wait()
        if self.process.stdin and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:  # the host is gone: its pipe with it
                pass
        if self.confinement is not None:
            self.confinement.close()

    def _send(self, request: dict) -> None:
        """The one request; the pipe stays open until `close`, the host's sign that the loop still runs."""
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except OSError:  # the host died while it waited: its exit status and log say why
            pass


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
    """Execute `notebook` into `output` with `parameters` in a kernel started now (in `cwd`, default the
    notebook's folder), killing it after `timeout_s` seconds of wall time; see `Kernel.run`.

    `jail`: run the kernel inside it (its writable folder must hold `output`). `threads`: the kernel's
    torch/BLAS thread count (lanes sharing a CPU)."""
    notebook, output = Path(notebook), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    kernel = Kernel(Path(cwd or notebook.parent), experiment_env(device, threads=threads), jail,
                    log_path=output.with_suffix(".log"))
    return kernel.run(notebook, output, parameters, timeout_s, cancel)


def _measured(result: RunResult, meter: TreeMeter) -> RunResult:
    """The CPU seconds the run's whole process tree used, for the budget's verification: its jail's cgroup's
    count where the limits use one (exact), else the runner's samples of the tree (integrity/usage.py)."""
    counted = result.usage.cpu_seconds if result.usage is not None else None
    seconds = counted if counted is not None else meter.cpu_seconds
    return dataclasses.replace(result, cpu_seconds=round(seconds, 2))


def _limited(result: RunResult, confinement, hit: str | None) -> RunResult:
    """The result with the jail's usage; a crash named by the limit it hit (`hit`: the one the runner stopped
    it for), its large files removed."""
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
