"""The proposer seam: what the loop hands a proposer, what it gets back, and the protocol both sides meet at.

A proposer turns (program.md, the sandbox notebook, the results so far, an optional failure excerpt) into one
candidate edit of the sandbox. The loop never looks inside a proposer; it only sees these shapes.

Errors a proposer raises (both from `autoresearch_kernel.errors`):
- `ProposalError`: the reply still does not parse or apply after one re-ask. It carries the usage spent as
  its `usage` attribute (read it with `usage_of(error)`), so the loop can record the tokens of an invalid
  proposal.
- `ProposerUnavailable`: the endpoint keeps failing after retries with backoff; the loop pauses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import nbformat

from autoresearch_kernel.errors import ProposalError
from autoresearch_kernel.journal.history import HistoryEntry, Usage  # noqa: F401  (what a proposer is told)
from autoresearch_kernel.journal.results import NOT_RUN, STATUSES  # noqa: F401  (the statuses the loop feeds back)
from autoresearch_kernel.tasks import Metric
from autoresearch_kernel.workspace.notebook import SANDBOX


@dataclass
class ProposalContext:
    """Everything a proposer may look at for one proposal."""

    program: str                        # program.md, the human's instructions
    notebook: nbformat.NotebookNode     # the current sandbox (the last kept version, or the crashed one to fix)
    history: list[HistoryEntry] = field(default_factory=list)
    failure: str | None = None          # the failure excerpt when asking for a fix of a crash
    best_val_bpb: float | None = None
    # Where the experiments run: the PROFILE and DEVICE the runner passes to the notebook. A profile picks
    # the branch of `if run.profile.name == ...:` that runs, so a proposer must edit that one. None: not
    # known (a proposer then assumes the parameters cell's defaults, what a plain run would use).
    profile: str | None = None          # cpu | gpu
    device: str | None = None           # auto | cpu | cuda | cuda:N | mps
    # With lanes: the experiments running now (their descriptions), so as not to propose the same thing again.
    running: list[str] = field(default_factory=list)
    memory: str = ""                    # the idea memory's digest: what every run of the repository tried
    # The task's (tasks/): the metric `best_val_bpb` and the history's values are of, and which way is better;
    # the notebook's path in the repository. None: the GPT task's val_bpb, lower is better.
    metric: Metric | None = None
    sandbox: str = SANDBOX

    @property
    def lower_is_better(self) -> bool:
        return self.metric is None or self.metric.lower_is_better


@dataclass
class Proposal:
    """One candidate: a one-line description, the edited notebook (outputs cleared) and the tokens it cost."""

    description: str
    notebook: nbformat.NotebookNode
    usage: Usage = field(default_factory=Usage)
    proposer: str = ""      # which proposer made it where one hands out to others (hybrid: llm | optuna)


@runtime_checkable
class Proposer(Protocol):
    name: str
    fixes_crashes: bool     # True: it can repair a crashed notebook from its traceback, so the loop asks it to

    def propose(self, context: ProposalContext) -> Proposal:
        """One candidate edit; raises ProposalError or ProposerUnavailable."""
        ...

    def feedback(self, proposal: Proposal, status: str, val_bpb: float | None = None) -> None:
        """How the proposal went: keep | discard | crash | noop, and the gate's value (the mean of its runs)
        when there is one. A loop that passes no val_bpb still works: the next context's history carries it.
        "duplicate": it was not run, since it runs code already run; val_bpb is that earlier experiment's
        value (None when it crashed)."""
        ...


# Experiments in a row without a keep after which a proposer changes mode (a different kind of idea, a wider
# search): a tenth of a night's hundred experiments spent on one hill is long enough to call it a plateau.
PLATEAU_AFTER = 10


def experiments_since_keep(history: list[HistoryEntry]) -> int:
    """How many experiments in a row, counted back from the latest, were not kept (invalid replies and
    duplicates ran nothing and do not count)."""
    count = 0
    for entry in reversed(history):
        if entry.status == "keep":
            break
        count += entry.status not in NOT_RUN
    return count


def proposal_error(message: str, usage: Usage) -> ProposalError:
    """A ProposalError that carries the usage spent on the failed proposal."""
    error = ProposalError(message)
    error.usage = usage
    return error


def usage_of(error: BaseException) -> Usage:
    """The usage a proposer attached to its error; zero when it attached none."""
    return getattr(error, "usage", None) or Usage()
