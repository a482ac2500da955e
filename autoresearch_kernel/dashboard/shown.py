"""What the dashboard shows, as pure functions of a reading: the table's lines, the live status, the lanes, the
chart, the notes beside the form's fields.

Everything here turns a `Snapshot` (or a results frame, or the environment) into text, HTML or PNG bytes, and
nothing here makes a widget, reads a file or starts a process, so the tests read it without a browser.
view.py puts what comes out of here into the widgets.
"""
from __future__ import annotations

import dataclasses
import html
import io
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from autoresearch_kernel import report
from autoresearch_kernel.dashboard.snapshot import Snapshot
from autoresearch_kernel.journal import runstate

API_KEY_VARIABLE = "OPENAI_API_KEY"  # the LLM proposer's key: read by the loop process, never by the widgets
NBSP = "\u00a0"  # a <select> collapses ordinary spaces, and the table's columns must line up


def format_duration(seconds: float | None) -> str:
    """`1h02m`, `4m05s`, `12s`; a dash for unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def table_rows(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """The results as fixed-width lines for the table (label, experiment number), newest last.

    A baseline seed reads "baseline", not "keep"; a confirmation re-run and a rebase (a stale candidate's change
    re-applied onto the new best) say so before their description; a stale row names the experiment that
    re-applied it when there is one; a run without the sandbox says so too (the column is absent from files
    written before it existed).
    """
    lines = []
    for record, kind in zip(frame.to_dict("records"), report.kinds(frame)):
        number = int(record.get("experiment") or 0)
        value = record.get("val_bpb")
        shown = "-" if record.get("status") == "crash" or value is None or pd.isna(value) else f"{value:.6f}"
        commit, status = str(record.get("commit", ""))[:7], report.outcome(str(record.get("status", "")), kind)
        rebased = report.rebased_as(str(record.get("failure") or "")) if status == report.STALE else None
        marks = "".join(f"[{mark}] " for mark in (
            kind if kind in (report.CONFIRM, report.REBASE) else "",
            f"re-applied as #{rebased}" if rebased else "",
            "no sandbox" if str(record.get("sandbox", "")) == report.UNSANDBOXED else "",
            "kernel-scored" if str(record.get("scored", "")) == report.KERNEL_SCORED else "",
        ) if mark)
        line = f"{number:>4}  {commit:<7}  {shown:>9}  {status:<8}  {marks}{record.get('description', '')}"
        lines.append((line.replace(" ", NBSP), number))
    return lines


def table_header(metric: str = "val_bpb") -> str:
    """The table's header line, naming the run's metric (the `val_bpb` column holds the task's)."""
    return f"{'#':>4}  {'commit':<7}  {metric[:9]:>9}  {'status':<8}  description".replace(" ", NBSP)


TABLE_HEADER = table_header()


@dataclass
class StatusLines:
    """What the live part of the view shows, computed from a Snapshot (pure, so tests read it)."""

    phase: str
    times: str
    progress: float
    bar_style: str
    counts: str
    warning: str = ""  # HTML: runs that went without the sandbox; "" when none did
    lanes: str = ""  # HTML: one line per lane while several run (`lane_lines`); "" with one lane: the bar above


def counts_line(counts: report.Summary, usage: tuple[int, float | None]) -> str:
    """Baseline runs apart from the candidates' keep / discard / crash (/ noop / stale), and the LLM's usage."""
    tokens, cost = usage
    noop = f" · noop <b>{counts.noop}</b>" if counts.noop else ""
    stale = f" · stale <b>{counts.stale}</b>" if counts.stale else ""
    return (
        f"baseline runs <b>{counts.baseline_runs}</b> · keep <b>{counts.keep}</b> · discard <b>{counts.discard}</b>"
        f" · crash <b>{counts.crash}</b>{noop}{stale}"
        f" · LLM tokens <b>{tokens:,}</b> · cost <b>{'-' if cost is None else f'${cost:.4f}'}</b>"
    )


def sandbox_warning(counts: report.Summary) -> str:
    text = counts.sandbox_warning()
    return f'<span class="ark-warning">{html.escape(text)}</span>' if text else ""


def lane_progress(elapsed: float | None, expected: float | None) -> tuple[float, str]:
    """A run's share of the expected time (capped at 1) and what to say of the time left.

    `expected` is the median run so far (`Snapshot.expected_run_seconds`): a run past it is not late yet, only
    longer than usual, and the lane's wall-clock limit still stands.
    """
    if elapsed is None or not expected:
        return 0.0, ""
    if elapsed >= expected:
        return 1.0, f"longer than the usual {format_duration(expected)}"
    return elapsed / expected, f"about {format_duration(expected - elapsed)} left"


def lane_lines(status: runstate.LoopStatus | None, expected_seconds: float | None, now: float, host: str = "") -> str:
    """One line per lane, as HTML: its number, device (and machine, when it is not `host`), what it runs or
    "idle", and a bar of the run's elapsed time against the expected one, with the time left.

    "" with one lane (or none reported): the single progress bar shows that lane, as before lanes existed.
    """
    known = {field.name for field in dataclasses.fields(runstate.LaneStatus)}  # a newer loop's extra keys: unread
    lanes = [runstate.LaneStatus(**{k: v for k, v in lane.items() if k in known})
             for lane in (status.lanes if status else [])]
    if len(lanes) <= 1:
        return ""
    lines = []
    for lane in lanes:
        where = html.escape(lane.device or "?")
        if lane.node and lane.node != host:
            where += f" on {html.escape(lane.node)}"
        head = f'<span class="ark-lane-name">lane {lane.lane}</span> <span class="ark-lane-device">{where}</span>'
        if lane.experiment is None:
            lines.append(f'<div class="ark-lane ark-lane-idle">{head} · <i>idle</i></div>')
            continue
        what = f"#{lane.experiment}" + (f" ({html.escape(lane.kind)})" if lane.kind else "")
        if lane.description:
            what += f": {html.escape(lane.description)}"
        elapsed = now - lane.started_at if lane.started_at else None
        share, left = lane_progress(elapsed, expected_seconds)
        times = ", ".join(part for part in (format_duration(elapsed) if elapsed is not None else "", left) if part)
        bar = f'<span class="ark-lane-bar"><span style="width:{share * 100:.0f}%"></span></span>'
        lines.append(f'<div class="ark-lane ark-lane-busy">{head} · {what} {bar} {times}</div>')
    return "".join(lines)


def busy_lanes(status: runstate.LoopStatus) -> int:
    return sum(1 for lane in status.lanes if lane.get("experiment") is not None)


def status_lines(snapshot: Snapshot, now: float | None = None, host: str | None = None) -> StatusLines:
    """The live lines. With several lanes the phase line counts the busy lanes and each lane gets a line of its
    own (`lane_lines`) instead of the single bar, which follows one experiment (today's look with one lane)."""
    now = time.time() if now is None else now
    host = platform.node() if host is None else host
    summary = report.summary(snapshot.frame)
    counts, warning = counts_line(summary, snapshot.llm_usage()), sandbox_warning(summary)
    status = snapshot.status
    if not snapshot.tag:
        return StatusLines("choose a run tag, then Start", "", 0.0, "", counts, warning)
    if status is None or not snapshot.running:
        phase = "stopped" if status is not None or len(snapshot.frame) else "not started"
        return StatusLines(f"<b>{html.escape(snapshot.tag)}</b>: {phase}", "", 0.0, "", counts, warning)
    expected = snapshot.expected_run_seconds()
    lanes = lane_lines(status, expected, now, host)
    if lanes:  # the phase's experiment is only the one started last: the lanes say what runs where
        what = f"· {busy_lanes(status)} of {report.plural(len(status.lanes), 'lane')} busy"
    else:
        what = f"experiment {status.experiment}" if status.experiment else ""
        if status.kind:
            what += f" ({status.kind})"
        if status.description:
            what += f": {html.escape(status.description)}"
    stopping = f" · <i>stopping after {'the running experiments' if lanes else 'this experiment'}</i>" \
        if snapshot.stop_requested else ""
    phase = f"<b>{html.escape(status.phase)}</b> {what}{stopping}"
    in_phase = now - status.phase_since if status.phase_since else None
    times = [f"run {format_duration(now - status.started_at if status.started_at else None)}",
             f"this phase {format_duration(in_phase)}"]
    progress = 0.0
    if not lanes and status.phase == "running" and in_phase is not None and expected:
        progress = min(in_phase / expected, 1.0)
        times.append(f"about {format_duration(max(expected - in_phase, 0.0))} left of this experiment")
    return StatusLines(phase, " · ".join(times), progress, "info", counts, warning, lanes)


def chart_png(frame: pd.DataFrame, width: float = 9.0, height: float = 3.6) -> bytes:
    """The report's progress chart with the gate's noise band, as PNG bytes (an Image widget takes them
    from any thread)."""
    from matplotlib.figure import Figure  # no pyplot: figures made here must not touch the notebook's state

    figure = Figure(figsize=(width, height), dpi=90)
    axes = figure.add_subplot(1, 1, 1)
    report.progress_chart(frame, ax=axes, band=True)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def chart_caption(frame: pd.DataFrame) -> str:
    """`val_bpb over 5 runs: 2 baseline runs, 3 experiments: 0 kept, 0 crashed` (the run's metric, and which
    way is better when it is higher)."""
    metric = report.metric_of(frame)
    named = metric.name if metric.lower_is_better else f"{metric.name} (higher is better)"
    return f"<b>{named}</b> over {report.plural(len(frame), 'run')}: {report.chart_title(report.summary(frame))}"


def notebook_link(notebook: Path, start: str | os.PathLike | None = None) -> str:
    """A link path to the executed notebook relative to the loop notebook's folder (the kernel's cwd).

    JupyterLab resolves a relative link in a Markdown output against the notebook's own path and opens
    the target in a new tab, whatever the server's root; so no server URL is needed here.
    """
    return Path(os.path.relpath(notebook, start or os.getcwd())).as_posix()


def api_key_note(environ: dict | None = None) -> str:
    """Whether the LLM key is in the environment: said, never shown."""
    present = bool((environ if environ is not None else os.environ).get(API_KEY_VARIABLE))
    state = "is set" if present else "is not set (needed by most endpoints)"
    return f"<small>API key: ${API_KEY_VARIABLE} {state} in the kernel's environment; it is never shown or stored.</small>"


def tag_note(tag: str, tags: list[str]) -> str:
    """What Start will do with this tag."""
    if not tag:
        return ""
    return f"<small>{'resumes this run' if tag in tags else 'a new run'}</small>"
