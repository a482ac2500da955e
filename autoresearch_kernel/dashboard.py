"""The controller dashboard that notebooks/loop.ipynb shows: ipywidgets over the loop's files on disk.

No loop logic lives here. Start launches the command the terminal uses, `python -m autoresearch_kernel
loop ...`, as a detached child process (a session of its own), so the loop survives the browser tab being
closed and the kernel being restarted. From then on the dashboard only reads what the loop writes (its
status file, its per-tag lock, results.tsv: see `runstate`) on a timer, and sends the loop its two
requests through files: stop after this experiment, abort now. Opening the notebook again finds a live loop through its lock and reattaches to it
instead of starting a second one.

Three parts, one concern each:
- `LoopControl`: launching the loop process and signalling it (start, stop, abort, who holds the lock).
- `read_snapshot`: one consistent reading of a run from disk (`Snapshot`), pure reads, no widgets.
- `DashboardView` (the widgets and their layout) and `Dashboard` (the glue: buttons to `LoopControl`,
  a polling thread from `read_snapshot` to the view).
"""
from __future__ import annotations

import html
import io
import math
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from autoresearch_kernel import plots, results, runstate, workspace
from autoresearch_kernel.errors import AutoresearchError, WorkspaceError
from autoresearch_kernel.runner import ANSI_ESCAPE

POLL_SECONDS = 1.0  # how often the view reads the run from disk: cheap reads, a chart only on new rows
PROGRAM = "program.md"
API_KEY_VARIABLE = "OPENAI_API_KEY"  # the LLM proposer's key: read by the loop process, never by the widgets
INVALID = "invalid.tsv"  # the loop's record of proposals that did not apply, beside results.tsv
CONSOLE_LOG = "dashboard-console.log"  # the loop process's stdout and stderr, when the dashboard started it


# ---------------------------------------------------------------------------------------------------------
# Settings: what the set-up widgets hold, and the command line they turn into.


@dataclass
class Settings:
    """One run's set-up, as the form holds it. The API key is not here: the loop reads it from the environment."""

    repo: str  # the project's git repository
    tag: str
    data_dir: str = ""  # "" means the loop's default
    proposer: str = "mutate"  # mutate | llm
    model: str = ""  # llm only
    base_url: str = ""  # llm only: any OpenAI-compatible endpoint
    budget_kind: str = "seconds"  # seconds | tokens: per experiment, as in the CLI
    budget: float = 0.0  # 0: the profile's default
    max_experiments: int = 0  # 0: until stopped

    def loop_argv(self, resume: bool) -> list[str]:
        """The CLI command that runs this loop (the same one a terminal user types)."""
        argv = [sys.executable, "-m", "autoresearch_kernel", "loop", "--tag", self.tag, "--repo", self.repo]
        argv += ["--proposer", self.proposer]
        if self.data_dir:
            argv += ["--data-dir", self.data_dir]
        if self.proposer == "llm" and self.model:
            argv += ["--model", self.model]
        if self.proposer == "llm" and self.base_url:
            argv += ["--base-url", self.base_url]
        if self.budget > 0:
            flag = "--budget-tokens" if self.budget_kind == "tokens" else "--budget-seconds"
            argv += [flag, str(int(self.budget)) if self.budget_kind == "tokens" else str(float(self.budget))]
        if self.max_experiments > 0:
            argv += ["--max-experiments", str(int(self.max_experiments))]
        if resume:
            argv += ["--resume"]
        return argv


# ---------------------------------------------------------------------------------------------------------
# Reading a run: pure functions of results.tsv and the loop's files, shared by the view and the notebook.


def results_path(repo: str | os.PathLike, tag: str) -> Path:
    return workspace.run_dir(repo, tag) / "results.tsv"


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


def one_line_error(error: BaseException | str) -> str:
    """An error as the dashboard's single line: the message, never a traceback."""
    text = str(error).strip() or type(error).__name__
    first = text.splitlines()[-1] if isinstance(error, str) else text.splitlines()[0]
    return results.one_line(first, 400)


def table_rows(frame: pd.DataFrame) -> list[tuple[str, int]]:
    """The results as fixed-width lines for the table (label, experiment number), newest last.

    Spaces are non-breaking: a <select> collapses ordinary ones, and the columns must line up.
    """
    lines = []
    for record in frame.to_dict("records"):
        number = int(record.get("experiment") or 0)
        value = record.get("val_bpb")
        shown = "-" if record.get("status") == "crash" or value is None or pd.isna(value) else f"{value:.6f}"
        commit, status = str(record.get("commit", ""))[:7], str(record.get("status", ""))
        line = f"{number:>4}  {commit:<7}  {shown:>9}  {status:<7}  {record.get('description', '')}"
        lines.append((line.replace(" ", "\u00a0"), number))
    return lines


TABLE_HEADER = f"{'#':>4}  {'commit':<7}  {'val_bpb':>9}  {'status':<7}  description".replace(" ", "\u00a0")


@dataclass
class Detail:
    """What the dashboard shows for one selected experiment."""

    number: int
    title: str  # "#3 abc1234 discard: MATRIX_LR 0.04 -> 0.05"
    diff: str  # unified diff of cell sources against its parent; "" when there is none to show
    failure: str  # the row's one-line reason and the tail of the notebook's log, for crashes
    notebook: Path | None  # the executed notebook, when it is on disk


FAILURE_TAIL_LINES = 15


def _row(frame: pd.DataFrame, number: int) -> dict | None:
    if "experiment" not in frame:
        return None
    match = frame[pd.to_numeric(frame["experiment"], errors="coerce") == number]
    return match.iloc[-1].to_dict() if len(match) else None


def _diff(repo: str | os.PathLike, commit: str) -> str:
    """The candidate's diff against its parent, from the kept branch or its discarded ref (both share objects)."""
    if not commit:
        return ""
    try:
        return workspace.diff_of(repo, commit)
    except Exception as error:  # a reference-format file, a pruned ref: say so instead of failing the view
        return f"(no diff: {one_line_error(error)})"


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(ANSI_ESCAPE.sub("", line) for line in lines[-FAILURE_TAIL_LINES:])


def experiment_detail(repo: str | os.PathLike, tag: str, frame: pd.DataFrame, number: int) -> Detail | None:
    """The selected experiment's diff, failure excerpt and executed notebook; None when there is no such row."""
    record = _row(frame, number)
    if record is None:
        return None
    commit = str(record.get("commit") or "")
    status = str(record.get("status") or "")
    title = f"#{number} {commit} {status}: {record.get('description', '')}"
    notebook = None
    if record.get("notebook"):
        candidate = workspace.run_dir(repo, tag) / str(record["notebook"])
        notebook = candidate if candidate.exists() else None
    failure = str(record.get("failure") or "")
    if status == "crash" and notebook is not None:
        tail = _log_tail(notebook.with_suffix(".log"))
        failure = f"{failure}\n{tail}".strip()
    return Detail(number=number, title=title, diff=_diff(repo, commit), failure=failure, notebook=notebook)


def notebook_link(notebook: Path, start: str | os.PathLike | None = None) -> str:
    """A link path to the executed notebook relative to the loop notebook's folder (the kernel's cwd).

    JupyterLab resolves a relative link in a Markdown output against the notebook's own path and opens
    the target in a new tab, whatever the server's root; so no server URL is needed here.
    """
    return Path(os.path.relpath(notebook, start or os.getcwd())).as_posix()


# ---------------------------------------------------------------------------------------------------------
# The chart: the reference's progress chart with the gate's noise band (plots.py), as PNG bytes.


def chart_png(frame: pd.DataFrame, width: float = 9.0, height: float = 3.6) -> bytes:
    """The progress chart as PNG bytes (an Image widget can take them from any thread)."""
    from matplotlib.figure import Figure  # no pyplot: figures made here must not touch the notebook's state

    figure = Figure(figsize=(width, height), dpi=90)
    axes = figure.add_subplot(1, 1, 1)
    plots.progress_chart(frame, ax=axes, band=True)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------
# The widgets: layout and rendering of a Snapshot / Detail. No file reads, no processes here.

STYLE = """<style>
.ark-table select, .ark-mono { font-family: var(--jp-code-font-family, monospace); font-size: 12px; }
.ark-error { color: #b00020; font-weight: 600; }
.ark-pre { max-height: 320px; overflow: auto; background: var(--jp-layout-color2, #f5f5f5); padding: 4px;
           font-family: var(--jp-code-font-family, monospace); font-size: 12px; white-space: pre; margin: 0; }
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


class DashboardView:
    """The dashboard's widgets and layout. `root` is the widget to display."""

    def __init__(self, settings: Settings, tags: list[str], program: str):
        import ipywidgets as w

        wide = w.Layout(width="420px")
        # -- set-up
        self.tag = w.Combobox(value=settings.tag, options=tags, description="run tag", placeholder="e.g. mar5",
                              ensure_option=False, layout=wide)
        self.tag_note = w.HTML(tag_note(settings.tag, tags))
        self.proposer = w.ToggleButtons(options=["mutate", "llm"], value=settings.proposer, description="proposer")
        self.model = w.Text(value=settings.model, description="model", layout=wide,
                            placeholder="e.g. gpt-4.1-mini (default: $AUTORESEARCH_MODEL)")
        self.base_url = w.Text(value=settings.base_url, description="endpoint", layout=wide,
                               placeholder="any OpenAI-compatible URL (default: $OPENAI_BASE_URL, else OpenAI)")
        self.key_note = w.HTML(api_key_note())
        self.budget_kind = w.Dropdown(options=[("seconds / experiment", "seconds"), ("tokens / experiment", "tokens")],
                                      value=settings.budget_kind, description="budget in")
        self.budget = w.FloatText(value=settings.budget, description="budget",
                                  tooltip="0: the profile's default")
        self.max_experiments = w.BoundedIntText(value=settings.max_experiments, min=0, max=1_000_000,
                                                description="max exps", tooltip="0: until stopped")
        self.data_dir = w.Text(value=settings.data_dir, description="data dir", placeholder="(default)", layout=wide)
        self.repo = w.HTML(f"<small>repository: <code>{html.escape(settings.repo)}</code></small>")
        program_view = w.HTML(_pre(program or f"({PROGRAM} not found)"))
        self.program = w.Accordion(children=[program_view], titles=(PROGRAM,), selected_index=None)
        self.llm_box = w.VBox([self.model, self.base_url, self.key_note])
        self.proposer.observe(lambda _: self._show_llm_fields(), names="value")
        self._show_llm_fields()
        setup = w.VBox([
            self.repo, w.HBox([self.tag, self.tag_note]), self.proposer, self.llm_box,
            w.HBox([self.budget_kind, self.budget]), self.max_experiments, self.data_dir, self.program,
        ])
        # -- controls
        self.start = w.Button(description="Start", button_style="success", icon="play")
        self.stop = w.Button(description="Stop after this experiment", icon="stop", layout=w.Layout(width="220px"))
        self.abort = w.Button(description="Abort now", button_style="danger", icon="times")
        self.error = w.HTML()
        self.error.add_class("ark-error-line")
        # -- live
        self.phase = w.HTML()
        self.phase.add_class("ark-phase")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="budget",
                                        layout=w.Layout(width="420px"))
        self.times = w.HTML()
        self.counts = w.HTML()
        self.counts.add_class("ark-counts")
        self.chart = w.Image(format="png", layout=w.Layout(max_width="820px", display="none"))  # until rows come
        self.chart.add_class("ark-chart")
        self.chart_caption = w.HTML()
        self.chart_caption.add_class("ark-chart-caption")
        # -- per experiment
        self.table = w.Select(options=[], rows=10, layout=w.Layout(width="820px"))
        self.table.add_class("ark-table")
        self.detail_title = w.HTML()
        self.link = w.Output()
        self.link.add_class("ark-link")
        self.failure = w.HTML()
        self.diff = w.HTML()
        self.diff.add_class("ark-diff")
        live = w.VBox([
            self.phase, w.HBox([self.progress, self.times]), self.counts, self.chart_caption, self.chart,
            w.HTML(f'<div class="ark-mono"><b>{TABLE_HEADER}</b></div>'), self.table,
            self.detail_title, self.link, self.failure, self.diff,
        ])
        self.root = w.VBox([
            w.HTML(STYLE), setup, w.HBox([self.start, self.stop, self.abort]), self.error, live,
        ])
        self.root.add_class("ark-dashboard")
        self._setup = [self.tag, self.proposer, self.model, self.base_url, self.budget_kind, self.budget,
                       self.max_experiments, self.data_dir]
        # Stable class names: the browser test (and a user's CSS) find the fields by them.
        for name, widget in [("tag", self.tag), ("proposer", self.proposer), ("model", self.model),
                             ("endpoint", self.base_url), ("budget-kind", self.budget_kind), ("budget", self.budget),
                             ("max-experiments", self.max_experiments), ("data-dir", self.data_dir),
                             ("start", self.start), ("stop", self.stop), ("abort", self.abort)]:
            widget.add_class(f"ark-{name}")

    def _show_llm_fields(self) -> None:
        self.llm_box.layout.display = "" if self.proposer.value == "llm" else "none"

    # -- reading the form
    def settings(self, repo: str) -> Settings:
        return Settings(
            repo=repo, tag=self.tag.value.strip(), data_dir=self.data_dir.value.strip(),
            proposer=self.proposer.value, model=self.model.value.strip(), base_url=self.base_url.value.strip(),
            budget_kind=self.budget_kind.value, budget=float(self.budget.value or 0.0),
            max_experiments=int(self.max_experiments.value or 0),
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

    def show_status(self, lines: "StatusLines") -> None:
        self.phase.value = lines.phase
        self.times.value = lines.times
        self.progress.value = lines.progress
        self.progress.bar_style = lines.bar_style
        self.counts.value = lines.counts

    def show_results(self, frame: pd.DataFrame, png: bytes | None) -> None:
        rows = table_rows(frame)
        selected = self.table.value
        self.table.options = rows
        if rows:
            numbers = [number for _, number in rows]
            self.table.value = selected if selected in numbers else None
        if png is not None:
            self.chart.value = png
            self.chart.layout.display = ""
            self.chart_caption.value = f"<b>val_bpb</b> over {len(frame)} experiments"

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


# ---------------------------------------------------------------------------------------------------------
# The loop process: started detached through the CLI, steered through the run's files (runstate).


@dataclass
class LoopControl:
    """Start, stop and abort one tag's loop; tell whether one is running. Knows no loop logic."""

    repo: str
    tag: str
    process: subprocess.Popen | None = None  # the loop this kernel started, while this kernel lives

    @property
    def folder(self) -> Path:
        return workspace.run_dir(self.repo, self.tag)

    def running(self) -> bool:
        """A loop holds the tag's lock, or the one just launched has not taken it yet."""
        launched = self.process is not None and self.process.poll() is None
        return launched or runstate.is_running(self.repo, self.tag)

    def start(self, settings: Settings) -> None:
        """Launch `python -m autoresearch_kernel loop ...` in a session of its own; resume an existing tag.

        A loop already running for the tag is never started twice: the dashboard attaches to it instead.
        """
        workspace.check_tag(settings.tag)
        if self.running():
            raise WorkspaceError(f"run tag {self.tag!r} is already running: attached to it")
        resume = workspace.tag_exists(self.repo, settings.tag)
        self.folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # the console log fills as the loop prints
        with open(self.folder / CONSOLE_LOG, "wb") as console:
            self.process = subprocess.Popen(
                settings.loop_argv(resume), cwd=self.repo, env=env, stdin=subprocess.DEVNULL,
                stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,  # not in the kernel's group: a kernel restart or interrupt spares it
            )

    def stop(self) -> None:
        runstate.request_stop(self.repo, self.tag)

    def abort(self) -> None:
        runstate.request_abort(self.repo, self.tag)

    def stop_requested(self) -> bool:
        return (self.folder / runstate.STOP).exists()

    def reap(self) -> None:
        """Collect the exit status of a launched loop that ended, so it leaves no zombie behind."""
        if self.process is not None and self.process.poll() is not None:
            self.process = None


ERROR_LINE = re.compile(r"^(?:[\w.-]+: )?error: (.*)$")  # the CLI's `error: ...`, argparse's `prog: error: ...`


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
        return results.one_line(lines[-1], 400)
    return ""


# ---------------------------------------------------------------------------------------------------------
# One reading of a run from disk, and the lines the view shows for it.


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
        error = console_error(control.folder / CONSOLE_LOG)
    return Snapshot(
        tag=control.tag, frame=results.load(results_path(control.repo, control.tag)), status=status,
        invalid=results.load(control.folder / INVALID),
        running=running, stop_requested=running and control.stop_requested(), error=error,
    )


@dataclass
class StatusLines:
    """What the live part of the view shows, computed from a Snapshot (pure, so tests read it)."""

    phase: str
    times: str
    progress: float
    bar_style: str
    counts: str


def expected_run_seconds(snapshot: Snapshot) -> float | None:
    """How long one experiment's notebook takes: the median of the finished ones, else its budget."""
    walls = pd.to_numeric(snapshot.frame.get("wall_seconds", pd.Series(dtype=float)), errors="coerce").dropna()
    walls = walls[walls > 0]
    if len(walls):
        return float(walls.median())
    status = snapshot.status
    if status is not None and status.budget_seconds > 0:
        return float(status.budget_seconds)
    return None


def status_lines(snapshot: Snapshot, now: float | None = None) -> StatusLines:
    now = time.time() if now is None else now
    counts = plots.summary(snapshot.frame)
    tokens, cost = llm_usage(snapshot.frame)
    if snapshot.invalid is not None and len(snapshot.invalid):
        more_tokens, more_cost = llm_usage(snapshot.invalid)
        tokens += more_tokens
        cost = more_cost if cost is None else cost + (more_cost or 0.0)
    counts_line = (
        f"keep <b>{counts.keep}</b> · discard <b>{counts.discard}</b> · crash <b>{counts.crash}</b>"
        f" · LLM tokens <b>{tokens:,}</b> · cost <b>{'-' if cost is None else f'${cost:.4f}'}</b>"
    )
    status = snapshot.status
    if not snapshot.tag:
        return StatusLines("choose a run tag, then Start", "", 0.0, "", counts_line)
    if status is None or not snapshot.running:
        phase = "stopped" if status is not None or len(snapshot.frame) else "not started"
        return StatusLines(f"<b>{html.escape(snapshot.tag)}</b>: {phase}", "", 0.0, "", counts_line)
    what = f"experiment {status.experiment}" if status.experiment else ""
    if status.kind:
        what += f" ({status.kind})"
    if status.description:
        what += f": {html.escape(status.description)}"
    stopping = " · <i>stopping after this experiment</i>" if snapshot.stop_requested else ""
    phase = f"<b>{html.escape(status.phase)}</b> {what}{stopping}"
    in_phase = now - status.phase_since if status.phase_since else None
    times = [f"run {format_duration(now - status.started_at if status.started_at else None)}",
             f"this phase {format_duration(in_phase)}"]
    progress = 0.0
    expected = expected_run_seconds(snapshot)
    if status.phase == "running" and in_phase is not None and expected:
        progress = min(in_phase / expected, 1.0)
        times.append(f"about {format_duration(max(expected - in_phase, 0.0))} left of this experiment")
    return StatusLines(phase, " · ".join(times), progress, "info", counts_line)


# ---------------------------------------------------------------------------------------------------------
# The glue: buttons to LoopControl, a polling thread from read_snapshot to the view.


class Poller:
    """Calls `tick` every `seconds` on a daemon thread until `close`; a failing tick never ends it."""

    def __init__(self, seconds: float, tick, on_error):
        self._seconds, self._tick, self._on_error = seconds, tick, on_error
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.wait(self._seconds):
            try:
                self._tick()
            except Exception as error:  # a bad read must not freeze the dashboard: say it and go on
                self._on_error(error)

    def close(self) -> None:
        self._closed.set()


def read_program(repo: str | os.PathLike) -> str:
    try:
        return (Path(repo) / PROGRAM).read_text(encoding="utf-8")
    except OSError:
        return ""


def default_tag(repo: str | os.PathLike, tags: list[str]) -> str:
    """The tag to show when none is given: one whose loop is running now (so that reopening the notebook
    reattaches to it), else the one with the latest results, else ""."""
    running = [tag for tag in tags if runstate.is_running(repo, tag)]
    if running:
        return running[0]
    written = [(results_path(repo, tag).stat().st_mtime, tag) for tag in tags if results_path(repo, tag).exists()]
    return max(written)[1] if written else ""


def known_tags(repo: str | os.PathLike) -> list[str]:
    """The run tags with a branch, a results.tsv (a copied-in run has only that) or a loop lock."""
    try:
        tags = set(workspace.list_tags(repo))
    except AutoresearchError:  # not a git repository (yet): its runs/ may still be read
        tags = set()
    runs = Path(repo) / workspace.RUNS
    for name in ("results.tsv", runstate.LOCK):
        tags.update(path.parent.name for path in runs.glob(f"*/{name}"))
    return sorted(tags)


class Dashboard:
    """The controller: `Dashboard(repo=..., tag=...)` in a notebook cell shows it; it never blocks.

    With no tag given, a tag whose loop is running is picked (so reopening the notebook reattaches), else
    the latest run.
    """

    _latest: "Dashboard | None" = None  # running the cell again replaces the dashboard: its poller stops

    def __init__(self, repo: str | os.PathLike = ".", tag: str = "", poll_seconds: float = POLL_SECONDS,
                 **settings):
        repo = str(Path(repo).resolve())
        tags = known_tags(repo)
        settings = Settings(repo=repo, tag=tag or default_tag(repo, tags), **settings)
        self.repo = repo
        self.view = DashboardView(settings, tags, read_program(repo))
        self.control = LoopControl(repo, settings.tag)
        self._lock = threading.Lock()  # the poller and the buttons both refresh the view
        self._shown_rows: tuple | None = None  # (tag, rows, file size) the chart was last drawn for
        self._action_error = ""  # the last button's error: shown until the next action
        self.view.start.on_click(lambda _: self._act(self.start))
        self.view.stop.on_click(lambda _: self._act(self.stop))
        self.view.abort.on_click(lambda _: self._act(self.abort))
        self.view.tag.observe(lambda _: self._act(self._tag_changed), names="value")
        self.view.table.observe(lambda _: self._act(self._show_selected), names="value")
        self.refresh()
        # A failed reading shows as the error line until a reading succeeds again (it is not sticky).
        self.poller = Poller(poll_seconds, self.refresh, lambda error: self.view.show_error(one_line_error(error))) \
            if poll_seconds > 0 else None
        if Dashboard._latest is not None:
            Dashboard._latest.close()
        Dashboard._latest = self

    # -- what the buttons do
    def start(self) -> None:
        settings = self.view.settings(self.repo)
        self.control = LoopControl(self.repo, settings.tag)
        self.control.start(settings)
        self.refresh()

    def stop(self) -> None:
        self.control.stop()
        self.refresh()

    def abort(self) -> None:
        self.control.abort()
        self.refresh()

    def close(self) -> None:
        """Stop watching (the loop itself keeps running: use stop() or abort() for that)."""
        if self.poller is not None:
            self.poller.close()

    # -- keeping the view current
    def refresh(self) -> Snapshot:
        """Read the run from disk once and show it (the poller calls this every POLL_SECONDS)."""
        with self._lock:
            snapshot = read_snapshot(self.control)
            self.control.reap()
            self.view.show_controls(snapshot.running, snapshot.stop_requested)
            self.view.show_status(status_lines(snapshot))
            self.view.show_error(self._action_error or snapshot.error)
            self._show_results(snapshot)
            return snapshot

    def _show_results(self, snapshot: Snapshot) -> None:
        path = results_path(self.repo, snapshot.tag) if snapshot.tag else None
        shown = (snapshot.tag, len(snapshot.frame), path.stat().st_size if path and path.exists() else 0)
        if shown == self._shown_rows:
            return
        self._shown_rows = shown
        png = chart_png(snapshot.frame) if len(snapshot.frame) else None
        self.view.show_results(snapshot.frame, png)

    def _tag_changed(self) -> None:
        tag = self.view.tag.value.strip()
        if self.control.running() or tag == self.control.tag:
            return
        self.control = LoopControl(self.repo, tag)
        self.view.tag_note.value = ""
        if tag:
            workspace.check_tag(tag)
        self.view.tag_note.value = tag_note(tag, known_tags(self.repo))
        self.refresh()

    def _show_selected(self) -> None:
        number = self.view.table.value
        if number is None:
            self.view.show_detail(None, None)
            return
        frame = results.load(results_path(self.repo, self.control.tag))
        detail = experiment_detail(self.repo, self.control.tag, frame, number)
        link = notebook_link(detail.notebook) if detail and detail.notebook else None
        self.view.show_detail(detail, link)

    def _act(self, action) -> None:
        """Run a button's action; any error becomes the one-line error (it stays until the next action)."""
        self._action_error = ""
        try:
            action()
        except Exception as error:  # the user clicked: a line they can act on, never a traceback wall
            self._show_error(error)

    def _show_error(self, error: BaseException) -> None:
        self._action_error = one_line_error(error)
        self.view.show_error(self._action_error)

    def _repr_mimebundle_(self, **kwargs):
        return self.view.root._repr_mimebundle_(**kwargs)
