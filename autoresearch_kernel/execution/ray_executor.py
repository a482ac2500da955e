"""The Ray executor (`--executor ray`): each experiment runs on some node of a Ray cluster, with its lane's resources.

Ray does what a home-made distribution would have to: it places work by resources (a GPU, a share of cores)
on whichever node has room, ships the notebook and the files both ways, and says when a worker or a node
died. The loop stays where it is (the repository, git, results.tsv, the gate); only runs travel.

    loop side (RayExecutor, called by a lane's thread)          node side (LaneWorker, one Ray actor per lane)
    job -> the candidate notebook's text + the run's settings   start: same package and data as the loop?
        ----------------------------------------------------->  run: launch.run_experiment in the jail, in a
                                                                     node-local folder; score (warm scorer)
        <-----------------------------------------------------  the run's files + its RunResult
    files -> run_folder.experiment(n, commit)/, RunResult there, `node` set

The actor is threaded (two calls at once), so that `abort` reaches it while `run` runs: the runner's cancel
flag then kills the jailed process tree. A worker or node lost mid-run (the actor's process killed, the node
gone) costs one retry on a new actor; lost again, the run is a crash whose reason says so. Either way the
loop gets exactly one outcome per job. Ray is an optional extra: only this module imports it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import nbformat
import ray
from ray import exceptions as ray_errors

import autoresearch_kernel
from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.execution.lanes import Job, Lane
from autoresearch_kernel.execution.ray_node import (
    MAX_FILE_BYTES,
    Expected,
    LaneWorker,
    NodeInfo,
    Order,
    Shipped,
    package_fingerprint,
    prepared_data,
)
from autoresearch_kernel.execution.runner import POLL_SECONDS, RunResult
from autoresearch_kernel.execution.spec import ExperimentSpec
from autoresearch_kernel.integrity import scorer
from autoresearch_kernel.workspace.runfolder import RunFolder

# A worker that does not come up within this long (no node has room, a slow first prepare of the data, a
# package import on a cold disk) stops the loop with a message; the run is not lost (a resume runs it).
START_TIMEOUT_S = 600.0
# After the loop's abort, how long the worker has to stop its run and answer before it is killed.
ABORT_GRACE_S = 30.0
# Past the run's own limit, the scorer's and this, a silent worker is taken for lost (a node cut off).
SILENCE_S = 300.0
RETRIES = 1  # a run whose worker died runs once more on a new worker
SCORER_S = scorer.START_TIMEOUT_S + scorer.TIMEOUT_S  # the node's scorer may take this long on top of the run
CONNECT_S = 10.0  # how long the cluster's address has to accept a connection
CLOSE_S = 10.0  # at the end, how long the workers have to stop their scorers and remove their folders



class WorkerSilent(Exception):
    """A worker that said nothing past every limit of its run: taken for lost (its node cut off)."""


# What a lost worker or node looks like from the loop (a RayActorError whose actor failed to start is not).
LOST = (ray_errors.RayActorError, ray_errors.WorkerCrashedError, ray_errors.NodeDiedError,
        ray_errors.ObjectLostError, ray_errors.LocalRayletDiedError, WorkerSilent)


# -- the loop side ---------------------------------------------------------------------------------------
class RayExecutor:
    """`execute(job, lane, cancel) -> RunResult` on a Ray cluster, for `lanes.Lanes`; `close()` at the end."""

    def __init__(self, spec: ExperimentSpec, address: str | None, run_folder: RunFolder, lanes: list[Lane],
                 checks=None):
        self.spec, self.run_folder = spec, run_folder
        self.checks = checks  # the loop's integrity hooks: its Guard says whether runs are scored outside
        self._workers: dict[int, tuple[object, NodeInfo]] = {}  # lane index -> (actor, where it runs)
        self._expected: Expected | None = None
        self._lock = threading.Lock()  # lane threads: the first one works out what the nodes must hold
        self._scoring = threading.Lock()  # checks that score on the loop side do it one run at a time
        self._connected = connect(address)
        try:
            check_room(lanes)
        except AutoresearchError:
            self.close()
            raise

    # -- one job (a lane's thread) ------------------------------------------------------------------------
    def __call__(self, job: Job, lane: Lane, cancel) -> RunResult:
        order = Order(job, self.run_folder.candidate(job.number, job.commit).read_text(encoding="utf-8"),
                      self.spec, lane.threads)
        lost = None
        for _ in range(1 + RETRIES):
            if cancel.is_set():
                return self._aborted(job)
            try:
                worker = self._worker(lane, cancel)
                if worker is None:
                    return self._aborted(job)
                shipped = self._run(worker, lane, order, cancel)
            except LOST as error:
                self._drop(lane)
                if cancel.is_set():  # killed on purpose, or lost while aborting: either way, no row
                    return self._aborted(job)
                lost = error
                continue
            if shipped is None:
                return self._aborted(job)
            return self._unpack(job, shipped, worker[1].node)
        return self._lost(job, lost)

    def _worker(self, lane: Lane, cancel) -> tuple[object, NodeInfo] | None:
        """The lane's actor, started (and checked) on first use or after a loss; None when cancelled meanwhile."""
        if lane.index in self._workers:
            return self._workers[lane.index]
        actor = LaneWorker.options(**resources(lane)).remote(self._expect(), lane)
        reference = actor.start.remote()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ray.wait([reference], timeout=POLL_SECONDS)[0]:
            if cancel.is_set() or time.monotonic() > deadline:
                _kill(actor)
                if cancel.is_set():
                    return None
                raise AutoresearchError(
                    f"no node of the Ray cluster started {lane.label} ({_needs(lane)}) within {START_TIMEOUT_S:.0f} s: "
                    "add a node with room, or lower --lanes; then resume the tag")
        try:
            info = _get(reference)
        except BaseException as error:
            _kill(actor)  # a node that does not match, or a worker that died while it started
            if isinstance(error, ray_errors.RayActorError) and getattr(error, "actor_init_failed", False):
                raise AutoresearchError(
                    f"{lane.label}'s Ray worker could not start on its node ({_first_line(error)}): install this "
                    "version of autoresearch_kernel, with its ray extra, on every node") from None
            raise
        self._workers[lane.index] = (actor, info)
        return actor, info

    def _run(self, worker, lane: Lane, order: Order, cancel) -> Shipped | None:
        """Run the order on the worker, passing on the loop's abort; None when an aborted worker had to be killed."""
        actor, _ = worker
        reference = actor.run.remote(order)
        deadline = time.monotonic() + order.timeout_s + SILENCE_S + SCORER_S
        aborting = False
        while not ray.wait([reference], timeout=POLL_SECONDS)[0]:
            if cancel.is_set() and not aborting:
                actor.abort.remote(order.job.number)
                aborting, deadline = True, time.monotonic() + ABORT_GRACE_S
            if time.monotonic() > deadline:
                self._drop(lane)
                if aborting:
                    return None
                raise WorkerSilent(f"no answer within {order.timeout_s + SILENCE_S + SCORER_S:.0f} s")
        return _get(reference)

    def _unpack(self, job: Job, shipped: Shipped, node: str) -> RunResult:
        """The node's files written into the run folder, and the result pointing there (scored, unless aborted)."""
        folder = self._fresh_folder(job)
        for name, data in shipped.files.items():
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for name, size in shipped.left.items():
            (folder / f"{name}.not-copied.txt").write_text(
                f"{name}: {size:,} bytes, more than the Ray executor copies back ({MAX_FILE_BYTES:,}); it was "
                f"written on node {node} and removed there with the run's folder\n", encoding="utf-8")
        result = dataclasses.replace(shipped.result, output_path=folder / shipped.result.output_path.name,
                                     log_path=folder / shipped.result.log_path.name, node=node)
        if result.status == "aborted" or self.checks is None:
            return result
        with self._scoring:
            if not self._expect().scored_outside:
                return self.checks.score(result)
            record = getattr(self.checks, "record", None)  # scored on the node: the Guard keeps the record
            if record is not None:
                record(result, shipped.measured)
            return result

    def _aborted(self, job: Job) -> RunResult:
        folder = self.run_folder.experiment(job.number, job.commit)
        return RunResult("aborted", None, 0.0, folder / f"{folder.name}.ipynb", folder / f"{folder.name}.log",
                         "Aborted", "the run was aborted by the user")

    def _lost(self, job: Job, error: BaseException) -> RunResult:
        """A crash whose reason says that the worker died twice, with the candidate as its notebook."""
        folder = self._fresh_folder(job)
        message = (f"lost: the Ray worker died {1 + RETRIES} times while running it (its process killed, out of "
                   f"memory, or its node gone): {_first_line(error)}")
        output, log = folder / f"{folder.name}.ipynb", folder / f"{folder.name}.log"
        notebook = nbformat.reads(self.run_folder.candidate(job.number, job.commit).read_text(encoding="utf-8"),
                                  as_version=4)
        notebook.cells.append(nbformat.v4.new_markdown_cell(f"**Not run to its end**: {message}"))
        nbformat.write(notebook, output)
        log.write_text(f"{error}\n", encoding="utf-8")
        return RunResult("crash", None, 0.0, output, log, "WorkerLost", message)

    def _fresh_folder(self, job: Job) -> Path:
        folder = self.run_folder.experiment(job.number, job.commit)
        shutil.rmtree(folder, ignore_errors=True)  # what an interrupted attempt left
        folder.mkdir(parents=True)
        return folder

    def _drop(self, lane: Lane) -> None:
        """Forget (and kill, if it still runs) the lane's worker: the next run starts a new one."""
        worker = self._workers.pop(lane.index, None)
        if worker is not None:
            _kill(worker[0])

    def _expect(self) -> Expected:
        """What the nodes must hold, worked out at the first run (the Guard decides on scoring by then)."""
        with self._lock:
            if self._expected is None:
                self._expected = Expected(
                    autoresearch_kernel.__version__, package_fingerprint(), self.spec.data_dir, self.spec.profile,
                    prepared_data(self.spec.data_dir, self.spec.profile), self.spec.jailed,
                    getattr(self.checks, "scored_outside", None) is True)
            return self._expected

    # -- the end ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the workers (their scorers, their folders), and the connection this executor made."""
        workers, self._workers = list(self._workers.values()), {}
        stopping = [actor.close.remote() for actor, _ in workers]
        if stopping:
            ray.wait(stopping, num_returns=len(stopping), timeout=CLOSE_S)
        for actor, _ in workers:
            _kill(actor)
        if self._connected:
            ray.shutdown()
            self._connected = False


def connect(address: str | None) -> bool:
    """Join the cluster at `address` (else $RAY_ADDRESS, else a local Ray); True when this call connected."""
    if ray.is_initialized():  # the user's own session (a notebook): used, and left to them
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    where = address or "a local Ray instance"
    fix = "start it with `ray start --head`, or give its address with --ray-address"
    # ray.init keeps retrying an address where nothing listens, for minutes: ask it first (HOST:PORT only)
    host, _, port = (address or "").rpartition(":")
    if host and port.isdigit() and "://" not in host:
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_S).close()
        except OSError as error:
            raise AutoresearchError(f"nothing answers at {address} ({error.strerror or error}): {fix}") from None
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise AutoresearchError(f"cannot join the Ray cluster at {where} ({_first_line(error)}): {fix}") from None
    return True


def resources(lane: Lane) -> dict:
    """The actor's resources: a GPU for a cuda lane, else the lane's share of cores."""
    return {"num_gpus": 1} if lane.device.startswith("cuda") else {"num_cpus": lane.threads or 1}


def _needs(lane: Lane) -> str:
    return "1 GPU" if lane.device.startswith("cuda") else f"{lane.threads or 1} CPU"


def check_room(lanes: list[Lane]) -> None:
    """AutoresearchError when the cluster cannot hold the lanes at once (a worker would wait forever)."""
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    for kind, key in (("CPU", "num_cpus"), ("GPU", "num_gpus")):
        needs = [resources(lane).get(key, 0) for lane in lanes]
        if not any(needs):
            continue
        largest = max((node.get(kind, 0) for node in nodes), default=0)
        total = sum(node.get(kind, 0) for node in nodes)
        if max(needs) > largest or sum(needs) > total:
            raise AutoresearchError(
                f"the Ray cluster has {total:g} {kind} ({largest:g} on its largest node) but the {len(lanes)} lanes "
                f"need {sum(needs):g} ({max(needs):g} on one node): lower --lanes, or add nodes")


def _get(reference):
    """ray.get, with the project's own errors raised on a node (a node that does not match) as themselves."""
    try:
        return ray.get(reference)
    except ray_errors.RayTaskError as error:
        if isinstance(error.cause, AutoresearchError):
            raise AutoresearchError(str(error.cause)) from None
        raise


def _kill(actor) -> None:
    try:
        ray.kill(actor)
    except (ValueError, ray_errors.RayError):  # already gone
        pass


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]
