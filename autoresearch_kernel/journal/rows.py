"""The one place a row of results.tsv or invalid.tsv is built.

Every row says how it was measured (the task's metric and its direction, who scored it, whether the run was
jailed) and who proposed it. Those marks are the run's and do not change from row to row, so a `RowBuilder`
is made once per loop with them, and each of its three doors makes one kind of row:

    of_run     a run that finished on a lane (its status is final only when the loop settles it)
    never_run  an experiment that never ran: refused by a check, or interrupted too often
    invalid    a proposal that produced no experiment (invalid.tsv)

`marked` fills the marks into a row built elsewhere: one saved in state.json by an older version.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from autoresearch_kernel.execution.lanes import Outcome
from autoresearch_kernel.harness.metrics import finite_figure
from autoresearch_kernel.journal.history import Usage
from autoresearch_kernel.journal.records import PAIR
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.journal.runstate import Pending
from autoresearch_kernel.workspace.runfolder import RunFolder

# Runs of the best (a baseline seed, a pair run) are no proposer's idea: their rows name none.
PROPOSERLESS = ("baseline", PAIR)


@dataclass(frozen=True)
class Marks:
    """What every row of one run says of how it was measured and by whom."""

    metric: str  # the task's metric's name: its value goes to the `val_bpb` column
    direction: str  # lower | higher is better
    sandbox: str  # bwrap | none
    scored: Callable[[], str]  # outside | kernel: asked when a row is built (the checks learn it at the first run)
    proposer: str  # the loop's proposer's name; an experiment's own (Pending.proposer) comes first


class RowBuilder:
    """Builds the rows of one run (see the module docstring)."""

    def __init__(self, folder: RunFolder, marks: Marks):
        self.folder, self.marks = folder, marks

    def marked(self, row: Row) -> Row:
        """The row with the run's marks where it has none (which metric, which way is better, who measured it)."""
        return dataclasses.replace(row, metric=row.metric or self.marks.metric,
                                   direction=row.direction or self.marks.direction,
                                   scored=row.scored or self.marks.scored())

    def proposer_of(self, flight: Pending) -> str:
        return "" if flight.kind in PROPOSERLESS else flight.proposer or self.marks.proposer

    def of_run(self, outcome: Outcome, flight: Pending) -> Row:
        """The row of one finished run: "keep" when it produced its metric (the loop settles the status), else
        "crash". The experiment's first run carries the proposal's LLM usage; its confirmations carry none."""
        result, job, metric = outcome.result, outcome.job, self.marks.metric
        usage = Usage(**flight.usage) if not flight.runs else Usage()
        metrics = result.metrics or {}  # written by the kernel: figures only, and only when they are numbers
        suspect = result.status == "suspect"  # scored, but below the floor: shown, never kept
        value = _figure(metrics, metric) if result.ok or suspect else None
        memory = _figure(metrics, "peak_vram_mb")
        ok = result.ok and value is not None
        return self.marked(Row(
            commit=flight.commit[:7], val_bpb=value if ok or suspect else None,
            memory_gb=memory / 1024 if memory and ok else None,
            status="keep" if ok else "suspect" if suspect else "crash", description=flight.description,
            experiment=job.number, kind=job.kind, parent=flight.parent[:7], seed=job.seed,
            wall_seconds=result.wall_seconds, training_seconds=_figure(metrics, "training_seconds") or 0.0,
            tokens_m=_figure(metrics, "total_tokens_M") or 0.0,
            **_usage_fields(usage),
            notebook=str(result.output_path.relative_to(self.folder.path)),
            failure=result.failure or ("" if ok else f"crash: the run reported no {metric}"),
            sandbox=self.marks.sandbox, proposer=self.proposer_of(flight),
            **_where(outcome),
            flops=_figure(metrics, "flops"), forward_flops_per_token=result.forward_flops_per_token,
            cpu_seconds=result.cpu_seconds, forward_us_per_token=result.forward_us_per_token))

    def never_run(self, flight: Pending, seed: int, reason: str) -> Row:
        """The row of an experiment that never ran (refused by a check, or interrupted too often): a crash."""
        return self.marked(Row(
            flight.commit[:7], None, None, "crash", flight.description, experiment=flight.numbers[0],
            kind=flight.kind, parent=flight.parent[:7], seed=seed, **_usage_fields(Usage(**flight.usage)),
            failure=reason, sandbox=self.marks.sandbox, proposer=self.proposer_of(flight)))

    def invalid(self, number: int, kind: str, parent: str, message: str, usage: Usage, description: str = "",
                status: str = "invalid", val_bpb: float | None = None) -> Row:
        """The row of invalid.tsv for a proposal that produced no experiment (`val_bpb`: a duplicate's earlier
        value)."""
        return self.marked(Row(
            "", val_bpb, None, status, description or "(no description)", experiment=number, kind=kind,
            parent=parent[:7], **_usage_fields(usage), failure=message, proposer=self.marks.proposer))


def _usage_fields(usage: Usage) -> dict:
    return dict(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                cost_usd=usage.cost_usd)


def _where(outcome: Outcome) -> dict:
    """The row fields that say where and when a run ran."""
    return dict(lane=outcome.lane.index + 1, device=outcome.lane.device, node=outcome.node,
                queued_at=iso_time(outcome.job.queued_at), started_at=iso_time(outcome.started_at),
                finished_at=iso_time(outcome.finished_at))


def iso_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch)) if epoch else ""


def _figure(metrics: dict, name: str) -> float | None:
    """A finite number from the kernel's metrics, or None (the kernel may have written anything)."""
    value = finite_figure(metrics.get(name))
    return None if value is None else float(value)
