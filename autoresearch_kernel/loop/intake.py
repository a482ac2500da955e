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
from pathlib import Path

from autoresearch_kernel.errors import AutoresearchError, ProposalError, ProposerUnavailable
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.journal.runstate import FixRequest, Pending
from autoresearch_kernel.loop.guard import Candidate
from autoresearch_kernel.proposers import Proposal, ProposalContext, Usage, usage_of
from autoresearch_kernel.workspace.merge import merge_notebooks
from autoresearch_kernel.workspace.worktree import read_program, short

# Duplicates in a row after which the run stops: a proposer that only repeats itself would spin forever.
MAX_DUPLICATES = 20


class Intake:
    """The proposals of one loop (it reads the loop's state, records, memory and workspace)."""

    def __init__(self, loop):
        self.loop = loop
        self.paused_until = 0.0  # monotonic seconds: no proposal before (the proposer's endpoint is down)
        self.duplicates = 0  # duplicates in a row (see MAX_DUPLICATES)

    def next(self) -> Pending | None:
        """Ask the proposer for a candidate and commit it: a flight, or None (an invalid reply, a duplicate,
        a refusal, or paused)."""
        loop, state = self.loop, self.loop.state
        if time.monotonic() < self.paused_until:
            return None
        fix = state.fix
        kind = "fix" if fix else "candidate"
        base = loop.workspace.read_sandbox(fix.commit if fix else state.kept)
        context = ProposalContext(
            program=self._program(), notebook=base, history=loop.records.history(),
            failure=fix.failure if fix else None, best_val_bpb=loop.records.best(),
            profile=loop.config.profile, device=loop.config.device,
            running=[f.description for f in state.flights if f.kind not in ("baseline", "pair")],
            memory=loop.memory.digest(),
            metric=loop.task.metric, sandbox=loop.task.sandbox,
        )
        loop.set_phase("proposing", "asking for a fix" if fix else "", kind=kind)
        try:
            proposal = loop.proposer.propose(context)
        except ProposerUnavailable as error:
            pause = loop.config.pause_seconds
            self.paused_until = time.monotonic() + pause
            loop.set_phase("paused", f"proposer unavailable, retrying in {pause:.0f} s: {error}")
            return None
        except ProposalError as error:
            loop.status.proposals += 1
            if fix and fix.attempts_left > 1:  # an unusable fix reply spends one attempt
                state.fix = dataclasses.replace(fix, attempts_left=fix.attempts_left - 1)
            else:
                state.fix = None
            loop.save()
            self.record_invalid(str(error), usage_of(error), kind)
            return None
        loop.status.proposals += 1
        # attempts a crash of this candidate may still get: a fresh idea gets the configured number
        fixes_left = fix.attempts_left - 1 if fix else loop.config.fix_attempts
        if fixes_left is None:  # the default: one fix, from a proposer that can read a traceback
            fixes_left = 1 if loop.proposer.fixes_crashes else 0
        state.fix = None
        if self._duplicate(proposal, kind):
            return None
        loop.set_phase("checking", "", description=proposal.description)
        notebook = self._onto_the_best(proposal.notebook, fix)
        if notebook is None:
            loop.save()
            self.record_invalid(f"the best moved on from {short(fix.parent)} to {short(state.kept)} while the fix "
                                "was asked for, and the fix does not apply there", proposal.usage, kind,
                                proposal.description)
            return None
        try:
            commit = loop.workspace.commit_sandbox(notebook, proposal.description, parent=state.kept)
        except ProposalError as error:
            loop.save()
            self.record_invalid(str(error), proposal.usage, kind, proposal.description)
            return None
        twin = self._twin_in_flight(commit)
        if twin is not None:  # not in the memory yet: it has no row
            loop.save()
            self.record_invalid(f"duplicate of experiment {twin.numbers[0]} ({twin.description}), running now",
                                proposal.usage, kind, proposal.description, status="duplicate")
            return None
        flight = Pending(numbers=[], kind=kind, commit=commit, parent=state.kept,
                         description=proposal.description, usage=dataclasses.asdict(proposal.usage),
                         fixes_left=fixes_left, proposer=proposal.proposer or loop.proposer.name)
        number = loop.records.next_number(state.flights)
        reason = loop.checks.check_candidate(Candidate(number, kind, commit, state.kept, proposal.description,
                                                       loop.workspace.sandbox, loop.workspace))
        if reason:  # CHECK before running: recorded as a crash, never run
            loop.settler.refused(loop.add_flight(flight), f"integrity: {reason}")
            return None
        return loop.add_flight(flight)

    def _onto_the_best(self, notebook, fix: FixRequest | None):
        """A fix is written on the crashed notebook, built on the best of the crash's time; the best may have
        moved on since (a keep on another lane landed while the proposer was paused): committed as it is, the
        fix would undo that keep. Its change is re-applied onto the best instead (None: it does not apply)."""
        kept, workspace = self.loop.state.kept, self.loop.workspace
        if fix is None or not fix.parent or fix.parent == kept:
            return notebook
        return merge_notebooks(workspace.read_sandbox(fix.parent), workspace.read_sandbox(kept), notebook)

    def _duplicate(self, proposal: Proposal, kind: str) -> bool:
        """The novelty check: a candidate that would run code already run (memory.py) is not run. It is
        recorded in invalid.tsv pointing at the earlier experiment, the proposer is told its value, and the
        next proposal is asked for. True when it was a duplicate."""
        loop = self.loop
        duplicate = loop.memory.duplicate_of(loop.config.tag, loop.state.kept, proposal.notebook)
        if duplicate is None:
            self.duplicates = 0
            return False
        self.duplicates += 1
        loop.save()
        self.record_invalid(duplicate.failure, proposal.usage, kind, proposal.description, status="duplicate",
                            val_bpb=duplicate.value)
        loop.proposer.feedback(proposal, "duplicate", duplicate.value)
        if self.duplicates >= MAX_DUPLICATES:
            raise AutoresearchError(f"the proposer repeated experiments already run {self.duplicates} times in a "
                                    f"row (last: {duplicate.earlier.pointer()}): change the proposer or its "
                                    "options (seed, constants), then resume the tag")
        return True

    def _twin_in_flight(self, commit: str) -> Pending | None:
        """An experiment in flight that runs the same notebook as `commit` (the same tree in git)."""
        repo = self.loop.workspace.repo
        tree = repo.commit(commit).tree.hexsha
        return next((f for f in self.loop.state.flights
                     if f.kind != "baseline" and repo.commit(f.commit).tree.hexsha == tree), None)

    def record_invalid(self, message: str, usage: Usage, kind: str, description: str = "", status: str = "invalid",
                       val_bpb: float | None = None) -> None:
        """A row in invalid.tsv: a proposal that produced no experiment."""
        loop = self.loop
        row = Row("", val_bpb, None, status, description or "(no description)",
                  experiment=len(loop.records.invalid) + 1, kind=kind, parent=loop.state.kept[:7],
                  prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                  cost_usd=usage.cost_usd, failure=message, proposer=loop.proposer.name)
        row = loop.records.append_invalid(loop.mark(row))
        loop.status.message = f"{status} proposal: {row.failure[:120]}"
        loop.emit(invalid=row)

    def _program(self) -> str:
        """The human's instructions: the task's program.md (a bundled task's, or the one `autoresearch init`
        wrote), else the repository's (the checkout's, live)."""
        task = self.loop.task
        if not task.program:
            return read_program(self.loop.workspace.root)
        path = Path(task.folder or ".", task.program)
        return path.read_text(encoding="utf-8") if path.exists() else ""
