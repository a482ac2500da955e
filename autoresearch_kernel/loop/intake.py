"""Taking in a proposal: from the proposer's reply to an experiment in flight, or to a row saying why not.

    ask       the proposer sees the best notebook (or the crashed one with its traceback), the history, what
              runs on the other lanes and the idea memory's digest; an outage pauses new proposals, a reply
              that does not apply is recorded in invalid.tsv
    novelty   memory.py: a candidate that runs code already run (this run or an earlier one) is recorded in
              invalid.tsv as a duplicate pointing at that experiment, and is not run; so is one that runs the
              same notebook as an experiment in flight
    commit    one commit on top of the best, in git only (committing moves neither the branch nor the worktree)
    CHECK     the integrity pre-filter; a reason refuses the candidate before anything runs (a crash row)

The loop asks `Intake.next()` for work when a lane is free; what comes back is a committed, checked flight.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autoresearch_kernel.errors import AutoresearchError, ProposalError, ProposerUnavailable
from autoresearch_kernel.journal.runstate import FixRequest, Pending
from autoresearch_kernel.loop.guard import Candidate
from autoresearch_kernel.loop.ledger import Ledger
from autoresearch_kernel.proposers import Proposal, ProposalContext, Proposer, Usage, usage_of
from autoresearch_kernel.tasks import Task
from autoresearch_kernel.workspace.merge import merge_notebooks
from autoresearch_kernel.workspace.worktree import Workspace, read_program, short

# Duplicates in a row after which the run stops: a proposer that only repeats itself would spin forever.
MAX_DUPLICATES = 20


@dataclass(frozen=True)
class Asking:
    """What every proposal of a run is asked with: the task (its metric, sandbox and program.md), where it runs,
    how long an outage pauses the proposals, and how many fixes a crashed idea gets."""

    task: Task
    profile: str
    device: str
    pause_seconds: float
    fix_attempts: int | None  # None: one fix from a proposer that can read a traceback, else none

    @classmethod
    def of(cls, config) -> Asking:
        """The asking of a `settings.LoopConfig`."""
        return cls(config.task_spec, config.profile, config.device, config.pause_seconds, config.fix_attempts)


class Intake:
    """The proposals of one loop. Its doors: the ledger (flights, rows, status, the idea memory), the workspace
    (git), the proposer, the integrity pre-filter, and the settler's door for a refused candidate."""

    def __init__(self, ledger: Ledger, workspace: Workspace, proposer: Proposer, asking: Asking,
                 check_candidate: Callable[[Candidate], str | None], refuse: Callable[[Pending, str], object]):
        self.ledger, self.workspace, self.proposer, self.asking = ledger, workspace, proposer, asking
        self.check_candidate, self.refuse = check_candidate, refuse
        self.paused_until = 0.0  # monotonic seconds: no proposal before (the proposer's endpoint is down)
        self.duplicates = 0  # duplicates in a row (see MAX_DUPLICATES)

    @property
    def state(self):
        return self.ledger.state

    def next(self) -> Pending | None:
        """Ask the proposer for a candidate and commit it: a flight, or None (an invalid reply, a duplicate,
        a refusal, or paused)."""
        if time.monotonic() < self.paused_until:
            return None
        fix = self.state.fix
        kind = "fix" if fix else "candidate"
        proposal = self._ask(fix, kind)
        if proposal is None:
            return None
        # attempts a crash of this candidate may still get: a fresh idea gets the configured number
        fixes_left = fix.attempts_left - 1 if fix else self.asking.fix_attempts
        if fixes_left is None:  # the default: one fix, from a proposer that can read a traceback
            fixes_left = 1 if self.proposer.fixes_crashes else 0
        self.state.fix = None
        if self._duplicate(proposal, kind):
            return None
        self.ledger.set_phase("checking", "", description=proposal.description)
        commit = self._commit(proposal, fix, kind)
        if commit is None:
            return None
        flight = Pending(numbers=[], kind=kind, commit=commit, parent=self.state.kept,
                         description=proposal.description, usage=dataclasses.asdict(proposal.usage),
                         fixes_left=fixes_left, proposer=proposal.proposer or self.proposer.name)
        number = self.ledger.records.next_number(self.state.flights)
        reason = self.check_candidate(Candidate(number, kind, commit, self.state.kept, proposal.description,
                                                self.workspace.sandbox, self.workspace))
        if reason:  # CHECK before running: recorded as a crash, never run
            self.refuse(self.ledger.add_flight(flight), f"integrity: {reason}")
            return None
        return self.ledger.add_flight(flight)

    def _ask(self, fix: FixRequest | None, kind: str) -> Proposal | None:
        """The proposer's reply (a proposal counts, usable or not), or None: paused, or recorded as invalid."""
        state, records = self.state, self.ledger.records
        context = ProposalContext(
            program=self._program(), notebook=self.workspace.read_sandbox(fix.commit if fix else state.kept),
            history=records.history(), failure=fix.failure if fix else None, best_val_bpb=records.best(),
            profile=self.asking.profile, device=self.asking.device,
            running=[f.description for f in state.flights if f.kind not in ("baseline", "pair")],
            memory=self.ledger.memory.digest(), metric=self.asking.task.metric, sandbox=self.asking.task.sandbox,
        )
        self.ledger.set_phase("proposing", "asking for a fix" if fix else "", kind=kind)
        try:
            proposal = self.proposer.propose(context)
        except ProposerUnavailable as error:
            pause = self.asking.pause_seconds
            self.paused_until = time.monotonic() + pause
            self.ledger.set_phase("paused", f"proposer unavailable, retrying in {pause:.0f} s: {error}")
            return None
        except ProposalError as error:
            self.ledger.count_proposal()
            if fix and fix.attempts_left > 1:  # an unusable fix reply spends one attempt
                state.fix = dataclasses.replace(fix, attempts_left=fix.attempts_left - 1)
            else:
                state.fix = None
            self.ledger.save()
            self.record_invalid(str(error), usage_of(error), kind)
            return None
        self.ledger.count_proposal()
        return proposal

    def _commit(self, proposal: Proposal, fix: FixRequest | None, kind: str) -> str | None:
        """The proposal committed on the best, or None: recorded as invalid (it does not apply there, it changes
        nothing, or an experiment in flight runs the same notebook)."""
        kept = self.state.kept
        notebook = self._onto_the_best(proposal.notebook, fix)
        if notebook is None:
            self.ledger.save()
            self.record_invalid(f"the best moved on from {short(fix.parent)} to {short(kept)} while the fix "
                                "was asked for, and the fix does not apply there", proposal.usage, kind,
                                proposal.description)
            return None
        try:
            commit = self.workspace.commit_sandbox(notebook, proposal.description, parent=kept)
        except ProposalError as error:
            self.ledger.save()
            self.record_invalid(str(error), proposal.usage, kind, proposal.description)
            return None
        twin = self._twin_in_flight(commit)
        if twin is not None:  # not in the memory yet: it has no row
            self.ledger.save()
            self.record_invalid(f"duplicate of experiment {twin.numbers[0]} ({twin.description}), running now",
                                proposal.usage, kind, proposal.description, status="duplicate")
            return None
        return commit

    def _onto_the_best(self, notebook, fix: FixRequest | None):
        """A fix is written on the crashed notebook, built on the best of the crash's time; the best may have
        moved on since (a keep on another lane landed while the proposer was paused): committed as it is, the
        fix would undo that keep. Its change is re-applied onto the best instead (None: it does not apply)."""
        kept, workspace = self.state.kept, self.workspace
        if fix is None or not fix.parent or fix.parent == kept:
            return notebook
        return merge_notebooks(workspace.read_sandbox(fix.parent), workspace.read_sandbox(kept), notebook)

    def _duplicate(self, proposal: Proposal, kind: str) -> bool:
        """The novelty check: a candidate that would run code already run (memory.py) is not run. It is
        recorded in invalid.tsv pointing at the earlier experiment, the proposer is told its value, and the
        next proposal is asked for. True when it was a duplicate."""
        duplicate = self.ledger.memory.duplicate_of(self.ledger.tag, self.state.kept, proposal.notebook)
        if duplicate is None:
            self.duplicates = 0
            return False
        self.duplicates += 1
        self.ledger.save()
        self.record_invalid(duplicate.failure, proposal.usage, kind, proposal.description, status="duplicate",
                            val_bpb=duplicate.value)
        self.proposer.feedback(proposal, "duplicate", duplicate.value)
        if self.duplicates >= MAX_DUPLICATES:
            raise AutoresearchError(f"the proposer repeated experiments already run {self.duplicates} times in a "
                                    f"row (last: {duplicate.earlier.pointer()}): change the proposer or its "
                                    "options (seed, constants), then resume the tag")
        return True

    def _twin_in_flight(self, commit: str) -> Pending | None:
        """An experiment in flight that runs the same notebook as `commit` (the same tree in git)."""
        repo = self.workspace.repo
        tree = repo.commit(commit).tree.hexsha
        return next((f for f in self.state.flights
                     if f.kind != "baseline" and repo.commit(f.commit).tree.hexsha == tree), None)

    def record_invalid(self, message: str, usage: Usage, kind: str, description: str = "", status: str = "invalid",
                       val_bpb: float | None = None) -> None:
        """A row in invalid.tsv: a proposal that produced no experiment."""
        self.ledger.append_invalid(self.ledger.rows.invalid(
            len(self.ledger.records.invalid) + 1, kind, self.state.kept, message, usage, description, status, val_bpb))

    def _program(self) -> str:
        """The human's instructions: the task's program.md (a bundled task's, or the one `autoresearch init`
        wrote), else the repository's (the checkout's, live)."""
        task = self.asking.task
        if not task.program:
            return read_program(self.workspace.root)
        path = Path(task.folder or ".", task.program)
        return path.read_text(encoding="utf-8") if path.exists() else ""
