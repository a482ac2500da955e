"""The agent's seat: a coding agent (Claude Code, Codex, aider, ...) drives the loop one `autoresearch step` at a time.

The agent edits the sandbox in the run's worktree (its Python twin, see `twin.py`) and calls `step`, which
drives the same `Loop` as `autoresearch loop` for exactly one experiment: the agent's edit is handed over by
`AgentProposer`, then the loop's pre-filter, jail, scorer and gate decide, the row is written, and the edit is
kept or reverted. `step` returns a `StepOutcome` that prints as a few stable `key: value` lines and maps to an
exit code, so an agent can read the result without parsing prose:

    0   keep      the edit beat the best by more than the margin; the branch moved to it
    10  discard   it ran and was not better; the worktree is back at the last kept version
    11  crash     it did not run to a score (error, timeout, refused by the pre-filter); reverted as well
    12  refused   nothing ran: nothing changed, both sandbox files changed, the tag is busy, no baseline yet,
                  or the edit runs code already run (a duplicate: the reason names that experiment)
    2   error     a usage error or a problem for the human (no such tag, data changed, ...)

`status_lines` is `autoresearch status`: the best so far, the recent rows, what is running now.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autoresearch_kernel import report
from autoresearch_kernel.agent.twin import TWIN, read_edit
from autoresearch_kernel.errors import ProposerUnavailable, StepRefused, WorkspaceError
from autoresearch_kernel.execution.runner import traceback_tail
from autoresearch_kernel.journal import memory, results, runstate
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.loop.guard import Checks
from autoresearch_kernel.loop.loop import Loop, LoopConfig
from autoresearch_kernel.proposers.base import Proposal, ProposalContext
from autoresearch_kernel.proposers.edits import notebook_to_text
from autoresearch_kernel.workspace.runfolder import RunFolder
from autoresearch_kernel.workspace.worktree import SANDBOX, Workspace, short, tag_exists

NAME = "agent"  # the proposer column of the agent's rows
# noop (the result is bit-identical to its parent's: the edit changed nothing measurable) is a discard to the agent
EXIT_CODES = {"keep": 0, "discard": 10, "noop": 10, "crash": 11, "refused": 12, "over-budget": 13, "suspect": 14}
EXIT_ERROR = 2  # the command line's code for every other AutoresearchError and for usage errors
RECENT_ROWS = 10  # rows `status` shows


class AgentProposer:
    """Hands the loop the edit the agent already made: one proposal, no model call, no tokens spent."""

    name = NAME
    fixes_crashes = False  # the agent reads the traceback from `step` and fixes it in its next edit

    def __init__(self, description: str, notebook: nbformat.NotebookNode | None):
        self.description, self.notebook = description, notebook
        self.proposed = False

    def propose(self, context: ProposalContext) -> Proposal:
        if self.notebook is None or self.proposed:
            # never reached through `step` (it proposes once, with an edit); a loop asking again just pauses
            raise ProposerUnavailable("the coding agent proposes through `autoresearch step`")
        self.proposed = True
        return Proposal(self.description, self.notebook)

    def feedback(self, proposal: Proposal, status: str, val_bpb: float | None = None) -> None:
        """The agent reads the outcome from `step`'s output instead."""


def stored_config(repo: str | Path, tag: str, **overrides) -> LoopConfig:
    """The tag's loop settings as its runs stored them (settings.LoopConfig.resumed), with `overrides`.

    Budget, profile, data, seeds, gate and device of the agent's steps are those its baseline ran with.
    """
    folder = RunFolder.of(Path(repo).resolve(), tag)
    if not folder.config.exists():
        raise WorkspaceError(f"run {tag!r} has no settings at {folder.config}: start it with "
                             f"`autoresearch agent-init --tag {tag}`")
    overrides.pop("resume", None)
    return LoopConfig.resumed(Path(repo).resolve(), tag, **overrides)


def open_loop(config: LoopConfig, proposer, checks: Checks | None = None) -> Loop:
    """A Loop on the tag, or StepRefused when another loop or step holds it. A step runs one experiment and
    ends: no kernel is started ahead for a next one."""
    try:
        return Loop(dataclasses.replace(config, warm_kernels=False), proposer=proposer, checks=checks)
    except WorkspaceError as error:
        if runstate.is_running(config.repo, config.tag):
            raise StepRefused(f"run {config.tag!r} is busy: {error}; wait for it, then step again") from None
        raise


def baseline_done(rows: list[Row], config: LoopConfig) -> bool:
    done = {row.seed for row in rows if row.kind == "baseline" and row.status == "keep"}
    return set(config.baseline_seeds) <= done


@dataclass
class StepOutcome:
    """What one `step` did, as the agent reads it."""

    status: str  # keep | discard | crash | refused
    rows: tuple[Row, ...] = ()  # the experiment's rows (a confirmation run adds one)
    previous_best: float | None = None
    kept: str = ""  # the commit the branch is on after the step
    reason: str = ""  # refused: why; crash: the one-line failure
    traceback: str = ""  # crash: the end of the traceback
    earlier: tuple[Row, ...] = ()  # an experiment a killed step left unfinished, finished first

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def lines(self) -> list[str]:
        """Stable `key: value` lines (keys never change meaning; new keys may be added at the end)."""
        out = [f"status: {self.status}"]
        if self.status == "refused":
            return out + [f"reason: {self.reason}"]
        first = self.rows[0]
        values = [row.val_bpb for row in self.rows if row.val_bpb is not None and row.status != "crash"]
        out += [
            f"experiment: {first.experiment}",
            f"commit: {first.commit}",
            f"val_bpb: {_number(statistics.fmean(values) if values else None)}",
            f"best: {_number(self.rows[-1].best)}",
            f"previous_best: {_number(self.previous_best)}",
            f"margin: {_number(self.rows[-1].margin)}",
            f"runs: {len(self.rows)}" + (f" (seeds {', '.join(str(r.seed) for r in self.rows)}: a borderline gain "
                                         "was confirmed on another seed)" if len(self.rows) > 1 else ""),
            f"description: {first.description}",
        ]
        if self.status == "keep":
            out.append(f"next: kept; the branch is at {short(self.kept)}; edit {TWIN} for the next experiment")
        else:
            out.append(f"next: reverted to {short(self.kept)} ({TWIN} is back at the last kept version); "
                       f"your edit stays readable with `git show {first.commit}`")
        for row in self.earlier:
            out.append(f"earlier: experiment {row.experiment} ({row.description}), interrupted before, "
                       f"finished first: {row.status}")
        if self.status == "crash":
            out.append(f"failure: {self.reason}")
            if self.traceback:
                out.append("traceback:")
                out += [f"  {line}" for line in self.traceback.splitlines()]
        return out


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def step(repo: str | Path, tag: str, description: str, checks: Checks | None = None,
         after: Callable[[Path], None] | None = None) -> StepOutcome:
    """Run the agent's edit of the tag's sandbox as one experiment of the loop; see the module docstring.

    `after(worktree)` runs once the loop has released the worktree (the CLI writes the twin and the agent's
    instruction files again there: the loop's clean-up removes untracked files).
    """
    repo = Path(repo).resolve()
    description = " ".join((description or "").split())
    if not description:
        raise StepRefused('describe the experiment in one line: autoresearch step --tag TAG -m "what changed"')
    if not tag_exists(repo, tag):
        raise StepRefused(f"there is no run tagged {tag!r}: start it with `autoresearch agent-init --tag {tag}`")
    if runstate.is_running(repo, tag):
        raise StepRefused(f"run {tag!r} is busy: a loop or another step holds it; wait for it to end (see "
                          f"`autoresearch status --tag {tag}`), then step again")
    config = stored_config(repo, tag, resume=True, proposer=NAME, max_experiments=None, fix_attempts=0,
                           pause_seconds=0.0)
    rows = results.read_rows(RunFolder.of(repo, tag).results)
    if not baseline_done(rows, config):
        raise StepRefused(f"the baseline of run {tag!r} is not done: run `autoresearch agent-init --tag {tag}` "
                          "(it runs the unmodified notebook on its seeds first)")
    # The edit is read before the Loop opens: opening it resets a worktree that is not at the kept commit.
    kept, pending, edit = _read_the_edit(repo, tag)
    if edit is None and pending is None:
        if after is not None:  # rewrite a twin that a built-in loop's clean-up removed
            after(RunFolder.of(repo, tag).worktree)
        raise StepRefused(f"nothing changed: edit {TWIN} (or {SANDBOX}) in the run's worktree, then step")
    proposer = AgentProposer(description, edit)
    with open_loop(config, proposer, checks) as loop:
        try:
            previous_best, earlier, refusals = loop.status.best, [], len(loop.records.invalid)
            new = loop.step()
            if pending is not None and edit is not None and not _same(edit, pending):
                # a step killed mid-experiment left its candidate; it ran first, now the agent's new edit
                earlier, previous_best = new, loop.status.best
                new = loop.step() if not _same(edit, loop.workspace.read_sandbox()) else []
                if not new:
                    raise StepRefused(f"the interrupted experiment {earlier[0].experiment} was finished and "
                                      f"{earlier[0].status}; " + (_duplicate_reason(loop, refusals)
                                                                  or "your edit is the same as the kept version now"))
            kept = loop.workspace.head()
        finally:
            worktree = loop.workspace.worktree
    if after is not None:
        after(worktree)
    if not new and _duplicate_reason(loop, refusals):  # the loop's novelty check: nothing ran (memory.py)
        return StepOutcome("refused", reason=_duplicate_reason(loop, refusals))
    if not new:  # the experiment was aborted (an `abort` file): it waits for the next step
        return StepOutcome("refused", reason="the experiment was aborted before it finished; step again to run it")
    outcome = StepOutcome(new[0].status, tuple(new), previous_best, kept, earlier=tuple(earlier))
    if outcome.status == "crash":
        outcome.reason = new[-1].failure
        outcome.traceback = traceback_tail(loop.folder / new[-1].notebook) if new[-1].notebook else ""
        outcome.traceback = outcome.traceback or ""
    return outcome


def _duplicate_reason(loop: Loop, since: int) -> str | None:
    """Why the step's edit was not run when the loop found it runs code already run (invalid.tsv's failure)."""
    found = [row.failure for row in loop.records.invalid[since:] if row.status == "duplicate"]
    return found[-1] if found else None


def _read_the_edit(repo: Path, tag: str):
    """(kept commit, pending candidate or None, the agent's edited notebook or None), read without resetting."""
    workspace = Workspace.open(repo, tag, resume=True)
    try:
        state = runstate.load_state(workspace.folder.path)
        kept = state.kept or workspace.head()
        base = workspace.read_sandbox(kept)
        pending = workspace.read_sandbox(state.flights[0].commit) if state.flights else None
        edit = read_edit(workspace.worktree, base)
        return kept, pending, edit[1] if edit else None
    finally:
        workspace.close()


def _same(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> bool:
    return notebook_to_text(a) == notebook_to_text(b)


def _best_before(rows: list[Row]) -> float | None:
    """The best recorded before the interrupted experiment (whose rows come after these)."""
    return next((row.best for row in reversed(rows) if row.status == "keep" and row.best is not None), None)


def status_lines(repo: str | Path, tag: str, recent: int = RECENT_ROWS) -> list[str]:
    """`autoresearch status`: the headline numbers, what is running, the recent rows, the edit in progress."""
    repo = Path(repo).resolve()
    folder = RunFolder.of(repo, tag).path
    path = folder / "results.tsv"
    if not tag_exists(repo, tag) or not path.exists():
        raise WorkspaceError(f"there is no run tagged {tag!r} in {repo}: start it with "
                             f"`autoresearch agent-init --tag {tag}`")
    frame = results.load(path)
    lines = [f"run {tag}: branch autoresearch/{tag}, worktree {folder / 'worktree'}"]
    lines += report.summary(frame).lines()
    rows = results.read_rows(path)
    best = _best_before(rows)
    margin = rows[-1].margin if rows else None
    lines.append(f"best: {_number(best)}  margin: {_number(margin)}")
    status = runstate.read_status(repo, tag)
    if status is not None and status.phase not in ("stopped", "error", "idle"):
        since = time.strftime("%H:%M:%S", time.localtime(status.phase_since))
        what = f" experiment {status.experiment}" if status.experiment else ""
        lines.append(f"running: {status.phase}{what} ({status.kind or '-'}: {status.description or '-'}) since "
                     f"{since}, pid {status.pid}")
    elif status is not None and status.phase == "error":
        lines.append(f"stopped with an error: {status.message}")
    else:
        lines.append("running: nothing")
    lines.append(f"recent ({min(recent, len(rows))} of {len(rows)} rows):")
    lines += [results.console_line(row) for row in rows[-recent:]]
    lines += _idea_digest(repo)
    return lines


def _idea_digest(repo: Path) -> list[str]:
    """What every run of the repository tried (the idea memory's digest, memory.py); nothing before the first idea."""
    text = memory.digest(repo)
    return ["ideas tried (memory, every run):", *text.splitlines()] if text else []
