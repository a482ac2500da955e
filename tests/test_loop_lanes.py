"""The loop with two lanes on this machine: experiments in flight together, decided in the order they finish.

Real kernels on the fixture sandbox (loop_fixture.py), a real git repository. val_bpb is
`VALUE - BONUS + NOISE * SEED`; `SLEEP` holds a candidate on its lane while the other lane's finishes.
"""
import threading
import time

import git
import pytest
from loop_fixture import ScriptedProposer, make_repo
from test_loop import config, no_kernels_left

from autoresearch_kernel.journal import results, runstate
from autoresearch_kernel.loop.loop import Loop
from autoresearch_kernel.workspace.runfolder import RunFolder


def lanes_config(repo, **overrides):
    return config(repo, baseline_seeds=(0, 1), lanes=2, max_experiments=2, **overrides)


def by_description(rows):
    return {row.description: row for row in rows}


def seconds(stamp: str) -> float:
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


@pytest.fixture(scope="module")
def stale_run(tmp_path_factory):
    """Two candidates at once: a fast one (VALUE) is kept while a slow one (BONUS, another line) still runs;
    the slow one then beats the new best, so its change is re-applied onto it and run again."""
    repo = make_repo(tmp_path_factory.mktemp("stale") / "project")
    proposer = ScriptedProposer([("fast", {"VALUE": 0.5}), ("slow", {"BONUS": 0.8, "SLEEP": 6})])
    with Loop(lanes_config(repo), proposer=proposer) as loop:
        why = loop.run()
        contexts = proposer.contexts
    return repo, why, results.read_rows(RunFolder.of(repo, "t").results), contexts, proposer


def test_two_lanes_run_experiments_at_the_same_time(stale_run):
    repo, why, rows, _, _ = stale_run
    assert why == "max experiments reached"
    baseline = [r for r in rows if r.kind == "baseline"]
    assert sorted(r.lane for r in baseline) == [1, 2]  # both seeds at once
    fast, slow = by_description(rows)["fast"], [r for r in rows if r.description == "slow"][0]
    assert {fast.lane, slow.lane} == {1, 2}
    assert seconds(slow.started_at) <= seconds(fast.finished_at)  # the slow one started before the fast one ended
    for row in rows:
        assert row.device and row.node and row.queued_at and row.started_at and row.finished_at
        assert seconds(row.queued_at) <= seconds(row.started_at) <= seconds(row.finished_at)
    assert no_kernels_left() == []


def test_the_proposer_is_told_what_is_running(stale_run):
    _, _, _, contexts, _ = stale_run
    assert contexts[0].running == [] and contexts[1].running == ["fast"]


def test_a_stale_winner_is_re_applied_onto_the_new_best_and_that_run_decides(stale_run):
    repo, _, rows, _, proposer = stale_run
    statuses = [(r.kind, r.description, r.status) for r in rows if r.kind != "baseline"]
    assert statuses == [("candidate", "fast", "keep"), ("candidate", "slow", "stale"), ("rebase", "slow", "keep")]
    stale, rebase = rows[-2], rows[-1]
    fast = by_description(rows)["fast"]
    assert stale.parent == rows[0].commit and rebase.parent == fast.commit
    assert f"re-applied there as experiment {rebase.experiment}" in stale.failure
    assert rebase.val_bpb == pytest.approx(0.5 - 0.8)  # both changes: VALUE from the best, BONUS from it
    head = git.Repo(repo).heads["autoresearch/t"].commit
    assert head.hexsha.startswith(rebase.commit) and head.parents[0].hexsha.startswith(fast.commit)
    source = head.tree["notebooks/train_template.ipynb"].data_stream.read().decode()
    assert "VALUE = 0.5" in source and "BONUS = 0.8" in source
    assert proposer.feedbacks == ["keep", "keep"]  # the stale one is told through its re-applied run
    assert runstate.load_state(RunFolder.of(repo, "t").path).flights == []


def test_a_stale_winner_whose_change_does_not_apply_is_recorded_stale(tmp_path):
    repo = make_repo(tmp_path / "project")
    proposer = ScriptedProposer([("fast", {"VALUE": 0.5}), ("same line", {"VALUE": 0.2, "SLEEP": 5})])
    with Loop(lanes_config(repo), proposer=proposer) as loop:
        loop.run()
    rows = results.read_rows(RunFolder.of(repo, "t").results)
    assert [(r.description, r.status) for r in rows if r.kind != "baseline"] == [("fast", "keep"),
                                                                                ("same line", "stale")]
    assert "does not apply there" in rows[-1].failure
    assert git.Repo(repo).heads["autoresearch/t"].commit.hexsha.startswith(rows[-2].commit)
    assert "refs/autoresearch/t/discarded/" in git.Repo(repo).git.for_each_ref()


def test_stop_lets_the_runs_in_flight_finish(tmp_path):
    repo = make_repo(tmp_path / "project")
    proposer = ScriptedProposer([("a", {"VALUE": 0.9, "SLEEP": 3}), ("b", {"BONUS": -0.5, "SLEEP": 3})])
    with Loop(config(repo, baseline_seeds=(0,), lanes=2), proposer=proposer) as loop:
        both = threading.Event()
        loop.on_event = lambda e: both.set() if sum(lane["experiment"] is not None and lane["kind"] != "baseline"
                                                    for lane in e.status.lanes) == 2 else None
        thread = threading.Thread(target=lambda: setattr(loop, "why", loop.run()))
        thread.start()
        assert both.wait(90)
        loop.stop()
        thread.join(90)
        assert loop.why == "stopped on request"
    rows = results.read_rows(RunFolder.of(repo, "t").results)
    assert sorted(r.description for r in rows if r.kind != "baseline") == ["a", "b"]
    assert runstate.load_state(RunFolder.of(repo, "t").path).flights == []


def test_abort_with_two_in_flight_and_resume_finishes_both_without_lost_or_doubled_rows(tmp_path):
    repo = make_repo(tmp_path / "project")
    folder = RunFolder.of(repo, "t")
    proposer = ScriptedProposer([("a", {"VALUE": 0.9, "SLEEP": 10}), ("b", {"BONUS": -0.5, "SLEEP": 10})])
    loop = Loop(config(repo, baseline_seeds=(0,), lanes=2, max_experiments=2), proposer=proposer)
    both = threading.Event()
    loop.on_event = lambda e: both.set() if sum(lane["kind"] in ("candidate",) for lane in e.status.lanes) == 2 \
        else None
    thread = threading.Thread(target=lambda: setattr(loop, "why", loop.run()))
    thread.start()
    assert both.wait(90)
    time.sleep(1)
    runstate.request_abort(repo, "t")
    thread.join(60)
    loop.close()
    assert loop.why == "aborted" and no_kernels_left() == []
    assert [r.kind for r in results.read_rows(folder.results)] == ["baseline"]
    assert [f.description for f in runstate.load_state(folder.path).flights] == ["a", "b"]
    with Loop(config(repo, baseline_seeds=(0,), lanes=2, resume=True, max_experiments=0, timeout_s=120),
              proposer=ScriptedProposer([])) as again:
        assert again.run() == "max experiments reached"
    rows = results.read_rows(folder.results)
    assert sorted(r.experiment for r in rows) == [1, 2, 3]  # each experiment once
    assert {r.description: r.status for r in rows if r.kind != "baseline"} == {"a": "keep", "b": "discard"}
    assert runstate.load_state(folder.path).flights == []
