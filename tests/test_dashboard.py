"""The dashboard's logic without a browser: reading a run from disk, reattaching through the tag lock, the
one-line error, and a real loop started from the dashboard on the tiny fixture project.

The widgets are real ipywidgets objects (they need no frontend to hold values); the loop is the real CLI in
a real child process on a real git repository.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import git
import pandas as pd
import pytest
from loop_fixture import make_repo

from autoresearch_kernel import cli, report
from autoresearch_kernel.dashboard import CONSOLE_LOG, Dashboard, Settings, Snapshot
from autoresearch_kernel.dashboard.shown import chart_png, lane_lines, status_lines, table_rows
from autoresearch_kernel.dashboard.snapshot import console_error, experiment_detail, llm_usage, results_path
from autoresearch_kernel.dashboard.view import DashboardView
from autoresearch_kernel.execution.runner import kill_tree
from autoresearch_kernel.journal import results, runstate
from autoresearch_kernel.journal.runstate import LaneStatus, LoopStatus
from autoresearch_kernel.loop import settings

REFERENCE_TSV = Path(__file__).with_name("reference_results.tsv")  # the reference project's five columns


@pytest.fixture
def project(tmp_path):
    return make_repo(tmp_path / "project")


def wait_for(predicate, timeout: float, what: str, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def row(number: int, status: str, value: float | None, **fields) -> results.Row:
    return results.Row(f"{number:07x}", value, 0.1 if value else None, status, f"idea {number}",
                       experiment=number, **fields)


# -- settings and pure readings --------------------------------------------------------------------------


def test_settings_become_the_cli_loop_command():
    settings = Settings(repo="/r", tag="mar5", data_dir="/d", profile="gpu", device="cuda:1", proposer="llm",
                        model="m", base_url="http://x/v1", budget_kind="tokens", budget=4096, max_experiments=3)
    argv = settings.loop_argv(resume=False)
    assert argv[:3] == [sys.executable, "-m", "autoresearch_kernel"]
    parsed = cli.build_parser().parse_args(argv[3:])  # the CLI accepts exactly what the dashboard sends
    assert (parsed.command, parsed.tag, parsed.repo, parsed.data_dir) == ("loop", "mar5", "/r", "/d")
    assert (parsed.profile, parsed.device) == ("gpu", "cuda:1")  # a GPU run can be started from loop.ipynb
    assert (parsed.proposer, parsed.model, parsed.base_url) == ("llm", "m", "http://x/v1")
    assert (parsed.budget_tokens, parsed.max_experiments, parsed.resume) == (4096, 3, False)
    # a resume keeps the run's stored settings: only the number of experiments goes along
    resumed = cli.build_parser().parse_args(settings.loop_argv(resume=True)[3:])
    assert (resumed.resume, resumed.max_experiments, resumed.tag, resumed.repo) == (True, 3, "mar5", "/r")
    assert (resumed.profile, resumed.budget_tokens, resumed.proposer, resumed.model) == (None, None, None, None)
    offline = Settings(repo="/r", tag="t", model="ignored", budget=30).loop_argv(resume=False)
    assert "--model" not in offline and "--resume" not in offline
    assert offline[offline.index("--budget-seconds") + 1] == "30.0"


def test_the_forms_lanes_reach_the_loop_command_only_when_more_than_one():
    parser = cli.build_parser()
    two = Settings(repo="/r", tag="t", lanes=2, devices="cuda:0,cuda:1").loop_argv(resume=False)
    parsed = parser.parse_args(two[3:])
    assert (parsed.lanes, parsed.devices) == (2, "cuda:0,cuda:1")
    one = Settings(repo="/r", tag="t").loop_argv(resume=False)
    assert "--lanes" not in one and "--devices" not in one  # a one-lane form builds the command it always built
    assert Settings(repo="/r", tag="t", lanes=1).loop_argv(resume=False) == one
    view = DashboardView(Settings(repo="/r", tag="t"), [], "")
    assert view.lanes.value == 1 and (view.lanes.min, view.lanes.max) == (1, 64)
    assert "ark-lanes-field" in view.lanes._dom_classes and "ark-devices" in view.devices._dom_classes
    view.lanes.value, view.devices.value = 3, " all "
    assert view.settings("/r").options()["lanes"] == 3 and view.settings("/r").options()["devices"] == "all"


def test_the_form_starts_every_proposer_the_cli_knows_with_its_own_fields():
    # CMA-ES (optuna) is the only method that has kept anything in the search benchmark: the form must offer it
    parser = cli.build_parser()
    view = DashboardView(Settings(repo="/r", tag="t"), [], "")
    assert list(view.proposer.options) == list(settings.BY_NAME["proposer"].choices)
    view.proposer.value, view.sampler.value = "optuna", "cmaes"
    assert view.search_box.layout.display == "" and view.llm_box.layout.display == "none"
    parsed = parser.parse_args(view.settings("/r").loop_argv(resume=False)[3:])
    assert (parsed.proposer, parsed.sampler, parsed.llm_share, parsed.model) == ("optuna", "cmaes", None, None)
    view.proposer.value, view.model.value, view.llm_share.value = "hybrid", "m", 0.5
    assert view.llm_box.layout.display == "" and view.llm_share.layout.display == ""
    parsed = parser.parse_args(view.settings("/r").loop_argv(resume=False)[3:])
    assert (parsed.proposer, parsed.sampler, parsed.llm_share, parsed.model) == ("hybrid", "cmaes", 0.5, "m")
    view.proposer.value = "mutate"
    parsed = parser.parse_args(view.settings("/r").loop_argv(resume=False)[3:])
    assert (parsed.sampler, parsed.llm_share, parsed.model) == (None, None, None)


def lanes_status(now: float) -> LoopStatus:
    """Two lanes: the first runs experiment 7 since 30 s on another machine, the second is idle."""
    lanes = [LaneStatus(1, "cuda:0", "gpu-box", 7, "rebase", "LR <0.04>", started_at=now - 30, timeout_s=600),
             LaneStatus(2, "cuda:1", "here")]
    return LoopStatus(tag="t", phase="running", experiment=7, kind="rebase", description="LR <0.04>",
                      phase_since=now - 30, started_at=now - 300, lanes=[dataclasses.asdict(lane) for lane in lanes])


def test_lanes_show_what_runs_where_with_a_bar_each():
    now = 10_000.0
    status = lanes_status(now)
    html = lane_lines(status, 120.0, now, host="here")
    first, second = html.split("</div>")[:2]
    assert "lane 1" in first and "cuda:0 on gpu-box" in first  # another machine is named
    assert "#7 (rebase): LR &lt;0.04&gt;" in first  # escaped
    assert 'style="width:25%"' in first and "30s, about 1m30s left" in first
    assert "lane 2" in second and "cuda:1" in second and "here" not in second and "idle" in second
    assert 'class="ark-lane-bar"' not in second
    assert "longer than the usual 20s" in lane_lines(status, 20.0, now, host="here")
    unknown = lane_lines(status, None, now, host="here").split("</div>")[0]  # no run finished, no budget yet
    assert 'style="width:0%"' in unknown and unknown.endswith("30s")

    frame = pd.DataFrame({"experiment": [1], "status": ["keep"], "kind": ["baseline"], "wall_seconds": [120.0]})
    lines = status_lines(Snapshot("t", frame, status, running=True, stop_requested=True), now=now, host="here")
    assert lines.lanes == html and lines.progress == 0.0  # each lane has its bar: no single one
    assert "1 of 2 lanes busy" in lines.phase and "experiment 7" not in lines.phase
    assert "stopping after the running experiments" in lines.phase and "left of this experiment" not in lines.times
    view = DashboardView(Settings(repo="/r", tag="t"), [], "")
    view.show_status(lines)
    assert "ark-lanes" in view.lanes_view._dom_classes and view.lanes_view.value == html
    assert view.lanes_view.layout.display == "" and view.progress.layout.display == "none"
    assert "running experiments" in view.stop.description


def test_one_lane_keeps_the_single_progress_bar():
    now = 10_000.0
    status = lanes_status(now)
    status.lanes = status.lanes[:1]
    assert lane_lines(status, 120.0, now) == ""
    frame = pd.DataFrame({"experiment": [1], "status": ["keep"], "kind": ["baseline"], "wall_seconds": [120.0]})
    lines = status_lines(Snapshot("t", frame, status, running=True, stop_requested=True), now=now)
    assert lines.lanes == "" and lines.progress == pytest.approx(0.25)
    assert "experiment 7 (rebase): LR &lt;0.04&gt;" in lines.phase and "stopping after this experiment" in lines.phase
    assert "about 1m30s left of this experiment" in lines.times
    view = DashboardView(Settings(repo="/r", tag="t"), [], "")
    view.show_status(lines)
    assert view.lanes_view.layout.display == "none" and view.progress.layout.display == ""


def test_stale_and_rebase_rows_are_tabulated_and_counted():
    frame = pd.DataFrame({
        "commit": ["a000001", "a000002", "a000003", "a000004"], "val_bpb": [1.0, 0.98, 0.97, 0.975],
        "status": ["keep", "keep", "stale", "keep"], "experiment": [1, 2, 3, 4],
        "description": ["baseline (seed 0)", "idea", "other", "other"],
        "kind": ["baseline", "candidate", "candidate", "rebase"],
        "failure": ["", "", "stale: the best moved on from a000001 to a000002 while it ran; re-applied there as "
                    "experiment 4", ""],
    })
    table = [label.replace("\u00a0", " ") for label, _ in table_rows(frame)]
    assert table[2].split()[3:] == ["stale", "[re-applied", "as", "#4]", "other"]
    assert table[3].split()[3:] == ["keep", "[rebase]", "other"]
    lines = status_lines(Snapshot("t", frame, None, running=False))
    assert "keep <b>2</b> · discard <b>0</b> · crash <b>0</b> · stale <b>1</b>" in lines.counts


def test_reference_results_tsv_is_counted_and_tabulated():
    frame = results.load(REFERENCE_TSV)
    assert report.summary(frame).lines()[0] == \
        "1 baseline run (0.997900), 4 experiments: keep 2, discard 1, crash 1, keep rate 50%"
    assert llm_usage(frame) == (0, None)
    lines = [label.replace("\u00a0", " ") for label, _ in table_rows(frame)]
    assert lines[0].split()[:4] == ["1", "a1b2c3d", "0.997900", "baseline"]  # its first row, written "keep"
    assert lines[3].split()[:4] == ["4", "d4e5f6a", "-", "crash"]  # a crash shows no val_bpb, not 0.0
    assert len(chart_png(frame)) > 1000  # the chart draws a reference-format file too


def test_status_lines_show_phase_times_progress_and_usage():
    now = 10_000.0
    frame = pd.DataFrame({"experiment": [1, 2, 3], "status": ["keep", "discard", "keep"],
                          "kind": ["baseline", "candidate", "candidate"], "wall_seconds": [60.0, 60.0, 60.0],
                          "prompt_tokens": [0, 100, 200], "completion_tokens": [0, 10, 20], "cost_usd": [None, 0.01, None]})
    status = LoopStatus(tag="t", phase="running", experiment=3, kind="candidate", description="LR 0.04 -> 0.05",
                        phase_since=now - 15, started_at=now - 300)
    lines = status_lines(Snapshot("t", frame, status, running=True, stop_requested=True), now=now)
    assert "running" in lines.phase and "experiment 3 (candidate): LR 0.04 -&gt; 0.05" in lines.phase
    assert "stopping after this experiment" in lines.phase
    assert lines.progress == pytest.approx(0.25)
    assert "run 5m00s" in lines.times and "about 45s left" in lines.times
    assert "baseline runs <b>1</b> · keep <b>1</b> · discard <b>1</b> · crash <b>0</b> · LLM" in lines.counts
    assert lines.warning == ""
    assert "LLM tokens <b>330</b>" in lines.counts and "$0.0100" in lines.counts
    stopped = status_lines(Snapshot("t", frame, status, running=False), now=now)
    assert "stopped" in stopped.phase and stopped.progress == 0.0


def test_noop_and_unsandboxed_rows_are_marked(project):
    """Marks rows are gaining: a run without the jail warns and is flagged; a noop is counted apart.
    (Before those columns exist nothing shows: see the tests above, which have none.)"""
    frame = pd.DataFrame({
        "commit": ["a000001", "a000002", "a000003"], "val_bpb": [1.0, 1.0, 0.99], "status": ["keep", "noop", "discard"],
        "description": ["baseline (seed 0)", "same as parent", "idea"], "experiment": [1, 2, 3],
        "kind": ["baseline", "candidate", "candidate"], "sandbox": ["bwrap", "bwrap", "none"],
    })
    lines = status_lines(Snapshot("t", frame, None, running=False))
    assert "discard <b>1</b> · crash <b>0</b> · noop <b>1</b>" in lines.counts
    assert "warning: 1 of 3 runs ran without the sandbox" in lines.warning and "ark-warning" in lines.warning
    table = [label.replace("\u00a0", " ") for label, _ in table_rows(frame)]
    assert table[1].split()[3:5] == ["noop", "same"] and "[no sandbox] idea" in table[2]
    assert experiment_detail(project, "t", frame, 3).title.startswith("#3 a000003 discard [no sandbox]: idea")
    board = Dashboard(repo=project, poll_seconds=0)
    board.view.show_status(lines)
    assert "without the sandbox" in board.view.warning.value


def test_console_error_is_one_line(tmp_path):
    log = tmp_path / "console.log"
    log.write_text("loading\nerror: there is no prepared data in /x: run `prepare` first\n")
    assert console_error(log) == "there is no prepared data in /x: run `prepare` first"
    log.write_text("Traceback (most recent call last):\n  File \"x\", line 1\nRuntimeError: boom\n")
    assert console_error(log) == "RuntimeError: boom"
    log.write_text("1 abc1234 0.99 keep baseline\n")
    assert console_error(log) == ""


# -- the dashboard object on a run's files ---------------------------------------------------------------


def test_finished_run_is_shown_with_its_rows_detail_and_chart(project):
    path = results_path(project, "done")
    results.append(path, row(1, "keep", 1.0, kind="baseline", margin=0.002, best=1.0, wall_seconds=2.0),
                   row(2, "crash", None, failure="crash: RuntimeError: scripted failure"))
    board = Dashboard(repo=project, poll_seconds=0)  # no tag given: the latest run is picked
    view = board.view
    assert board.control.tag == "done" and view.tag.value == "done"
    assert [number for _, number in view.table.options] == [1, 2]
    assert view.table.options[0][0].replace("\u00a0", " ").split()[3] == "baseline"  # a seed is no keep, here too
    assert view.chart.value and "over 2 runs: 1 baseline run, 1 experiment: 0 kept, 1 crashed" in view.chart_caption.value
    assert "baseline runs <b>1</b> · keep <b>0</b>" in view.counts.value
    assert "done</b>: stopped" in view.phase.value and view.error.value == ""
    assert not view.start.disabled and view.stop.disabled and view.abort.disabled
    view.table.value = 2
    assert "#2" in view.detail_title.value and "scripted failure" in view.failure.value
    assert "no diff" in view.diff.value  # the fixture rows name commits that are not in the repository


def test_unusable_tag_shows_one_error_line_and_starts_nothing(project):
    board = Dashboard(repo=project, poll_seconds=0)
    board.view.tag.value = "no spaces allowed"
    assert board.view.error.value.count("error:") == 1 and "is not usable" in board.view.error.value
    board.view.start.click()
    assert "is not usable" in board.view.error.value and board.control.process is None
    assert "Traceback" not in board.view.error.value


def test_a_loop_that_cannot_start_shows_its_error_as_one_line(tmp_path):
    """The CLI refuses (here: no sandbox notebook committed); the dashboard shows its message, no traceback."""
    project = tmp_path / "bare"
    project.mkdir()
    repo = git.Repo.init(project, initial_branch="main")
    (project / "program.md").write_text("Make val_bpb lower.\n")
    repo.git.add("program.md")
    repo.git.commit("-m", "no notebooks", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@l",
                                                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@l"})
    board = Dashboard(repo=project, tag="first", poll_seconds=0)
    board.view.start.click()
    wait_for(lambda: board.control.process.poll() is not None, 60, "the loop process to exit")
    board.refresh()
    error = board.view.error.value
    assert error.count("error:") == 1 and "no committed notebooks/train_template.ipynb" in error
    assert "Traceback" not in error and "\n" not in error
    assert not board.view.start.disabled  # fix it and Start again


HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from autoresearch_kernel.journal import runstate
    from autoresearch_kernel.workspace.runfolder import RunFolder
    folder = RunFolder.of(sys.argv[1], sys.argv[2]).path
    lock = runstate.TagLock(folder)
    lock.acquire(sys.argv[2])
    runstate.write_status(folder, runstate.LoopStatus(
        tag=sys.argv[2], phase="paused", phase_since=time.time(), started_at=time.time(),
        message="proposer unavailable, retrying in 60 s: connection refused by http://127.0.0.1:9/v1"))
    print("locked", flush=True)
    while not (folder / runstate.STOP).exists():
        time.sleep(0.05)
""")


def test_reopening_reattaches_to_the_running_loop_through_its_lock(project):
    """A process holding the tag's lock (as a loop does) is found, shown as running, never started twice;
    its paused state (a bad endpoint) shows as the one error line."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(project), "night"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        results.append(results_path(project, "other"), row(1, "keep", 1.0))  # a later, idle run
        board = Dashboard(repo=project, poll_seconds=0)  # a fresh kernel: no tag given
        assert board.control.tag == "night"  # the running tag wins over the latest results
        snapshot = board.refresh()
        assert snapshot.running and snapshot.status.phase == "paused"
        assert "paused" in board.view.phase.value
        assert board.view.error.value.count("error:") == 1 and "connection refused" in board.view.error.value
        assert board.view.start.disabled and not board.view.stop.disabled and board.view.tag.disabled
        board._act(board.start)  # what a click does, even though the button is disabled
        assert "already running" in board.view.error.value and board.control.process is None
        board.view.stop.click()
        assert holder.wait(timeout=10) == 0  # the stop request reached the lock holder
        snapshot = board.refresh()
        assert not snapshot.running and "stopped" in board.view.phase.value
        assert not board.view.start.disabled
    finally:
        holder.kill()
        holder.wait()


# -- the real loop, started from the dashboard -----------------------------------------------------------


def test_start_runs_the_cli_loop_detached_and_shows_its_rows_diff_and_notebook(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the kernel's cwd: links are relative to it
    board = Dashboard(repo=project, tag="real", max_experiments=1, poll_seconds=0)
    board.view.start.click()
    process = board.control.process
    try:
        assert board.view.error.value == "" and process is not None
        assert os.getsid(process.pid) != os.getsid(0)  # a session of its own: a kernel restart spares it
        assert board.view.start.disabled and not board.view.stop.disabled  # running, even before the lock
        wait_for(lambda: runstate.is_running(project, "real"), 60, "the loop to take the tag's lock")
        reopened = Dashboard(repo=project, poll_seconds=0)  # another kernel opens the notebook: it attaches
        assert reopened.control.tag == "real" and reopened.refresh().running and reopened.view.start.disabled
        wait_for(lambda: process.poll() is not None, 240, "the loop to end after its one proposal")
        assert process.returncode == 0, (board.control.folder / CONSOLE_LOG).read_text()
        snapshot = board.refresh()
        assert not snapshot.running and snapshot.error == "" and snapshot.status.phase == "stopped"
        assert list(snapshot.frame["kind"]) == ["baseline"] * 3 + ["candidate"]
        assert "real</b>: stopped" in board.view.phase.value and not board.view.start.disabled
        assert len(board.view.table.options) == 4 and "over 4 runs: 3 baseline runs, 1 experiment" in board.view.chart_caption.value
        assert "baseline runs <b>3</b>" in board.view.counts.value
        board.view.table.value = 4
        assert "diff against its parent" in board.view.diff.value and "ark-add" in board.view.diff.value
        link = board.view.link.outputs[0]["data"]["text/markdown"]
        target = link.split("](")[1].rstrip(")")
        assert (tmp_path / target).resolve() == (project / "runs" / "real" / snapshot.frame["notebook"].iloc[-1])
    finally:
        if process.poll() is None:
            kill_tree(process.pid)
