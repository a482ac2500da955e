"""The dashboard's widgets: the set-up form, the buttons, the live status, the chart, the table, the detail.

Only layout and rendering live here: every value shown is computed from a `Snapshot` or a `Detail` by the
pure functions at the top (so tests read them without a browser), and nothing here reads files or starts
processes. The widgets carry stable `ark-*` class names: the browser test, and a user's CSS, find them so.
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
from autoresearch_kernel.dashboard.control import PROPOSERS, SAMPLERS, USES_LLM, USES_OPTUNA, Settings
from autoresearch_kernel.dashboard.snapshot import Detail, Snapshot
from autoresearch_kernel.journal import runstate
from autoresearch_kernel.workspace.worktree import PROGRAM

API_KEY_VARIABLE = "OPENAI_API_KEY"  # the LLM proposer's key: read by the loop process, never by the widgets
PROPOSER_HELP = {
    "mutate": "offline: steps one constant at a time",
    "llm": "a code change from any OpenAI-compatible model",
    "optuna": "Optuna over the constants: TPE, CMA-ES or random search (needs the search extra)",
    "hybrid": "the llm on a share of the experiments, Optuna on the rest",
}
MAX_LANES = 64  # the form's bound on lanes: more would only queue on the same devices
NBSP = "\u00a0"  # a <select> collapses ordinary spaces, and the table's columns must line up


# ---------------------------------------------------------------------------------------------------------
# What the view shows, as pure functions of a reading.


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


def _header_html(header: str) -> str:
    return f'<div class="ark-mono"><b>{header}</b></div>'


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


# ---------------------------------------------------------------------------------------------------------
# The widgets: layout and rendering of a StatusLines / Detail. No file reads, no processes here.

STYLE = """<style>
.ark-table select, .ark-mono { font-family: var(--jp-code-font-family, monospace); font-size: 12px; }
.ark-error { color: #b00020; font-weight: 600; }
.ark-warning { color: #9a6700; font-weight: 600; }
.ark-pre { max-height: 320px; overflow: auto; background: var(--jp-layout-color2, #f5f5f5); padding: 4px;
           font-family: var(--jp-code-font-family, monospace); font-size: 12px; white-space: pre; margin: 0; }
.ark-lane { font-size: 12px; line-height: 20px; }
.ark-lane-name { font-weight: 600; } .ark-lane-device { font-family: var(--jp-code-font-family, monospace); }
.ark-lane-bar { display: inline-block; vertical-align: middle; width: 160px; height: 8px; margin: 0 4px;
                background: var(--jp-layout-color3, #ddd); border-radius: 2px; overflow: hidden; }
.ark-lane-bar > span { display: block; height: 100%; background: #2196f3; }
.ark-add { color: #1a7f37; } .ark-del { color: #b00020; } .ark-hunk { color: #6f42c1; }
</style>"""


def _pre(text: str, colour_diff: bool = False) -> str:
    if not text:
        return ""
    lines = []
    for line in text.splitlines():
        escaped = html.escape(line)
        if colour_diff and line.startswith("+") and not line.startswith("+++"):
            escaped = f'<span class="ark-add">{escaped}</span>'
        elif colour_diff and line.startswith("-") and not line.startswith("---"):
            escaped = f'<span class="ark-del">{escaped}</span>'
        elif colour_diff and line.startswith("@@"):
            escaped = f'<span class="ark-hunk">{escaped}</span>'
        lines.append(escaped)
    return '<pre class="ark-pre">' + "\n".join(lines) + "</pre>"


class DashboardView:
    """The dashboard's widgets and layout. `root` is the widget to display."""

    def __init__(self, settings: Settings, tags: list[str], program: str):
        import ipywidgets as w

        wide = w.Layout(width="420px")
        # -- set-up
        self.tag = w.Combobox(value=settings.tag, options=tags, description="run tag", placeholder="e.g. mar5",
                              ensure_option=False, layout=wide)
        self.tag_note = w.HTML(tag_note(settings.tag, tags))
        self.proposer = w.ToggleButtons(options=list(PROPOSERS), value=settings.proposer, description="proposer",
                                        tooltips=[PROPOSER_HELP.get(name, "") for name in PROPOSERS])
        self.sampler = w.Dropdown(options=[("default (tpe)", "")] + [(name, name) for name in SAMPLERS],
                                  value=settings.sampler, description="sampler")
        self.llm_share = w.BoundedFloatText(value=settings.llm_share, min=0.0, max=1.0, step=0.05,
                                            description="llm share", tooltip="0: the loop's default (0.3)")
        self.model = w.Text(value=settings.model, description="model", layout=wide,
                            placeholder="e.g. gpt-4.1-mini (default: $AUTORESEARCH_MODEL)")
        self.base_url = w.Text(value=settings.base_url, description="endpoint", layout=wide,
                               placeholder="any OpenAI-compatible URL (default: $OPENAI_BASE_URL, else OpenAI)")
        self.key_note = w.HTML(api_key_note())
        self.budget_kind = w.Dropdown(options=[("seconds / experiment", "seconds"), ("tokens / experiment", "tokens"),
                                               ("FLOPs / experiment", "flops")],
                                      value=settings.budget_kind, description="budget in")
        self.budget = w.FloatText(value=settings.budget, description="budget",
                                  tooltip="0: the profile's default")
        self.max_experiments = w.BoundedIntText(value=settings.max_experiments, min=0, max=1_000_000,
                                                description="max exps", tooltip="0: until stopped")
        self.data_dir = w.Text(value=settings.data_dir, description="data dir", placeholder="(default)", layout=wide)
        self.profile = w.ToggleButtons(options=["cpu", "gpu"], value=settings.profile, description="profile",
                                       tooltip="as the data was prepared")
        self.device = w.Text(value=settings.device, description="device", placeholder="auto | cpu | cuda | cuda:N | mps")
        self.lanes = w.BoundedIntText(value=settings.lanes, min=1, max=MAX_LANES, description="lanes",
                                      tooltip="experiments in flight at once (1: one after another)")
        self.devices = w.Text(value=settings.devices, description="devices", placeholder="cuda:0,cuda:1 or all",
                              tooltip="the lanes' devices, in turn (empty: every lane uses the device above)")
        self.repo = w.HTML(f"<small>repository: <code>{html.escape(settings.repo)}</code></small>")
        program_view = w.HTML(_pre(program or f"({PROGRAM} not found)"))
        self.program = w.Accordion(children=[program_view], titles=(PROGRAM,), selected_index=None)
        self.llm_box = w.VBox([self.model, self.base_url, self.key_note])
        self.search_box = w.HBox([self.sampler, self.llm_share])
        self.proposer.observe(lambda _: self._show_proposer_fields(), names="value")
        self._show_proposer_fields()
        setup = w.VBox([
            self.repo, w.HBox([self.tag, self.tag_note]), self.proposer, self.llm_box, self.search_box,
            w.HBox([self.budget_kind, self.budget]), self.max_experiments, self.data_dir,
            w.HBox([self.profile, self.device]), w.HBox([self.lanes, self.devices]), self.program,
        ])
        # -- controls
        self.start = w.Button(description="Start", button_style="success", icon="play")
        # with lanes a stop lets every experiment in flight finish (its confirmations too), not just one
        self.stop = w.Button(description="Stop after the running experiments", icon="stop",
                             layout=w.Layout(width="270px"))
        self.abort = w.Button(description="Abort now", button_style="danger", icon="times")
        self.error = w.HTML()
        self.error.add_class("ark-error-line")
        # -- live
        self.phase = w.HTML()
        self.phase.add_class("ark-phase")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="budget",
                                        layout=w.Layout(width="420px"))
        self.times = w.HTML()
        self.lanes_view = w.HTML(layout=w.Layout(display="none"))  # shown while several lanes run
        self.lanes_view.add_class("ark-lanes")
        self.counts = w.HTML()
        self.counts.add_class("ark-counts")
        self.warning = w.HTML()
        self.warning.add_class("ark-warning-line")
        self.chart = w.Image(format="png", layout=w.Layout(max_width="820px", display="none"))  # until rows come
        self.chart.add_class("ark-chart")
        self.chart_caption = w.HTML()
        self.chart_caption.add_class("ark-chart-caption")
        # -- per experiment
        self.table_header = w.HTML(_header_html(TABLE_HEADER))
        self.table = w.Select(options=[], rows=10, layout=w.Layout(width="820px"))
        self.table.add_class("ark-table")
        self.detail_title = w.HTML()
        self.link = w.Output()
        self.link.add_class("ark-link")
        self.failure = w.HTML()
        self.diff = w.HTML()
        self.diff.add_class("ark-diff")
        live = w.VBox([
            self.phase, w.HBox([self.progress, self.times]), self.lanes_view, self.counts, self.warning,
            self.chart_caption, self.chart,
            self.table_header, self.table,
            self.detail_title, self.link, self.failure, self.diff,
        ])
        self.root = w.VBox([
            w.HTML(STYLE), setup, w.HBox([self.start, self.stop, self.abort]), self.error, live,
        ])
        self.root.add_class("ark-dashboard")
        self._setup = [self.tag, self.proposer, self.model, self.base_url, self.sampler, self.llm_share,
                       self.budget_kind, self.budget,
                       self.max_experiments, self.data_dir, self.profile, self.device, self.lanes, self.devices]
        # Stable class names: the browser test (and a user's CSS) find the fields by them.
        for name, widget in [("tag", self.tag), ("proposer", self.proposer), ("model", self.model),
                             ("endpoint", self.base_url), ("sampler", self.sampler), ("llm-share", self.llm_share),
                             ("budget-kind", self.budget_kind), ("budget", self.budget),
                             ("max-experiments", self.max_experiments), ("data-dir", self.data_dir),
                             ("profile", self.profile), ("device", self.device), ("lanes-field", self.lanes),
                             ("devices", self.devices),
                             ("start", self.start), ("stop", self.stop), ("abort", self.abort)]:
            widget.add_class(f"ark-{name}")

    def _show_proposer_fields(self) -> None:
        self.llm_box.layout.display = "" if self.proposer.value in USES_LLM else "none"
        self.search_box.layout.display = "" if self.proposer.value in USES_OPTUNA else "none"
        self.llm_share.layout.display = "" if self.proposer.value == "hybrid" else "none"

    # -- reading the form
    def settings(self, repo: str) -> Settings:
        return Settings(
            repo=repo, tag=self.tag.value.strip(), data_dir=self.data_dir.value.strip(),
            profile=self.profile.value, device=self.device.value.strip() or "auto",
            proposer=self.proposer.value, model=self.model.value.strip(), base_url=self.base_url.value.strip(),
            sampler=self.sampler.value, llm_share=float(self.llm_share.value or 0.0),
            budget_kind=self.budget_kind.value, budget=float(self.budget.value or 0.0),
            max_experiments=int(self.max_experiments.value or 0),
            lanes=int(self.lanes.value or 1), devices=self.devices.value.strip(),
        )

    # -- showing state
    def show_error(self, text: str) -> None:
        self.error.value = f'<span class="ark-error">error: {html.escape(text)}</span>' if text else ""

    def show_controls(self, running: bool, stopping: bool) -> None:
        """Set-up and Start while idle; Stop and Abort while a loop runs."""
        for widget in self._setup:
            widget.disabled = running
        self.start.disabled = running
        self.stop.disabled = not running or stopping
        self.abort.disabled = not running

    def show_status(self, lines: StatusLines) -> None:
        self.phase.value = lines.phase
        self.times.value = lines.times
        self.progress.value = lines.progress
        self.progress.bar_style = lines.bar_style
        self.progress.layout.display = "none" if lines.lanes else ""  # each lane has its own bar then
        self.lanes_view.value = lines.lanes
        self.lanes_view.layout.display = "" if lines.lanes else "none"
        self.counts.value = lines.counts
        self.warning.value = lines.warning

    def show_results(self, frame: pd.DataFrame, png: bytes | None) -> None:
        rows = table_rows(frame)
        self.table_header.value = _header_html(table_header(report.metric_of(frame).name))
        selected = self.table.value
        self.table.options = rows
        if rows:
            numbers = [number for _, number in rows]
            self.table.value = selected if selected in numbers else None
        if png is not None:
            self.chart.value = png
            self.chart.layout.display = ""
            self.chart_caption.value = chart_caption(frame)

    def show_detail(self, detail: Detail | None, link: str | None) -> None:
        from IPython.display import Markdown

        self.link.clear_output()
        if detail is None:
            self.detail_title.value = self.failure.value = self.diff.value = ""
            return
        self.detail_title.value = f"<b>{html.escape(detail.title)}</b>"
        if link:
            self.link.append_display_data(Markdown(f"[open the executed notebook]({link})"))
        self.failure.value = ("<b>failure</b>" + _pre(detail.failure)) if detail.failure else ""
        self.diff.value = ("<b>diff against its parent</b>" + _pre(detail.diff, colour_diff=True)) if detail.diff else \
            "<i>no change against its parent (a baseline run)</i>"
