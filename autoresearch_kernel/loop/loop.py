"""The experiment loop: propose, check, commit, run on a free lane, score, decide, record, keep or revert; forever.

One `Loop` object serves the CLI, the dashboard and the tests. Its work, experiment by experiment:

    baseline (until done): run the unmodified notebook on each baseline seed; their mean is the first best
    propose   (intake.py) the proposer edits the best notebook (or, after a crash, the crashed one), told
              what runs now and what every run tried (the idea memory); a reply that does not apply, or a
              duplicate of an experiment already run or running, is recorded in invalid.tsv, not run
    commit    one commit on top of the best, in git only (the branch and worktree move when one is kept)
    CHECK     checks.check_candidate: a fast pre-filter; a reason refuses it before anything runs (a crash row)
    run       on a free lane (lanes.py): in the jail, under the wall-clock limit, on the lane's device, in
              its own folder runs/<tag>/notebooks/<n>-<commit>/ (locally, or as a Ray task on some node)
    SCORE     the task's scorer measures what the experiment handed over outside its jail (the only metric)
    decide    in the order runs finish (settle.py): the gate's decision against the best of that moment; a
              borderline gain is re-run first ("confirm"); a candidate that beats the best after the best
              moved on from its parent is re-applied onto the new best and run again ("rebase")
    record    the rows appended to results.tsv (atomically), then keep (branch moves) or revert

With one lane (the default) this is the sequential loop it always was: each experiment, its confirmation
runs included, ends before the next proposal. The parts live next door, one job each: the settings
(`settings`), the run's rows in memory (`records`), the live status (`events`), the lanes and their
scheduler (`lanes`), taking in proposals (`intake`), launching one experiment (`launch`), deciding and
recording one (`settle`), resuming
after a stop (`recovery`, `runstate`). A SIGKILL anywhere leaves results.tsv, the branch and state.json in a
state that `Loop(LoopConfig.resumed(repo, tag))` completes, with the settings the run was started with.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.execution.lanes import Job, Lane, Lanes, Outcome, plan_lanes
from autoresearch_kernel.execution.launch import choose_sandbox, run_experiment, warm_kernels
from autoresearch_kernel.execution.runner import RunResult
from autoresearch_kernel.harness.prepare import default_data_dir
from autoresearch_kernel.journal import memory, records, runstate
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.journal.rows import Marks, RowBuilder
from autoresearch_kernel.journal.runstate import LaneStatus, LoopStatus, Pending
from autoresearch_kernel.loop import settings
from autoresearch_kernel.loop.events import Event, Reporter
from autoresearch_kernel.loop.guard import Checks, Guard, RunContext
from autoresearch_kernel.loop.intake import Asking, Intake
from autoresearch_kernel.loop.ledger import Ledger
from autoresearch_kernel.loop.recovery import recover
from autoresearch_kernel.loop.settings import LoopConfig
from autoresearch_kernel.loop.settle import Settler, Yardstick
from autoresearch_kernel.proposers import Proposer, make_proposer
from autoresearch_kernel.workspace.worktree import Workspace

__all__ = ["Checks", "Event", "Loop", "LoopConfig"]

POLL_SECONDS = 0.2  # how often the loop looks at its lanes, its stop and abort requests


class _Cancel:
    """The runs' cancel flag: set by `Loop.abort()` or by an `abort` file from another process."""

    def __init__(self, flag: threading.Event, abort_file: Path):
        self.flag, self.abort_file = flag, abort_file

    def is_set(self) -> bool:
        return self.flag.is_set() or self.abort_file.exists()


class Loop:
    """The keep/revert loop of one run tag. Holds the tag's lock from construction to `close()`.

    Thread use: `run()` (or `step()`) in one thread; `stop()`, `abort()`, `status` and `close()` from any.
    The runs themselves go on in the lanes' threads (each waits on its jailed process or its Ray task).
    """

    def __init__(
        self,
        config: LoopConfig,
        proposer: Proposer | None = None,
        checks: Checks | None = None,
        on_event: Callable[[Event], None] | None = None,
    ):
        self.config = config
        self.task = config.task_spec  # the workload: its notebook, metric, scorer and budget
        self.workspace = Workspace.open(config.repo, config.tag, resume=config.resume, sandbox=self.task.sandbox,
                                        source=self.task.source or None)
        self.run_folder = self.workspace.folder
        self.folder = self.run_folder.path
        self.results_path, self.invalid_path = self.run_folder.results, self.run_folder.invalid
        self.notebooks = self.run_folder.notebooks
        self._lock = runstate.TagLock(self.folder)
        self._lock.acquire(config.tag)
        self._stop, self._abort = threading.Event(), threading.Event()
        self.scheduler: Lanes | None = None
        self.kernels = None  # the lanes' kernels started ahead (execution/warm.py)
        self.memory: memory.Memory | None = None
        self.status = LoopStatus(tag=config.tag, pid=os.getpid(), started_at=time.time(),
                                 budget_seconds=config.budget_seconds, budget_tokens=config.budget_tokens,
                                 budget_flops=config.budget_flops,
                                 timeout_s=config.run_timeout())
        try:
            self.data_dir = str(Path(config.data_dir).expanduser().resolve()) if config.data_dir else str(default_data_dir())
            changes = settings.check_resume(self.run_folder, config, self.data_dir) if config.resume else []
            self.proposer = proposer or make_proposer(config.proposer, **config.options_for_proposer(self.folder))
            self.jailed, self.sandbox_warning = choose_sandbox(config.sandbox, config.proposer)
            self.spec = config.experiment_spec(self.data_dir, self.jailed)
            self.checks = checks or Guard()
            self.lanes = plan_lanes(config.lanes, config.devices, config.device)
            for path in (self.run_folder.stop, self.run_folder.abort):  # left by an earlier process: not for us
                path.unlink(missing_ok=True)
            settings.store(self.run_folder, config, self.data_dir, changes)
            self.memory = memory.Memory.open(self.workspace.root)  # every run's ideas, for novelty and prompts
            self.records = records.Records(self.run_folder, config.profile, config.gate)
            self._reporter = Reporter(self.run_folder, self.status, self.records, on_event)
            self.state = runstate.load_state(self.folder)
            recover(self.workspace, self.state, self.records)
            self._save()
            self.ledger = Ledger(config.tag, self.run_folder, self.state, self.records, self.memory, self._reporter,
                                 RowBuilder(self.run_folder, self._marks()))
            self.settler = Settler(self.ledger, self.workspace, Yardstick.of(config), self.checks.check_candidate,
                                   self.proposer.feedback)
            self.intake = Intake(self.ledger, self.workspace, self.proposer, Asking.of(config),
                                 self.checks.check_candidate, self.settler.refused)
            self.scheduler = self._lanes()
            self._show_lanes()
            self.settler.settle_waiting()  # runs a kill left saved without their rows
            changed = ", ".join(f"{c['setting']} {c['was']!r} -> {c['now']!r}" for c in changes)
            self.set_phase("idle", ("resumed" + (f" with {changed}" if changed else "")) if config.resume else "started")
        except BaseException:
            self._release()
            raise

    @property
    def on_event(self) -> Callable[[Event], None] | None:
        return self._reporter.on_event

    @on_event.setter
    def on_event(self, observer: Callable[[Event], None] | None) -> None:
        self._reporter.on_event = observer

    def _lanes(self) -> Lanes:
        """The lanes and how a run is executed on them: as a Ray task (scored on its node), or here in a kernel
        started ahead and scored by the loop's scorer, the lane's next run training meanwhile where no figure
        can change for it (not under a time budget). Rows and decisions come in the order runs are scored, so
        with one lane a proposal may be made before the last run's decision: a keep that lands meanwhile makes
        it stale, and the stale rule re-applies it onto the new best (settle.py), as with several lanes."""
        if self.config.executor == "ray":
            from autoresearch_kernel.execution.ray_executor import RayExecutor  # Ray is an optional extra

            return Lanes(self.lanes, RayExecutor(self.spec, self.config.ray_address, self.run_folder, self.lanes,
                                                 self.checks), self._cancel())
        if self.config.warm_kernels:
            self.kernels = warm_kernels(self.spec, self.run_folder, self.workspace.read_sandbox())
            self.kernels.fill(self.lanes)
        kernels = self.kernels

        def execute(job: Job, lane: Lane, cancel) -> RunResult:
            return run_experiment(self.spec, self.run_folder, job, lane, cancel, kernels)

        def overlap(result: RunResult) -> bool:  # a run the scorer measures: the lane need not wait for it
            return result.ok and self.checks.scored_mark() == "outside"

        overlapped = self.config.overlap_scoring and not self.spec.timed
        return Lanes(self.lanes, execute, self._cancel(), score=self.checks.score,
                     overlap=overlap if overlapped else None)

    # -- control (any thread) -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop once the experiments in flight are finished (their rows are written); start no new ones."""
        self._stop.set()

    def abort(self) -> None:
        """Kill the experiments in flight now and stop; a resume runs them again."""
        self._abort.set()
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or self.run_folder.stop.exists() or self._cancel().is_set()

    def close(self) -> None:
        """Release the tag (the loop cannot be used afterwards). Runs still in flight are killed first."""
        if self.scheduler is not None and self.scheduler.busy:
            self._abort.set()
        for path in (self.run_folder.stop, self.run_folder.abort):
            path.unlink(missing_ok=True)
        if self.status.phase not in ("error",):
            self.set_phase("stopped", self.status.message)
        self.checks.close()
        self._release()

    def _release(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        if self.kernels is not None:
            self.kernels.close()
        if self.memory is not None:
            self.memory.close()
        self.workspace.close()
        self._lock.release()

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the endless run ----------------------------------------------------------------------------------
    def run(self) -> str:
        """Runs experiments on every lane until stopped, aborted, interrupted or `max_experiments` proposals;
        returns why it ended. Stop lets the experiments in flight finish; abort kills them (a resume runs
        them again). A Ctrl-C (KeyboardInterrupt) aborts cleanly, like `abort()`.
        """
        try:
            while True:
                started = self._fill_lanes(owed_only=self.stopping)
                if not self.scheduler.busy:
                    if self.stopping:
                        return self._ended("aborted" if self._cancel().is_set() else "stopped on request")
                    if self._limit_reached() and not self._owed():
                        return self._ended("max experiments reached")
                    if not started:
                        self._stop.wait(POLL_SECONDS)  # paused, or nothing runnable yet
                    continue
                self._collect()
        except KeyboardInterrupt:
            self._abort_flights()
            return self._ended("interrupted")
        except AutoresearchError as error:
            self._abort_flights()
            self.set_phase("error", str(error))
            raise
        except Exception as error:  # a bug or a broken disk: say so where the dashboard looks, then fail
            self._abort_flights()
            self.set_phase("error", f"{type(error).__name__}: {error}; resume the tag once it is fixed")
            raise

    def step(self) -> list[Row]:
        """One unit of work, to its end: a baseline seed, the experiments a stop left in flight, or one
        proposal and its experiment (confirmations and re-applications included). Returns the rows appended."""
        before = len(self.records.rows)
        self._fill_lanes(limit=1)
        while self.scheduler.busy:
            self._collect()
            if not self._cancel().is_set():
                self._fill_lanes(owed_only=True)
        return self.records.rows[before:]

    def _ended(self, why: str) -> str:
        self.set_phase("stopped", why)
        return why

    def _limit_reached(self) -> bool:
        limit = self.config.max_experiments
        return limit is not None and self.status.proposals >= limit

    def _owed(self) -> bool:
        """Work that does not count as a proposal: baseline seeds to run, runs owed by experiments in flight."""
        return bool(self._missing_seeds()) or any(f.owes_run() for f in self.state.flights)

    def _abort_flights(self) -> None:
        """Kill what runs and wait for the lanes to give it back (the flights stay for a resume)."""
        self._abort.set()
        self.scheduler.drain()

    # -- filling the lanes --------------------------------------------------------------------------------
    def _fill_lanes(self, owed_only: bool = False, limit: int | None = None) -> int:
        """Start work on free lanes: runs owed by experiments in flight first, then baseline seeds, then new
        proposals (not while stopping). Returns how many runs it started."""
        started = 0
        while self.scheduler.free() and not self._cancel().is_set() and (limit is None or started < limit):
            self.checks.before_experiment(self.run_context)
            flight = self._next_owed() or (None if owed_only else self._next_new())
            if flight is None:
                break
            if flight.interrupts > self.config.max_interrupts:  # recorded as a crash, not run again
                self.settler.interrupted(flight)
                continue
            self._start(flight, self.scheduler.free()[0])
            started += 1
        return started

    def _next_owed(self) -> Pending | None:
        running = self.scheduler.numbers_running()
        return next((f for f in self.state.flights if f.owes_run() and f.numbers[len(f.runs)] not in running), None)

    def _next_new(self) -> Pending | None:
        missing = self._missing_seeds()
        if missing:
            return self.add_flight(Pending(numbers=[], kind="baseline", commit=self.state.kept,
                                            parent=self.state.kept, description=f"baseline (seed {missing[0]})",
                                            seed=missing[0]))
        if any(f.kind == "baseline" for f in self.state.flights):
            return None  # the best is not known before the baseline's seeds are in
        return None if self._limit_reached() else self.intake.next()

    def _missing_seeds(self) -> list[int]:
        running = {f.seed for f in self.state.flights if f.kind == "baseline"}
        return [s for s in self.records.missing_seeds(self.config.baseline_seeds) if s not in running]

    def add_flight(self, flight: Pending) -> Pending:
        return self.ledger.add_flight(flight)

    def _start(self, flight: Pending, lane: Lane) -> None:
        number = flight.numbers[len(flight.runs)]
        kind = "confirm" if flight.runs else flight.kind
        seed = flight.seed if flight.seed is not None else records.seed_for(self.config.baseline_seeds, len(flight.runs))
        notebook = self.run_folder.candidate(number, flight.commit)  # what the jail reads: no checkout needed
        notebook.parent.mkdir(parents=True, exist_ok=True)
        notebook.write_text(self.workspace.sandbox_text(flight.commit), encoding="utf-8")
        flight.started = len(flight.runs) + 1
        self._save()
        self.scheduler.start(Job(number, flight.commit, seed, kind, flight.queued_at,
                                 timeout_scale=records.TIMEOUT_GROWTH ** flight.retries,
                                 cpu_ceiling_s=self.settler.cpu_ceiling(kind, lane.device, self.spec.task)), lane)
        self._show_lanes()
        message = "confirming on another seed" if kind == "confirm" else ""
        self.set_phase("running", message, experiment=number, kind=kind, description=flight.description)

    def _collect(self) -> list[Row]:
        """Wait a moment for a run to finish; decide and record what it settles."""
        outcome = self.scheduler.next_finished(POLL_SECONDS)
        if outcome is None:
            return []
        self._show_lanes()
        return self._finished(outcome)

    def _finished(self, outcome: Outcome) -> list[Row]:
        flight = self.state.flight_of(outcome.job.number)
        result = outcome.result
        if result.status == "aborted":  # nothing to record: the run waits for a resume
            self.set_phase("stopped" if not self.scheduler.busy else "running",
                            "aborted: the experiments in flight will run again on resume")
            return []
        if result.status == "timeout" and flight.retries < records.TIMEOUT_RETRIES:
            return self._run_again(flight, result)
        if result.ok and not self.scheduler.busy:
            self.set_phase("evaluating", "deciding")
        row = self.ledger.rows.of_run(outcome, flight)
        excerpt = "\n".join(filter(None, [result.failure, result.traceback_tail]))
        return self.settler.run_finished(flight, row, excerpt, result.error_name)

    def _run_again(self, flight: Pending, result) -> list[Row]:
        """A timeout may be a busy machine's (a baseline run passed its limit under load here): not the code's
        fault until it happens again with a longer limit. The run is owed again; nothing is recorded."""
        flight.retries += 1
        flight.started = len(flight.runs)
        flight.queued_at = time.time()
        self.save()
        self.set_phase("running" if self.scheduler.busy else "idle",
                       f"{result.failure}; running it again with {records.TIMEOUT_GROWTH ** flight.retries:g}x the "
                       "limit before blaming the code")
        return []

    # -- pieces -------------------------------------------------------------------------------------------
    @functools.cached_property
    def run_context(self) -> RunContext:
        """What the checks are told of this run, made at the first experiment of this process."""
        baseline = next((r.commit for r in self.records.rows if r.kind == "baseline"), None)
        base = self.workspace.resolve(baseline) if baseline else (self.state.kept or self.workspace.head())
        return RunContext(self.task, self.config.profile, self.config.device, self.data_dir, self.jailed,
                          self.run_folder, self.workspace.read_sandbox(base))

    def _marks(self) -> Marks:
        """What every row of this run says of how it was measured (journal/rows.py builds them all)."""
        metric = self.task.metric
        return Marks(metric.name, metric.direction, "bwrap" if self.jailed else "none", self.checks.scored_mark,
                     self.proposer.name)

    def _cancel(self) -> _Cancel:
        return _Cancel(self._abort, self.run_folder.abort)

    def _save(self) -> None:
        runstate.save_state(self.folder, self.state)

    def save(self) -> None:
        self._save()

    def _show_lanes(self) -> None:
        """The lanes in the live status: what runs on each (the dashboard draws them)."""
        shown = []
        for lane in self.lanes:
            job = self.scheduler.running.get(lane.index) if self.scheduler else None
            flight = self.state.flight_of(job.number) if job else None
            shown.append(dataclasses.asdict(LaneStatus(
                lane.index + 1, lane.device, self.scheduler.node if self.scheduler else "",
                job.number if job else None, job.kind if job else "", flight.description if flight else "",
                self.scheduler.started.get(lane.index, 0.0), self.config.run_timeout())))
        self.status.lanes = shown

    def set_phase(self, phase: str, message: str | None = None, **fields) -> None:
        self._reporter.set_phase(phase, message, **fields)

    def emit(self, **what) -> None:
        self._reporter.emit(**what)
