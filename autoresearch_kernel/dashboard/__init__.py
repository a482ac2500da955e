"""The controller dashboard that notebooks/loop.ipynb shows: ipywidgets over the loop's files on disk.

No loop logic lives here. Start launches the command the terminal uses, `python -m autoresearch_kernel
loop ...`, as a detached child process (a session of its own), so the loop survives the browser tab being
closed and the kernel being restarted. From then on the dashboard only reads what the loop writes (its
status file, its per-tag lock, results.tsv: see `runstate`) on a timer, and sends the loop its two
requests through files: stop after this experiment, abort now. Opening the notebook again finds a live loop
through its lock and reattaches to it instead of starting a second one.

Three parts, one concern each:
- `control`: the loop process: its command line (`Settings`), launching and signalling it (`LoopControl`).
- `snapshot`: one consistent reading of a run from disk (`read_snapshot` -> `Snapshot`), pure reads, no widgets.
- `shown`: the pure functions that turn a reading into what the widgets show (text, HTML, the chart's PNG).
- `view`: the widgets and their layout (`DashboardView`).
Here, `Dashboard` is the glue: buttons to `LoopControl`, a polling thread from `read_snapshot` to the view.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from autoresearch_kernel.journal import results
from autoresearch_kernel import workspace
from autoresearch_kernel.dashboard.control import CONSOLE_LOG, LoopControl, Settings
from autoresearch_kernel.dashboard.snapshot import (
    Snapshot, default_tag, experiment_detail, known_tags, one_line_error, read_snapshot, results_path,
)
from autoresearch_kernel.dashboard.shown import chart_png, notebook_link, status_lines, tag_note
from autoresearch_kernel.dashboard.view import DashboardView

__all__ = ["CONSOLE_LOG", "Dashboard", "LoopControl", "Settings", "Snapshot", "results_path"]

POLL_SECONDS = 1.0  # how often the view reads the run from disk: cheap reads, a chart only on new rows


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


class Dashboard:
    """The controller: `Dashboard(repo=..., tag=...)` in a notebook cell shows it; it never blocks.

    With no tag given, a tag whose loop is running is picked (so reopening the notebook reattaches), else
    the latest run.
    """

    _latest: Dashboard | None = None  # running the cell again replaces the dashboard: its poller stops

    def __init__(self, repo: str | os.PathLike = ".", tag: str = "", poll_seconds: float = POLL_SECONDS,
                 **settings):
        repo = str(Path(repo).resolve())
        tags = known_tags(repo)
        settings = Settings(repo=repo, tag=tag or default_tag(repo, tags), **settings)
        self.repo = repo
        self.view = DashboardView(settings, tags, workspace.read_program(repo))
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
