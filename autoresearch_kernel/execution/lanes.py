"""Lanes: where experiments run at the same time, and the scheduler that keeps them busy.

A lane is one slot for one experiment: a GPU (`cuda:N`), or on a CPU a share of its cores (the kernel's
thread counts are set so that lanes do not fight over them). `plan_lanes` turns `--lanes N` and `--devices`
into lanes. `Lanes` runs one job per free lane, each in a thread of its own that blocks on the executor (a
local jailed run, or a Ray task on some node), and hands back the outcomes in the order they finish.

The executor is a plain function `execute(job, lane, cancel) -> RunResult`: the loop passes the local one
(`launch.run_experiment`, with the loop's scorer as `score`) or `ray_executor.RayExecutor` (which scores on
its node). The scheduler knows nothing of proposals, gates or git: it runs what it is given and says what
finished.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.execution.runner import RunResult


@dataclass(frozen=True)
class Lane:
    """One slot for one experiment at a time."""

    index: int  # 0-based; rows and the dashboard show index + 1
    device: str  # what the experiment is told to use: auto | cpu | cuda:N | mps
    threads: int | None = None  # torch and BLAS threads of the experiment's kernel (None: its default)

    @property
    def label(self) -> str:
        return f"lane {self.index + 1} ({self.device})"


@dataclass(frozen=True)
class Job:
    """One run of one committed notebook: what a lane executes."""

    number: int  # the experiment number its row gets
    commit: str  # full hash
    seed: int
    kind: str  # baseline | candidate | confirm | fix | rebase | pair
    queued_at: float = field(default_factory=time.time)  # epoch seconds it became runnable
    timeout_scale: float = 1.0  # the wall-clock limit's multiple: more for a run again after a timeout
    cpu_ceiling_s: float | None = None  # stopped past these CPU seconds: over its budget (budget.ceiling_seconds)


@dataclass
class Outcome:
    """A finished job: its result (scored), where it ran and when."""

    job: Job
    lane: Lane
    result: RunResult
    node: str  # the machine it ran on (the local host's name, or a Ray node's address)
    started_at: float
    finished_at: float


Execute = Callable[[Job, Lane, object], RunResult]  # (job, lane, cancel) -> RunResult; cancel.is_set()


def plan_lanes(count: int | None, devices: str | None, device: str, cpus: int | None = None) -> list[Lane]:
    """The lanes for `--lanes count` and `--devices` (a comma-separated list of devices, or `all` GPUs).

    Without `--devices` every lane uses the run's `device`; with it, lanes take the devices in turn (more
    lanes than GPUs share them). CPU lanes split the machine's cores evenly; one lane keeps the kernel's
    own default, as the loop always had.
    """
    listed = _devices(devices) if devices else []
    count = count or len(listed) or 1
    if count < 1:
        raise AutoresearchError(f"--lanes must be at least 1, not {count}")
    chosen = [listed[i % len(listed)] for i in range(count)] if listed else [device] * count
    cpus = cpus or os.cpu_count() or 1
    cpu_lanes = sum(1 for d in chosen if not d.startswith("cuda"))
    threads = max(1, cpus // cpu_lanes) if cpu_lanes > 1 else None
    return [Lane(i, d, None if d.startswith("cuda") else threads) for i, d in enumerate(chosen)]


def _devices(spec: str) -> list[str]:
    if spec.strip() == "all":
        count = _gpu_count()
        if not count:
            raise AutoresearchError("--devices all found no GPU: give --devices cpu, or run where GPUs are")
        return [f"cuda:{i}" for i in range(count)]
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        if name not in ("cpu", "mps", "auto") and not (name.startswith("cuda:") and name[5:].isdigit()):
            raise AutoresearchError(f"unknown device {name!r} in --devices: use cuda:N, cpu, mps or all")
    if not names:
        raise AutoresearchError("--devices is empty: give a list such as cuda:0,cuda:1, or all")
    return names


def _gpu_count() -> int:
    import torch  # only when asked for `all`: the loop itself never needs torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class _Released:
    """A lane's run has ended and its result is being scored: the lane may take the next job."""

    lane: Lane
    job: Job


class Lanes:
    """The lanes and the jobs running on them. One thread (the loop's) submits and collects.

    `execute(job, lane, cancel)` runs a job; `score(result)`, when given, scores a run's result on this machine
    (one at a time: one scorer). Where `overlap(result)` says so, a lane takes its next job while its last run
    is scored: the next experiment trains while the last one is measured (the loop allows it where that
    cannot change a figure, under a token, FLOP or evaluation budget, and where there is scoring to hide)."""

    def __init__(self, lanes: list[Lane], execute: Execute, cancel, node: str | None = None,
                 score: Callable[[RunResult], RunResult] | None = None,
                 overlap: Callable[[RunResult], bool] | None = None):
        self.lanes, self.execute, self.cancel = lanes, execute, cancel
        self.score, self.overlap = score, overlap
        self.node = node or os.uname().nodename
        self.running: dict[int, Job] = {}  # lane index -> the job on it
        self.started: dict[int, float] = {}  # lane index -> when its job started
        self.scoring: dict[int, Job] = {}  # experiment number -> a job whose run ended, being scored
        self._finished: queue.Queue[Outcome | _Released | BaseException] = queue.Queue()
        self._futures: list[Future] = []
        self._scorer = threading.Lock()
        # a lane's thread may still score its last run while the lane's next job runs in another thread
        self._pool = ThreadPoolExecutor(max_workers=2 * len(lanes), thread_name_prefix="lane")

    def free(self) -> list[Lane]:
        return [lane for lane in self.lanes if lane.index not in self.running]

    @property
    def busy(self) -> bool:
        return bool(self.running or self.scoring)

    def numbers_running(self) -> set[int]:
        return {job.number for job in self.running.values()} | set(self.scoring)

    def start(self, job: Job, lane: Lane) -> None:
        """Run `job` on the free `lane`; its outcome comes out of `next_finished`."""
        if lane.index in self.running:
            raise RuntimeError(f"{lane.label} is busy")
        self.running[lane.index] = job
        self.started[lane.index] = time.time()
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._pool.submit(self._run, job, lane, self.started[lane.index]))

    def _run(self, job: Job, lane: Lane, started: float) -> None:
        try:
            result = self.execute(job, lane, self.cancel)
            if self.score is not None and result.status != "aborted":
                if self.overlap is not None and self.overlap(result):
                    self._finished.put(_Released(lane, job))
                with self._scorer:
                    result = self.score(result)
            node = result.node or self.node
            self._finished.put(Outcome(job, lane, result, node, started, time.time()))
        except BaseException as error:  # a bug in an executor: the loop re-raises it in its own thread
            error.lane, error.job = lane, job  # type: ignore[attr-defined]
            self._finished.put(error)

    def next_finished(self, timeout: float) -> Outcome | None:
        """The next outcome in the order they finish, or None after `timeout` seconds without one (or after a
        lane was freed for its next job while its last run is scored)."""
        try:
            item = self._finished.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, _Released):
            self._free(item.lane, item.job)
            self.scoring[item.job.number] = item.job
            return None
        self.scoring.pop(item.job.number, None)
        self._free(item.lane, item.job)
        if isinstance(item, BaseException):
            raise item
        return item

    def _free(self, lane: Lane, job: Job) -> None:
        if self.running.get(lane.index) == job:  # not the next job the lane took meanwhile
            self.running.pop(lane.index)
            self.started.pop(lane.index, None)

    def drain(self) -> list[Outcome]:
        """Wait until every job has returned (after an abort, the executors stop them) and free the lanes;
        returns their outcomes, unread. Robust to an interrupt in `next_finished` that lost an outcome."""
        wait(self._futures)
        outcomes = []
        while not self._finished.empty():
            item = self._finished.get()
            if isinstance(item, Outcome):
                outcomes.append(item)
        self.running.clear()
        self.started.clear()
        self.scoring.clear()
        return outcomes

    def close(self) -> None:
        """Wait for the jobs still running (an abort has told them to stop), release the threads, then what the
        executor holds (a Ray executor's workers and connection)."""
        self._pool.shutdown(wait=True)
        close = getattr(self.execute, "close", None)
        if close is not None:
            close()
