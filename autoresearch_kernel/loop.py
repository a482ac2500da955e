"""The experiment loop: propose, check, commit, run, verify, decide, record, keep or revert; forever.

One `Loop` object serves the CLI, the dashboard and the tests. One step:

    baseline (until done): run the unmodified notebook on each baseline seed; their mean is the first best
    propose   the proposer edits the last kept notebook (or, after a crash, the crashed one with its
              traceback); a reply that does not apply is recorded in invalid.tsv: no commit, no experiment
    novelty   memory.py: a candidate that runs code already run (this run or an earlier one) is recorded in
              invalid.tsv as a duplicate pointing at that experiment, not run; the proposer is asked again
    commit    one commit on autoresearch/<tag>, in the run's own worktree
    CHECK     checks.check_candidate: a fast pre-filter; a reason refuses it before anything runs (a crash row)
    run       runner.run_notebook in the jail (integrity/jail.py) under the wall-clock limit; the executed
              notebook and all the run wrote in its own folder runs/<tag>/notebooks/<n>-<commit>/
    SCORE     checks.score: the scorer measures the exported model outside the jail (the only metric)
    decide    gate.decide_by_means: the candidate's mean against the best's, in standard errors of the pooled
              noise; a run identical to its parent's is a no-op; a borderline gain is re-run first ("confirm")
    record    the rows appended to results.tsv (atomically), then keep (branch stays) or revert

The parts live next door, one job each: the settings and their stored copy (`settings`), the run's rows in
memory and the rows built from runs (`records`), the live status and events (`events`), launching one
experiment in the jail (`launch`), resuming after a stop (`recovery`, `runstate`). A SIGKILL anywhere leaves results.tsv, the branch and state.json in a state
that `Loop(LoopConfig.resumed(repo, tag))` completes, with the settings the run was started with.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from autoresearch_kernel import gate, memory, records, results, runstate, settings
from autoresearch_kernel.errors import AutoresearchError, ProposalError, ProposerUnavailable
from autoresearch_kernel.events import Event, Reporter
from autoresearch_kernel.harness.prepare import default_data_dir
from autoresearch_kernel.integrity import Candidate, Checks, Guard
from autoresearch_kernel.launch import choose_sandbox, run_experiment
from autoresearch_kernel.proposers import Proposal, ProposalContext, Proposer, Usage, make_proposer, usage_of
from autoresearch_kernel.recovery import recover
from autoresearch_kernel.results import Row
from autoresearch_kernel.runner import RunResult
from autoresearch_kernel.runstate import FixRequest, LoopStatus, Pending
from autoresearch_kernel.settings import LoopConfig
from autoresearch_kernel.workspace import Workspace

__all__ = ["Checks", "Event", "Loop", "LoopConfig"]

PROGRAM = "program.md"  # the human's instructions, read from the run's worktree
FAILURE_EXCERPT_CHARS = 3000  # how much of a crash's traceback a fix proposal sees
# Statuses whose runs are never needed again: their weights are deleted (GPU ones are large).
REVERTED_WITHOUT_WEIGHTS = ("discard", "noop")
# Duplicates in a row after which the run stops: a proposer that only repeats itself would spin forever.
MAX_DUPLICATES = 20


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
        self.run_folder = self.workspace.folder
        self.folder = self.run_folder.path
        self.results_path, self.invalid_path = self.run_folder.results, self.run_folder.invalid
        self.notebooks = self.run_folder.notebooks
        self._lock = runstate.TagLock(self.folder)
        self._lock.acquire(config.tag)
        self._stop, self._abort = threading.Event(), threading.Event()
        self.status = LoopStatus(tag=config.tag, pid=os.getpid(), started_at=time.time(),
                                 budget_seconds=config.budget_seconds, budget_tokens=config.budget_tokens,
                                 timeout_s=config.run_timeout())
        try:
            self.data_dir = str(Path(config.data_dir).expanduser().resolve()) if config.data_dir else str(default_data_dir())
            changes = settings.check_resume(self.run_folder, config, self.data_dir) if config.resume else []
            self.proposer = proposer or make_proposer(config.proposer, **config.options_for_proposer(self.folder))
            self.jailed, self.sandbox_warning = choose_sandbox(config)
            self.checks = checks or Guard()
            for path in (self.run_folder.stop, self.run_folder.abort):  # left by an earlier process: not for us
                path.unlink(missing_ok=True)
            settings.store(self.run_folder, config, self.data_dir, changes)
            self.records = records.Records(self.run_folder, config.profile, config.gate)
            self._reporter = Reporter(self.run_folder, self.status, self.records, on_event)
            self.state = runstate.load_state(self.folder)
            recover(self.workspace, self.state, self.records)
            self._save()
            changed = ", ".join(f"{c['setting']} {c['was']!r} -> {c['now']!r}" for c in changes)
            self._set_phase("idle", ("resumed" + (f" with {changed}" if changed else "")) if config.resume else "started")
            self.memory = memory.Memory.open(self.workspace.root)  # every run's ideas, for novelty and prompts
            self._duplicates = 0  # duplicates in a row (see MAX_DUPLICATES)
        except BaseException:
            self.workspace.close()
            self._lock.release()
            raise

    @property
    def on_event(self) -> Callable[[Event], None] | None:
        return self._reporter.on_event

    @on_event.setter
    def on_event(self, observer: Callable[[Event], None] | None) -> None:
        self._reporter.on_event = observer

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
        return self._stop.is_set() or self.run_folder.stop.exists() or self._cancel().is_set()

    def close(self) -> None:
        """Release the tag (the loop cannot be used afterwards)."""
        for path in (self.run_folder.stop, self.run_folder.abort):
            path.unlink(missing_ok=True)
        if self.status.phase not in ("error",):
            self._set_phase("stopped", self.status.message)
        self.checks.close()
        self.memory.close()
        self.workspace.close()
        self._lock.release()

    def __enter__(self) -> Loop:
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
        missing = self.records.missing_seeds(self.config.baseline_seeds)
        if missing:
            return self._baseline(missing[0])
        if self.state.pending is not None:  # cut short earlier: run it (again)
            return self._finish_pending()
        return self._propose_and_run()

    def _unfinished(self) -> bool:
        """Work that does not count as a proposal: baseline seeds to run, an interrupted experiment."""
        return bool(self.records.missing_seeds(self.config.baseline_seeds)) or self.state.pending is not None

    # -- baseline -----------------------------------------------------------------------------------------
    def _baseline(self, seed: int) -> list[Row]:
        number = self.records.next_number(self.state.pending)
        commit = self.state.kept or self.workspace.head()
        self.state.kept = commit
        self._save()
        description = f"baseline (seed {seed})"
        self._set_phase("running", description, experiment=number, kind="baseline", description=description)
        result = self._run(number, commit, seed)
        if result is None:
            return []
        row = self._row_from(result, number, "baseline", commit, commit, seed, description)
        values = self.records.baseline_values() + [row.val_bpb]
        if not result.ok:
            row = dataclasses.replace(row, status="crash")
        elif len(values) == len(self.config.baseline_seeds):
            noise = self.records.noise(with_rows=[row])  # this seed's run counts too
            decision = gate.baseline_decision(values, noise, self.config.gate)
            row = dataclasses.replace(row, margin=decision.margin, best=decision.best, noise_std=noise.upper)
        self._append([row])
        self.workspace.reset_to(commit)
        if not result.ok:
            raise AutoresearchError(
                f"the unmodified notebook crashed on baseline seed {seed} ({row.failure}); see "
                f"{self.folder / row.notebook}; fix the notebook or the data, then resume the tag"
            )
        return [row]

    # -- one proposal -------------------------------------------------------------------------------------
    def _propose_and_run(self) -> list[Row]:
        fix = self.state.fix
        kind = "fix" if fix else "candidate"
        base = self.workspace.read_sandbox(fix.commit if fix else None)
        context = ProposalContext(
            program=self._program(), notebook=base, history=self.records.history(),
            failure=fix.failure if fix else None, best_val_bpb=self.records.best(),
            profile=self.config.profile, device=self.config.device, memory=self.memory.digest(),
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
        if self._duplicate(proposal, kind):
            return []
        self._set_phase("checking", "", description=proposal.description)
        try:
            commit = self.workspace.commit_sandbox(proposal.notebook, proposal.description)
        except ProposalError as error:
            self._save()
            self._record_invalid(str(error), proposal.usage, kind, proposal.description)
            return []
        self.state.pending = Pending(numbers=[self.records.next_number(None)], kind=kind, commit=commit,
                                     parent=self.state.kept, description=proposal.description,
                                     usage=dataclasses.asdict(proposal.usage), fixes_left=fixes_left)
        self._save()
        return self._finish_pending(proposal)

    def _finish_pending(self, proposal: Proposal | None = None) -> list[Row]:
        """Run the pending candidate's remaining runs, decide, record, keep or revert."""
        pending = self.state.pending
        candidate = Candidate(pending.numbers[0], pending.kind, pending.commit, pending.parent,
                              pending.description, self.workspace.sandbox, self.workspace)
        proposal = proposal or Proposal(pending.description, self.workspace.read_sandbox(pending.commit),
                                        Usage(**pending.usage))
        best_runs, noise = self.records.best_runs(), self.records.noise()  # the candidate's own runs not pooled
        done = runstate.pending_rows(pending)

        def crash(reason: str) -> gate.Decision:
            return gate.Decision("crash", None, self.records.best(), self.records.margin(), None, reason)

        if pending.interrupts > self.config.max_interrupts:
            return self._settle(candidate, proposal, done, crash(
                "interrupted: the loop stopped during this experiment more than once"), fixable=False)
        reason = self.checks.check_candidate(candidate) if not done else None  # CHECK before running
        if reason:
            return self._settle(candidate, proposal, done, crash(f"integrity: {reason}"), fixable=False)
        excerpt = ""
        while True:
            decision = self._decide(best_runs, noise, done, pending.parent) if done else None
            if decision is not None and decision.status != "confirm":
                return self._settle(candidate, proposal, done, decision, excerpt=excerpt)
            if len(done) == len(pending.numbers):
                pending.numbers.append(self.records.next_number(pending))
                self._save()
            number, seed = pending.numbers[len(done)], self._seed_for(len(done))
            kind = "confirm" if done else pending.kind
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

    def _decide(self, best_runs: list[float], noise: gate.NoiseEstimate, done: list[Row], parent: str) -> gate.Decision:
        """The gate's decision on the runs so far; a first run identical to its parent's on that seed is a no-op."""
        first = done[0]
        parent_run = self.records.parent_run(parent, first.seed)
        if parent_run is not None and records.same_result(first, parent_run):
            return gate.noop_decision(self.records.best(), first.val_bpb, self.records.margin(), first.seed)
        return gate.decide_by_means(best_runs, [r.val_bpb for r in done], noise, self.config.gate)

    def _settle(self, candidate: Candidate, proposal: Proposal, done: list[Row], decision: gate.Decision,
                fixable: bool = True, excerpt: str = "") -> list[Row]:
        """Write the candidate's rows with the final status, then keep or revert, then forget the pending."""
        status, pending = decision.status, self.state.pending
        noise_std = self.records.noise_std()
        runs = done or [dataclasses.replace(records.crash_row(
            candidate.number, candidate.kind, candidate.commit, candidate.parent, candidate.description,
            self._seed_for(0), decision.reason, proposal.usage, self._sandbox_mark()), proposer=self.proposer.name)]
        rows = [dataclasses.replace(row, status=status, margin=decision.margin, best=decision.best,
                                    noise_std=noise_std, failure=row.failure or ("" if status == "keep" else decision.reason),
                                    proposer=proposal.proposer or row.proposer)  # hybrid: who made this one
                for row in runs]
        rows = self._append(rows)
        self._apply(candidate.commit, candidate.number, status)
        if status in REVERTED_WITHOUT_WEIGHTS:
            for row in rows:
                for suffix in (".checkpoint.pt", ".program.pt2"):
                    (self.folder / row.notebook).with_suffix(suffix).unlink(missing_ok=True)
        if status == "crash" and fixable and pending.fixes_left > 0:
            failure = results.redact(excerpt or rows[-1].failure)[-FAILURE_EXCERPT_CHARS:]
            self.state.fix = FixRequest(candidate.commit, candidate.description, failure, pending.fixes_left)
        self.state.pending = None
        self._save()
        self.proposer.feedback(proposal, status, decision.value)
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
        result = run_experiment(self.config, self.workspace, self.data_dir, self.jailed, number, commit, seed,
                                self._cancel())
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
        row = records.row_from(result, self.run_folder, number, kind, commit, parent, seed, description,
                               self._sandbox_mark(), usage)
        return dataclasses.replace(row, proposer="" if kind == "baseline" else self.proposer.name)

    def _sandbox_mark(self) -> str:
        return "bwrap" if self.jailed else "none"

    def _seed_for(self, run_index: int) -> int:
        return records.seed_for(self.config.baseline_seeds, run_index)

    def _append(self, rows: list[Row]) -> list[Row]:
        rows = self.records.append(rows)
        self.memory.remember(self.config.tag)  # the idea memory reads them back from results.tsv
        self._reporter.emit(rows=tuple(rows))
        return rows

    def _duplicate(self, proposal: Proposal, kind: str) -> bool:
        """The novelty check: a candidate that would run code already run (memory.py) is not run. It is
        recorded in invalid.tsv pointing at the earlier experiment, the proposer is told its value, and the
        next step asks again. True when it was a duplicate."""
        duplicate = self.memory.duplicate_of(self.config.tag, self.state.kept, proposal.notebook)
        if duplicate is None:
            self._duplicates = 0
            return False
        self._duplicates += 1
        self._save()
        self._record_invalid(duplicate.failure, proposal.usage, kind, proposal.description, status="duplicate",
                             val_bpb=duplicate.value)
        self.proposer.feedback(proposal, "duplicate", duplicate.value)
        if self._duplicates >= MAX_DUPLICATES:
            raise AutoresearchError(f"the proposer repeated experiments already run {self._duplicates} times in a "
                                    f"row (last: {duplicate.earlier.pointer()}): change the proposer or its "
                                    "options (seed, constants), then resume the tag")
        return True

    def _record_invalid(self, message: str, usage: Usage, kind: str, description: str = "",
                        status: str = "invalid", val_bpb: float | None = None) -> None:
        row = Row("", val_bpb, None, status, description or "(no description)",
                  experiment=len(self.records.invalid) + 1, kind=kind, parent=self.state.kept[:7],
                  prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                  cost_usd=usage.cost_usd, failure=message, proposer=self.proposer.name)
        row = self.records.append_invalid(row)
        self.status.message = f"{status} proposal: {results.one_line(message, 120)}"
        self._reporter.emit(invalid=row)

    def _pause(self, reason: str) -> None:
        """The proposer's endpoint keeps failing: wait, visibly, then let the next step ask again."""
        self._set_phase("paused", f"proposer unavailable, retrying in {self.config.pause_seconds:.0f} s: {reason}")
        deadline = time.monotonic() + self.config.pause_seconds
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(min(0.2, self.config.pause_seconds))

    def _program(self) -> str:
        path = self.workspace.worktree / PROGRAM
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def _cancel(self) -> _Cancel:
        return _Cancel(self._abort, self.run_folder.abort)

    def _save(self) -> None:
        runstate.save_state(self.folder, self.state)

    def _set_phase(self, phase: str, message: str | None = None, **fields) -> None:
        self._reporter.set_phase(phase, message, **fields)
