"""One reading of a run from disk, for the dashboard: pure reads, no widgets, no processes started.

What the loop writes is all there is to read: results.tsv and invalid.tsv (the rows), the status file and
the per-tag lock (`runstate`), the console log of a loop the dashboard started, the executed notebooks and
their logs, and the diffs kept in git. A failed read of one part says so in a line instead of failing the
whole reading, so the view stays alive on a half-written or reference-format run.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from autoresearch_kernel import report, tasks, workspace
from autoresearch_kernel.dashboard.control import LoopControl
from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.journal import results, runstate
from autoresearch_kernel.text import one_line
from autoresearch_kernel.workspace.runfolder import RUNS, RunFolder

FAILURE_TAIL_LINES = 15
ERROR_LINE = re.compile(r"^(?:[\w.-]+: )?error: (.*)$")  # the CLI's `error: ...`, argparse's `prog: error: ...`


def results_path(repo: str | os.PathLike, tag: str) -> Path:
    return RunFolder.of(repo, tag).results


def one_line_error(error: BaseException | str) -> str:
    """An error as the dashboard's single line: the message, never a traceback."""
    text = str(error).strip() or type(error).__name__
    first = text.splitlines()[-1] if isinstance(error, str) else text.splitlines()[0]
    return one_line(first, 400)


def llm_usage(frame: pd.DataFrame) -> tuple[int, float | None]:
    """LLM tokens (prompt + completion) and cost so far; cost None when no row has a price.

    A reference-format file has none of these columns: zero tokens, unknown cost.
    """
    tokens = 0
    for column in ("prompt_tokens", "completion_tokens"):
        if column in frame:
            tokens += int(pd.to_numeric(frame[column], errors="coerce").fillna(0).sum())
    cost = None
    if "cost_usd" in frame:
        costs = pd.to_numeric(frame["cost_usd"], errors="coerce").dropna()
        cost = float(costs.sum()) if len(costs) else None
    return tokens, cost


# ---------------------------------------------------------------------------------------------------------
# The run as a whole: rows, status, lock, the loop process's last words.


@dataclass
class Snapshot:
    """A run as read from disk at one moment."""

    tag: str
    frame: pd.DataFrame  # results.tsv
    status: runstate.LoopStatus | None
    running: bool
    invalid: pd.DataFrame | None = None  # invalid.tsv: proposals that did not apply (their tokens count)
    stop_requested: bool = False
    error: str = ""  # one line, "" when all is well
    read_at: float = field(default_factory=time.time)

    def expected_run_seconds(self) -> float | None:
        """How long one experiment's notebook takes: the median of the finished ones, else its budget."""
        walls = pd.to_numeric(self.frame.get("wall_seconds", pd.Series(dtype=float)), errors="coerce").dropna()
        walls = walls[walls > 0]
        if len(walls):
            return float(walls.median())
        if self.status is not None and self.status.budget_seconds > 0:
            return float(self.status.budget_seconds)
        return None

    def llm_usage(self) -> tuple[int, float | None]:
        """Tokens and cost of every proposal, the ones that did not apply included."""
        tokens, cost = llm_usage(self.frame)
        if self.invalid is not None and len(self.invalid):
            more_tokens, more_cost = llm_usage(self.invalid)
            tokens += more_tokens
            cost = more_cost if cost is None else cost + (more_cost or 0.0)
        return tokens, cost


def console_error(path: Path) -> str:
    """The loop process's last words when it failed: its `error: ...` line, or a traceback's last line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    for line in reversed(lines):
        match = ERROR_LINE.match(line)
        if match:
            return match.group(1).strip()
    if any(line.startswith("Traceback") for line in lines):
        return one_line(lines[-1], 400)
    return ""


def read_snapshot(control: LoopControl) -> Snapshot:
    """Read results.tsv, the loop's status and lock, and any error the loop process left."""
    if not control.tag:
        return Snapshot(tag="", frame=pd.DataFrame(columns=list(results.COLUMNS)), status=None, running=False)
    running = control.running()
    status = runstate.read_status(control.repo, control.tag)
    error = ""
    if status is not None and status.phase in ("error", "paused") and status.message:
        error = status.message
    elif not running:
        error = console_error(RunFolder(control.folder).console_log)
    return Snapshot(
        tag=control.tag, frame=results.load(results_path(control.repo, control.tag)), status=status,
        invalid=results.load(RunFolder(control.folder).invalid),
        running=running, stop_requested=running and control.stop_requested(), error=error,
    )


# ---------------------------------------------------------------------------------------------------------
# One experiment: its diff, its failure, its executed notebook.


@dataclass
class Detail:
    """What the dashboard shows for one selected experiment."""

    number: int
    title: str  # "#3 abc1234 discard: MATRIX_LR 0.04 -> 0.05"
    diff: str  # unified diff of cell sources against its parent; "" when there is none to show
    failure: str  # the row's one-line reason and the tail of the notebook's log, for crashes
    notebook: Path | None  # the executed notebook, when it is on disk


def _row(frame: pd.DataFrame, number: int) -> dict | None:
    """The row of experiment `number`, its `kind` filled in (the reference's file has none)."""
    if "experiment" not in frame:
        return None
    match = frame[pd.to_numeric(frame["experiment"], errors="coerce") == number]
    if not len(match):
        return None
    return dict(match.iloc[-1].to_dict(), kind=report.kinds(frame)[match.index[-1]])


def _diff(repo: str | os.PathLike, commit: str, tag: str) -> str:
    """The candidate's diff against its parent, from the kept branch or its discarded ref (both share objects)."""
    if not commit:
        return ""
    try:
        return workspace.diff_of(repo, commit, tasks.of_run(repo, tag).sandbox)
    except Exception as error:  # a reference-format file, a pruned ref: say so instead of failing the view
        return f"(no diff: {one_line_error(error)})"


def _log_tail(path: Path) -> str:
    """The end of an experiment's log: the jail wrote it, so it is read as untrusted (no link followed, capped)
    and cleaned (integrity/untrusted.py)."""
    from autoresearch_kernel.integrity import untrusted

    try:
        lines = untrusted.read_text(path, untrusted.LOG_TAIL_BYTES, tail=True).splitlines()
    except OSError:
        return ""
    return untrusted.clean("\n".join(lines[-FAILURE_TAIL_LINES:]), tail=True)


def experiment_detail(repo: str | os.PathLike, tag: str, frame: pd.DataFrame, number: int) -> Detail | None:
    """The selected experiment's diff, failure excerpt and executed notebook; None when there is no such row."""
    record = _row(frame, number)
    if record is None:
        return None
    commit = str(record.get("commit") or "")
    status = report.outcome(str(record.get("status") or ""), record["kind"])
    unjailed = " [no sandbox]" if str(record.get("sandbox", "")) == "none" else ""
    title = f"#{number} {commit} {status}{unjailed}: {record.get('description', '')}"
    notebook = None
    if record.get("notebook"):
        candidate = RunFolder.of(repo, tag).path / str(record["notebook"])
        notebook = candidate if candidate.exists() else None
    failure = str(record.get("failure") or "")
    if status == "crash" and notebook is not None:
        tail = _log_tail(notebook.with_suffix(".log"))
        failure = f"{failure}\n{tail}".strip()
    return Detail(number=number, title=title, diff=_diff(repo, commit, tag), failure=failure, notebook=notebook)


# ---------------------------------------------------------------------------------------------------------
# The project: which runs there are, and its program.


def known_tags(repo: str | os.PathLike) -> list[str]:
    """The run tags with a branch, a results.tsv (a copied-in run has only that) or a loop lock."""
    try:
        tags = set(workspace.list_tags(repo))
    except AutoresearchError:  # not a git repository (yet): its runs/ may still be read
        tags = set()
    runs = Path(repo) / RUNS
    for name in (RunFolder.results, RunFolder.lock):
        tags.update(path.parent.name for path in runs.glob(f"*/{name}"))
    return sorted(tags)


def default_tag(repo: str | os.PathLike, tags: list[str]) -> str:
    """The tag to show when none is given: one whose loop is running now (so that reopening the notebook
    reattaches to it), else the one with the latest results, else ""."""
    running = [tag for tag in tags if runstate.is_running(repo, tag)]
    if running:
        return running[0]
    written = [(results_path(repo, tag).stat().st_mtime, tag) for tag in tags if results_path(repo, tag).exists()]
    return max(written)[1] if written else ""
