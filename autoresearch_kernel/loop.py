"""The experiment loop: propose, check, commit, run, verify, decide, record, keep or revert; forever.

One `Loop` object serves the CLI, the dashboard and the tests. One step:

    baseline (until done): run the unmodified notebook on each baseline seed; their mean is the first best
    propose   the proposer edits the last kept notebook (or, after a crash, the crashed one with its
              traceback); a reply that does not apply is recorded in invalid.tsv: no commit, no experiment
    commit    one commit on autoresearch/<tag>, in the run's own worktree
    CHECK     checks.check_candidate: a fast pre-filter; a reason refuses it before anything runs (a crash row)
    run       runner.run_notebook in the jail (integrity/jail.py) under the wall-clock limit; the executed
              notebook and all the run wrote in its own folder runs/<tag>/notebooks/<n>-<commit>/
    SCORE     checks.score: the scorer measures the exported model outside the jail (the only metric)
    decide    gate.decide; a borderline gain is re-run on the next seed first ("confirm")
    record    the rows appended to results.tsv (atomically), then keep (branch stays) or revert

Resumable from disk (see `runstate`): a SIGKILL anywhere leaves results.tsv, the branch and state.json in a
state that `Loop(config with resume=True)` completes: a row written but not yet acted on is acted on, an
experiment cut short is run again (once; then it is recorded as a crash), the worktree is cleaned.
"""
from __future__ import annotations

import dataclasses
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psutil

from autoresearch_kernel import gate, results, runstate
from autoresearch_kernel.integrity import Candidate, Checks, Guard, jail
from autoresearch_kernel.errors import AutoresearchError, ProposalError, ProposerUnavailable, WorkspaceError
from autoresearch_kernel.harness.data import training_files
from autoresearch_kernel.harness.parameters import ExperimentParameters
from autoresearch_kernel.harness.prepare import default_data_dir
from autoresearch_kernel.proposers import HistoryEntry, Proposal, ProposalContext, Proposer, Usage, make_proposer, usage_of
from autoresearch_kernel.results import Row
from autoresearch_kernel.runner import RunResult, kill_tree, run_notebook
from autoresearch_kernel.runstate import FixRequest, LoopStatus, Pending, State
from autoresearch_kernel.workspace import Workspace, short

PROGRAM = "program.md"  # the human's instructions, read from the run's worktree
FAILURE_EXCERPT_CHARS = 3000  # how much of a crash's traceback a fix proposal sees


@dataclass
class LoopConfig:
    """One run's settings; `runs/<tag>/config.json` keeps a copy for the record."""

    repo: Path = Path(".")
    tag: str = ""
    data_dir: str | None = None  # prepared data folder; None: the harness's default
    profile: str = "cpu"  # cpu | gpu: must match the prepared data
    budget_seconds: float = 0.0  # training seconds per experiment; 0: the profile's default
    budget_tokens: int = 0  # a fixed token budget instead (deterministic); excludes budget_seconds
    max_experiments: int | None = None  # proposals this process makes (invalid ones count); None: forever
    baseline_seeds: tuple[int, ...] = (0, 1, 2)  # the unmodified notebook runs once per seed first
    gate: gate.GateConfig = field(default_factory=gate.GateConfig)
    timeout_s: float | None = None  # wall-clock limit of one run; None: derived from the budget
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    proposer: str = "mutate"  # mutate | llm
    proposer_options: dict = field(default_factory=dict)  # passed to make_proposer (model, base_url, ...)
    fix_attempts: int | None = None  # fix proposals a crashed fresh idea gets; None: 1 if the proposer
    # `fixes_crashes`, else 0 (the offline proposer edits numbers only: it would spend a proposal saying so)
    resume: bool = False  # continue an existing tag; False refuses one
    pause_seconds: float = 60.0  # after ProposerUnavailable, wait this long before asking again
    max_interrupts: int = 1  # an experiment cut short more often than this is recorded as a crash
    sandbox: bool = True  # run experiments in the bubblewrap jail; False only on the user's explicit say

    def __post_init__(self) -> None:
        self.repo = Path(self.repo).resolve()
        self.baseline_seeds = tuple(int(s) for s in self.baseline_seeds)
        if self.budget_seconds and self.budget_tokens:
            raise AutoresearchError("give either a seconds budget or a tokens budget, not both")
        if not self.baseline_seeds or len(set(self.baseline_seeds)) != len(self.baseline_seeds):
            raise AutoresearchError(f"baseline seeds must be distinct and at least one: {self.baseline_seeds}")

    def run_timeout(self) -> float:
        """The whole-notebook limit: the reference's 10 minutes for a 300 s budget, scaled with the budget.

        Twice the budget, and at least the budget plus two minutes for start-up and evaluation, which do
        not shrink with a small budget. A token budget uses the profile's seconds as its scale.
        """
        if self.timeout_s:
            return float(self.timeout_s)
        budget = self.budget_seconds
        if not budget:
            from autoresearch_kernel.harness.profiles import get_profile

            budget = get_profile(self.profile).budget_seconds
        return max(2.0 * budget, budget + 120.0)


@dataclass(frozen=True)
class Event:
    """What the loop tells its observer (dashboard, CLI) at every phase change and every row."""

    phase: str  # runstate.PHASES
    status: LoopStatus  # a snapshot of the live status
    rows: tuple[Row, ...] = ()  # rows just appended to results.tsv
    invalid: Row | None = None  # a proposal just recorded as invalid


# Proposers whose edits are the project's own code (not a model's): they may run without the jail, with a
# warning, where bubblewrap is missing. Every other proposer's code runs jailed or not at all.
TRUSTED_PROPOSERS = ("mutate",)


class _Cancel:
    """The runner's cancel flag: set by `Loop.abort()` or by an `abort` file from another process."""

    def __init__(self, flag: threading.Event, abort_file: Path):
        self.flag, self.abort_file = flag, abort_file

    def is_set(self) -> bool:
        return self.flag.is_set() or self.abort_file.exists()


class Loop:
    """The keep/revert loop of one run tag. Holds the tag's lock from construction to `close()`.

    Thread use: `run()` (or `step()`) in one thread; `stop()`, `abort()`, `status` and `close()` from any.
    """

    def __init__(
        self,
        config: LoopConfig,
        proposer: Proposer | None = None,
        checks: Checks | None = None,
        on_event: Callable[[Event], None] | None = None,
    ):
        self.config = config
        self.workspace = Workspace.open(config.repo, config.tag, resume=config.resume)
        self.folder = self.workspace.run_dir
        self.results_path = self.folder / "results.tsv"
        self.invalid_path = self.folder / "invalid.tsv"
        self.notebooks = self.folder / "notebooks"
        self._lock = runstate.TagLock(self.folder)
        self._lock.acquire(config.tag)
        self._stop, self._abort = threading.Event(), threading.Event()
        self.status = LoopStatus(tag=config.tag, pid=os.getpid(), started_at=time.time(),
                                 budget_seconds=config.budget_seconds, budget_tokens=config.budget_tokens,
                                 timeout_s=config.run_timeout())
        try:
            self.proposer = proposer or make_proposer(config.proposer, **config.proposer_options)
            self.jailed, self.sandbox_warning = self._choose_sandbox()
            self.data_dir = str(Path(config.data_dir).expanduser().resolve()) if config.data_dir else str(default_data_dir())
            self.checks = checks or Guard()
            self.on_event = on_event
            for name in (runstate.STOP, runstate.ABORT):  # left by an earlier process: not meant for us
                (self.folder / name).unlink(missing_ok=True)
            runstate.write_json(self.folder / "config.json", _jsonable(dataclasses.asdict(config)))
            results.ensure_file(self.results_path)
            self.state = runstate.load_state(self.folder)
            self._recover()
            self._set_phase("idle", "resumed" if config.resume else "started")
        except BaseException:
            self.workspace.close()
            self._lock.release()
            raise

    def _choose_sandbox(self) -> tuple[bool, str]:
        """(jailed, warning): the jail where it can be made; else run a trusted proposer's edits unjailed
        with a warning, and refuse a model's code unless the user said --no-sandbox."""
        if not self.config.sandbox:
            return False, "running WITHOUT the sandbox (--no-sandbox): experiment code can reach this machine"
        reason = jail.unavailable_reason()
        if reason is None:
            return True, ""
        if self.config.proposer in TRUSTED_PROPOSERS:
            return False, f"running WITHOUT the sandbox: {reason}"
        raise AutoresearchError(
            f"the {self.config.proposer} proposer runs model-written code, which needs the sandbox: {reason}; "
            "or pass --no-sandbox to run it unsandboxed at your own risk")

    # -- control (any thread) -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop after the experiment in progress (its rows are written)."""
        self._stop.set()

    def abort(self) -> None:
        """Kill the experiment in progress now and stop; a resume runs it again."""
        self._abort.set()
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or (self.folder / runstate.STOP).exists() or self._cancel().is_set()

    def close(self) -> None:
        """Release the tag (the loop cannot be used afterwards)."""
        for name in (runstate.STOP, runstate.ABORT):
            (self.folder / name).unlink(missing_ok=True)
        if self.status.phase not in ("error",):
            self._set_phase("stopped", self.status.message)
        self.checks.close()
        self.workspace.close()
        self._lock.release()

    def __enter__(self) -> "Loop":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the endless run ----------------------------------------------------------------------------------
    def run(self) -> str:
        """Steps until stopped, aborted, interrupted or `max_experiments` proposals; returns why it ended.

        A Ctrl-C (KeyboardInterrupt) aborts the experiment in progress cleanly, like `abort()`.
        """
        try:
            while not self.stopping:
                limit = self.config.max_experiments
                if limit is not None and self.status.proposals >= limit and not self._unfinished():
                    return self._ended("max experiments reached")
                self.step()
            return self._ended("aborted" if self._cancel().is_set() else "stopped on request")
        except KeyboardInterrupt:
            self._abort.set()
            return self._ended("interrupted")
        except AutoresearchError as error:
            self._set_phase("error", str(error))
            raise
        except Exception as error:  # a bug or a broken disk: say so where the dashboard looks, then fail
            self._set_phase("error", f"{type(error).__name__}: {error}; resume the tag once it is fixed")
            raise

    def _ended(self, why: str) -> str:
        self._set_phase("stopped", why)
        return why

    def step(self) -> list[Row]:
        """One unit of work: a baseline seed, or one proposal and its experiment. Returns the rows appended."""
        self.checks.before_experiment(self)
        rows = results.read_rows(self.results_path)
        missing = self._missing_baseline_seeds(rows)
        if missing:
            return self._baseline(missing[0], rows)
        if self.state.pending is not None:  # cut short earlier: run it (again)
            return self._finish_pending(rows)
        return self._propose_and_run(rows)

    def _unfinished(self) -> bool:
        """Work that does not count as a proposal: baseline seeds to run, an interrupted experiment."""
        rows = results.read_rows(self.results_path)
        return bool(self._missing_baseline_seeds(rows)) or self.state.pending is not None

    # -- baseline -----------------------------------------------------------------------------------------
    def _missing_baseline_seeds(self, rows: list[Row]) -> list[int]:
        done = {r.seed for r in rows if r.kind == "baseline" and r.status == "keep"}
        return [seed for seed in self.config.baseline_seeds if seed not in done]

    def _baseline(self, seed: int, rows: list[Row]) -> list[Row]:
        number = _next_number(rows)
        commit = self.state.kept or self.workspace.head()
        self.state.kept = commit
        self._save()
        self._set_phase("running", f"baseline seed {seed}", experiment=number, kind="baseline",
                        description=f"baseline (seed {seed})")
        result = self._run(number, commit, seed)
        if result is None:
            return []
        row = self._row_from(result, number, "baseline", commit, commit, seed, f"baseline (seed {seed})")
        earlier = [r.val_bpb for r in rows if r.kind == "baseline" and r.status == "keep"]
        done = len(earlier) + 1 == len(self.config.baseline_seeds)
        decision = gate.baseline_decision(earlier + [row.val_bpb], self.config.gate) if done else None
        if not result.ok:
            row = dataclasses.replace(row, status="crash")
        elif decision is not None:
            noise = gate.noise_floor(earlier + [row.val_bpb])
            row = dataclasses.replace(row, margin=decision.margin, best=decision.best, noise_std=noise.std)
        self._append([row])
        self.workspace.reset_to(commit)
        if not result.ok:
            raise AutoresearchError(
                f"the unmodified notebook crashed on baseline seed {seed} ({row.failure}); see "
                f"{self.folder / row.notebook}; fix the notebook or the data, then resume the tag"
            )
        return [row]

    # -- one proposal -------------------------------------------------------------------------------------
    def _propose_and_run(self, rows: list[Row]) -> list[Row]:
        fix = self.state.fix
        kind = "fix" if fix else "candidate"
        base = self.workspace.read_sandbox(fix.commit if fix else None)
        context = ProposalContext(
            program=self._program(), notebook=base, history=self._history(rows),
            failure=fix.failure if fix else None, best_val_bpb=_best(rows),
            profile=self.config.profile, device=self.config.device,
        )
        self._set_phase("proposing", "asking for a fix" if fix else "", experiment=None, kind=kind, description="")
        try:
            proposal = self.proposer.propose(context)
        except ProposerUnavailable as error:
            self._pause(str(error))
            return []
        except ProposalError as error:
            self.status.proposals += 1
            if fix and fix.attempts_left > 1:  # an unusable fix reply spends one attempt
                self.state.fix = dataclasses.replace(fix, attempts_left=fix.attempts_left - 1)
            else:
                self.state.fix = None
            self._save()
            self._record_invalid(str(error), usage_of(error), kind)
            return []
        self.status.proposals += 1
        # attempts a crash of this candidate may still get: a fresh idea gets the configured number
        fixes_left = fix.attempts_left - 1 if fix else self.config.fix_attempts
        if fixes_left is None:  # the default: one fix, from a proposer that can read a traceback
            fixes_left = 1 if self.proposer.fixes_crashes else 0
        self.state.fix = None
        self._set_phase("checking", "", description=proposal.description)
        try:
            commit = self.workspace.commit_sandbox(proposal.notebook, proposal.description)
        except ProposalError as error:
            self._save()
            self._record_invalid(str(error), proposal.usage, kind, proposal.description)
            return []
        self.state.pending = Pending(numbers=[_next_number(rows)], kind=kind, commit=commit, parent=self.state.kept,
                                     description=proposal.description, usage=dataclasses.asdict(proposal.usage),
                                     fixes_left=fixes_left)
        self._save()
        return self._finish_pending(rows, proposal)

    def _finish_pending(self, rows: list[Row], proposal: Proposal | None = None) -> list[Row]:
        """Run the pending candidate's remaining runs, decide, record, keep or revert."""
        pending = self.state.pending
        candidate = Candidate(pending.numbers[0], pending.kind, pending.commit, pending.parent,
                              pending.description, self.workspace.sandbox, self.workspace)
        proposal = proposal or Proposal(pending.description, self.workspace.read_sandbox(pending.commit),
                                        Usage(**pending.usage))
        best, noise_std = _best(rows), _noise_std(rows) or 0.0
        done = runstate.pending_rows(pending)

        def crash(reason: str) -> gate.Decision:
            return gate.Decision("crash", None, best, gate.margin_for(noise_std, self.config.gate), None, reason)

        if pending.interrupts > self.config.max_interrupts:
            return self._settle(candidate, proposal, done, crash(
                "interrupted: the loop stopped during this experiment more than once"), fixable=False)
        reason = self.checks.check_candidate(candidate) if not done else None  # CHECK before running
        if reason:
            return self._settle(candidate, proposal, done, crash(f"integrity: {reason}"), fixable=False)
        excerpt = ""
        while True:
            decision = gate.decide(best, [r.val_bpb for r in done], noise_std, self.config.gate) if done else None
            if decision is not None and decision.status != "confirm":
                return self._settle(candidate, proposal, done, decision, excerpt=excerpt)
            if len(done) == len(pending.numbers):
                pending.numbers.append(_next_number(rows, pending))
                self._save()
            number, seed, kind = pending.numbers[len(done)], self._seed_for(len(done)), "confirm" if done else pending.kind
            self._set_phase("running", "confirming on another seed" if done else "", experiment=number, kind=kind,
                            description=pending.description)
            result = self._run(number, pending.commit, seed)
            if result is None:  # aborted: the pending experiment waits for a resume
                return []
            row = self._row_from(result, number, kind, pending.commit, pending.parent, seed, pending.description,
                                 proposal.usage if not done else Usage())
            excerpt = "\n".join(filter(None, [result.failure, result.traceback_tail]))
            done.append(row)
            pending.runs = [dataclasses.asdict(r) for r in done]
            self._save()

    def _settle(self, candidate: Candidate, proposal: Proposal, done: list[Row], decision: gate.Decision,
                fixable: bool = True, excerpt: str = "") -> list[Row]:
        """Write the candidate's rows with the final status, then keep or revert, then forget the pending."""
        status, pending = decision.status, self.state.pending
        noise_std = _noise_std(results.read_rows(self.results_path))
        runs = done or [self._crash_row(candidate, decision.reason, proposal.usage)]
        rows = [dataclasses.replace(row, status=status, margin=decision.margin, best=decision.best,
                                    noise_std=noise_std, failure=row.failure or ("" if status == "keep" else decision.reason))
                for row in runs]
        self._append(rows)
        self._apply(candidate.commit, candidate.number, status)
        if status == "discard":  # a discarded run's weights are never needed again (GPU ones are large)
            for row in rows:
                for suffix in (".checkpoint.pt", ".program.pt2"):
                    (self.folder / row.notebook).with_suffix(suffix).unlink(missing_ok=True)
        if status == "crash" and fixable and pending.fixes_left > 0:
            failure = results.redact(excerpt or rows[-1].failure)[-FAILURE_EXCERPT_CHARS:]
            self.state.fix = FixRequest(candidate.commit, candidate.description, failure, pending.fixes_left)
        self.state.pending = None
        self._save()
        self.proposer.feedback(proposal, status)
        return rows

    def _apply(self, commit: str, number: int, status: str) -> None:
        """Keep: the branch stays on the commit. Otherwise keep it under a ref and go back to the last kept."""
        if status == "keep":
            self.workspace.reset_to(commit)  # also cleans whatever the run left in the worktree
            self.state.kept = commit
        else:
            self.workspace.discard(commit, number, self.state.kept)

    # -- pieces -------------------------------------------------------------------------------------------
    def _run(self, number: int, commit: str, seed: int) -> RunResult | None:
        """Execute the committed notebook; None when the run was aborted (nothing to record)."""
        name = f"{number:04d}-{short(commit)}"
        folder = self.notebooks / name  # the one folder the experiment may write
        shutil.rmtree(folder, ignore_errors=True)  # what an interrupted attempt left
        folder.mkdir(parents=True)
        output = folder / f"{name}.ipynb"
        device = self.config.device
        parameters = ExperimentParameters(
            profile=self.config.profile,
            data_dir=self.data_dir,
            # the runner narrows CUDA_VISIBLE_DEVICES to the assigned GPU, which the kernel sees as cuda
            device="cuda" if device.startswith("cuda:") else device,
            seed=seed,
            budget_seconds=float(self.config.budget_seconds),
            budget_tokens=int(self.config.budget_tokens),
            metrics_path=str(output.with_suffix(".metrics.json")),
            evaluate=False,  # the scorer measures the model, outside the jail
        )
        cell_jail = None
        if self.jailed:  # read-only: the candidate and the training split; writable: its own folder
            readonly = (self.workspace.sandbox, *training_files(self.data_dir, self.config.profile))
            cell_jail = jail.Jail(readonly=readonly, writable=(folder,), gpu=device.startswith("cuda"))
        result = run_notebook(
            self.workspace.sandbox, output, parameters.for_papermill(), timeout_s=self.config.run_timeout(),
            cwd=folder, device=device if device.startswith("cuda") or device == "cpu" else None,
            cancel=self._cancel(), jail=cell_jail,
        )
        if result.status == "aborted":
            self._save()
            self.workspace.reset_to(self.workspace.head())
            self._set_phase("stopped", "aborted: the experiment will run again on resume")
            return None
        if result.ok:
            self._set_phase("evaluating", "the scorer measures the model outside the jail")
        return self.checks.score(result)

    def _row_from(self, result: RunResult, number: int, kind: str, commit: str, parent: str, seed: int,
                  description: str, usage: Usage = Usage()) -> Row:
        metrics = result.metrics or {}  # written by the kernel: figures only, and only when they are numbers
        value = _figure(metrics, "val_bpb") if result.ok else None
        memory = _figure(metrics, "peak_vram_mb")
        ok = result.ok and value is not None
        return Row(
            commit=short(commit), val_bpb=value if ok else None, memory_gb=memory / 1024 if memory and ok else None,
            status="keep" if ok else "crash", description=description, experiment=number, kind=kind,
            parent=short(parent), seed=seed, wall_seconds=result.wall_seconds,
            training_seconds=_figure(metrics, "training_seconds") or 0.0,
            tokens_m=_figure(metrics, "total_tokens_M") or 0.0,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd,
            notebook=str(result.output_path.relative_to(self.folder)),
            failure=result.failure or ("" if ok else "crash: the run reported no val_bpb"),
            sandbox=self._sandbox_mark(), proposer="" if kind == "baseline" else self.proposer.name,
        )

    def _sandbox_mark(self) -> str:
        return "bwrap" if self.jailed else "none"

    def _crash_row(self, candidate: Candidate, reason: str, usage: Usage) -> Row:
        """The row of a candidate that was never run (refused by a check, or interrupted too often)."""
        return Row(short(candidate.commit), None, None, "crash", candidate.description, experiment=candidate.number,
                   kind=candidate.kind, parent=short(candidate.parent), seed=self._seed_for(0),
                   prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                   cost_usd=usage.cost_usd, failure=reason, sandbox=self._sandbox_mark(),
                   proposer=self.proposer.name)

    def _seed_for(self, run_index: int) -> int:
        """A candidate runs on the first baseline seed; confirmations on the next ones, then beyond."""
        seeds = self.config.baseline_seeds
        return seeds[run_index] if run_index < len(seeds) else max(seeds) + run_index - len(seeds) + 1

    def _append(self, rows: list[Row]) -> None:
        results.append(self.results_path, *rows)
        self._emit(rows=tuple(rows))

    def _record_invalid(self, message: str, usage: Usage, kind: str, description: str = "") -> None:
        count = len(results.read_rows(self.invalid_path)) + 1
        row = Row("", None, None, "invalid", description or "(no description)", experiment=count, kind=kind,
                  parent=short(self.state.kept), prompt_tokens=usage.prompt_tokens,
                  completion_tokens=usage.completion_tokens, cost_usd=usage.cost_usd, failure=message,
                  proposer=self.proposer.name)
        results.append(self.invalid_path, row)
        self.status.message = f"invalid proposal: {results.one_line(message, 120)}"
        self._emit(invalid=row)

    def _pause(self, reason: str) -> None:
        """The proposer's endpoint keeps failing: wait, visibly, then let the next step ask again."""
        self._set_phase("paused", f"proposer unavailable, retrying in {self.config.pause_seconds:.0f} s: {reason}")
        deadline = time.monotonic() + self.config.pause_seconds
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(min(0.2, self.config.pause_seconds))

    def _program(self) -> str:
        path = self.workspace.worktree / PROGRAM
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def _history(self, rows: list[Row]) -> list[HistoryEntry]:
        tried = [r for r in rows if r.kind in ("candidate", "fix")]
        invalid = results.read_rows(self.invalid_path)
        ordered = sorted(tried + invalid, key=lambda r: r.finished_at)
        return [HistoryEntry(r.experiment, r.description, r.status, r.val_bpb) for r in ordered]

    def _cancel(self) -> _Cancel:
        return _Cancel(self._abort, self.folder / runstate.ABORT)

    def _save(self) -> None:
        runstate.save_state(self.folder, self.state)

    def _set_phase(self, phase: str, message: str | None = None, **fields) -> None:
        if phase != self.status.phase:
            self.status.phase_since = time.time()
        self.status.phase = phase
        if message is not None:
            self.status.message = results.one_line(message, 200)
        for name, value in fields.items():
            setattr(self.status, name, value)
        self._emit()

    def _emit(self, rows: tuple[Row, ...] = (), invalid: Row | None = None) -> None:
        rows_now = results.read_rows(self.results_path)
        self.status.best, self.status.noise_std = _best(rows_now), _noise_std(rows_now)
        self.status.margin = gate.margin_for(self.status.noise_std or 0.0, self.config.gate)
        runstate.write_status(self.folder, self.status)
        if self.on_event is not None:
            self.on_event(Event(self.status.phase, dataclasses.replace(self.status), rows, invalid))

    # -- resume -------------------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Bring branch, worktree and state.json in line with results.tsv after any kind of stop."""
        _kill_orphans(self.notebooks)
        rows = results.read_rows(self.results_path)
        kept_rows = [r for r in rows if r.status == "keep"]
        if kept_rows:
            last = kept_rows[-1].commit
            self.state.kept = self.state.kept if self.state.kept.startswith(last) else self.workspace.resolve(last)
        elif not self.state.kept:
            self.state.kept = self.workspace.head() if self.state.pending is None else self.state.pending.parent
        pending = self.state.pending
        if pending is not None:
            written = [r for r in rows if r.experiment in pending.numbers]
            if written:  # the rows made it to disk; only the keep/revert after them did not
                self.state.pending = None
                if written[0].status != "keep":
                    self.workspace.discard(pending.commit, pending.numbers[0], self.state.kept)
            else:
                pending.interrupts += 1
        target = self.state.pending.commit if self.state.pending else self.state.kept
        if self.workspace.head() != target or self.workspace.is_dirty():
            self.workspace.reset_to(target)
        self._save()


def _kill_orphans(notebooks: Path) -> None:
    """Kill experiments a killed loop left running: papermill writing into this run's notebooks folder.

    A SIGKILL reaches the loop only; its papermill child (in a session of its own) and the kernel would go
    on training for up to the timeout and write into the notebook a resume is about to write. Holding the
    tag's lock, any such process is an orphan of ours.
    """

    marker = str(notebooks) + os.sep
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if process.pid != os.getpid() and "papermill" in " ".join(cmdline) and any(marker in a for a in cmdline):
            kill_tree(process.pid)


def _figure(metrics: dict, name: str) -> float | None:
    """A finite number from the kernel's metrics, or None (the kernel may have written anything)."""
    value = metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _next_number(rows: list[Row], pending: Pending | None = None) -> int:
    used = [r.experiment for r in rows] + (pending.numbers if pending else [])
    return max(used, default=0) + 1


def _best(rows: list[Row]) -> float | None:
    """The gate's best so far: the `best` of the last kept row that has one (None before the baseline)."""
    for row in reversed(rows):
        if row.status == "keep" and row.best is not None:
            return row.best
    return None


def _noise_std(rows: list[Row]) -> float | None:
    baseline = [r.val_bpb for r in rows if r.kind == "baseline" and r.status == "keep"]
    noise = gate.noise_floor(baseline)
    return noise.std if noise else None


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
