"""The dashboard's widgets: the set-up form, the buttons, the live status, the chart, the table, the detail.

Only layout and rendering live here: every value shown is computed from a `Snapshot` or a `Detail` by the
pure functions of shown.py (so tests read them without a browser), and nothing here reads files or starts
processes. The widgets carry stable `ark-*` class names: the browser test, and a user's CSS, find them so.
"""
from __future__ import annotations

import html

import pandas as pd

from autoresearch_kernel import report
from autoresearch_kernel.dashboard.control import PROPOSERS, SAMPLERS, USES_LLM, USES_OPTUNA, Settings
from autoresearch_kernel.dashboard.shown import (
    TABLE_HEADER,
    StatusLines,
    api_key_note,
    chart_caption,
    table_header,
    table_rows,
    tag_note,
)
from autoresearch_kernel.dashboard.snapshot import Detail
from autoresearch_kernel.workspace.worktree import PROGRAM

PROPOSER_HELP = {
    "mutate": "offline: steps one constant at a time",
    "llm": "a code change from any OpenAI-compatible model",
    "optuna": "Optuna over the constants: TPE, CMA-ES or random search (needs the search extra)",
    "hybrid": "the llm on a share of the experiments, Optuna on the rest",
}
MAX_LANES = 64  # the form's bound on lanes: more would only queue on the same devices

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


def _header_html(header: str) -> str:
    return f'<div class="ark-mono"><b>{header}</b></div>'


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

        setup = self._setup_form(w, settings, tags, program)
        controls = self._controls(w)
        self.root = w.VBox([w.HTML(STYLE), setup, controls, self.error, self._live(w)])
        self.root.add_class("ark-dashboard")
        # Stable class names: the browser test (and a user's CSS) find the fields by them.
        for name, widget in [("tag", self.tag), ("proposer", self.proposer), ("model", self.model),
                             ("endpoint", self.base_url), ("sampler", self.sampler), ("llm-share", self.llm_share),
                             ("budget-kind", self.budget_kind), ("budget", self.budget),
                             ("max-experiments", self.max_experiments), ("data-dir", self.data_dir),
                             ("profile", self.profile), ("device", self.device), ("lanes-field", self.lanes),
                             ("devices", self.devices),
                             ("start", self.start), ("stop", self.stop), ("abort", self.abort)]:
            widget.add_class(f"ark-{name}")

    def _setup_form(self, w, settings: Settings, tags: list[str], program: str):
        """The set-up form: the fields a loop is started with (disabled while one runs)."""
        wide = w.Layout(width="420px")
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
        self._setup = [self.tag, self.proposer, self.model, self.base_url, self.sampler, self.llm_share,
                       self.budget_kind, self.budget,
                       self.max_experiments, self.data_dir, self.profile, self.device, self.lanes, self.devices]
        return w.VBox([
            self.repo, w.HBox([self.tag, self.tag_note]), self.proposer, self.llm_box, self.search_box,
            w.HBox([self.budget_kind, self.budget]), self.max_experiments, self.data_dir,
            w.HBox([self.profile, self.device]), w.HBox([self.lanes, self.devices]), self.program,
        ])

    def _controls(self, w):
        """Start, Stop and Abort, and the line that shows an error."""
        self.start = w.Button(description="Start", button_style="success", icon="play")
        # with lanes a stop lets every experiment in flight finish (its confirmations too), not just one
        self.stop = w.Button(description="Stop after the running experiments", icon="stop",
                             layout=w.Layout(width="270px"))
        self.abort = w.Button(description="Abort now", button_style="danger", icon="times")
        self.error = w.HTML()
        self.error.add_class("ark-error-line")
        return w.HBox([self.start, self.stop, self.abort])

    def _live(self, w):
        """The live part: the phase, progress and lanes, the counts, the chart, the table and one experiment."""
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
        return w.VBox([
            self.phase, w.HBox([self.progress, self.times]), self.lanes_view, self.counts, self.warning,
            self.chart_caption, self.chart,
            self.table_header, self.table,
            self.detail_title, self.link, self.failure, self.diff,
        ])

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
