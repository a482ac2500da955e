"""Resuming after a kill at each point where an experiment's life is saved (recovery.py, Settler.settle_waiting).

The loop runs in a process of its own, on the fixture sandbox, and is killed (os._exit, as a SIGKILL would
leave it: no clean-up) at one persistence point; a loop in this process then resumes the tag. Every
experiment must end up with its rows exactly once, the resumed loop must not idle on work it forgot, and a
change re-applied onto a newer best must not be re-applied twice.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from loop_fixture import ScriptedProposer, make_repo
from test_loop import config

from autoresearch_kernel.journal import records, results, runstate
from autoresearch_kernel.loop.loop import Loop
from autoresearch_kernel.workspace.runfolder import RunFolder

# The kill points, as the settler passes them: `decide` starts once a run is saved; `settle` writes the rows.
KILLING_LOOP = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from loop_fixture import ScriptedProposer
    from test_loop import config
    from autoresearch_kernel.loop.loop import Loop
    from autoresearch_kernel.loop.settle import Settler
    repo, point = sys.argv[1], sys.argv[2]
    decide, settle = Settler.decide, Settler.settle

    def decide_then_die(self, flight, *args, **kwargs):
        if point == "after the " + flight.kind + " run is saved":
            os._exit(9)
        rows = decide(self, flight, *args, **kwargs)
        if point == "after a confirmation is reserved" and flight in self.state.flights and flight.owes_run():
            os._exit(9)
        return rows

    def settle_then_die(self, flight, decision, *args, **kwargs):
        if point == "between the rebase and the stale row" and decision.status == "stale":
            os._exit(9)
        return settle(self, flight, decision, *args, **kwargs)

    Settler.decide, Settler.settle = decide_then_die, settle_then_die
    scripts = {{
        "after the baseline run is saved": [("better", {{"VALUE": 0.5}})],
        "after the candidate run is saved": [("worse", {{"VALUE": 2.0}})],
        "after a confirmation is reserved": [("slightly better", {{"VALUE": 0.995}})],
        "between the rebase and the stale row": [("fast", {{"VALUE": 0.5}}), ("slow", {{"BONUS": 0.8, "SLEEP": 6}})],
    }}
    lanes = 2 if point == "between the rebase and the stale row" else 1
    seeds = (0,) if point.startswith("after the") else (0, 1)
    with Loop(config(repo, baseline_seeds=seeds, lanes=lanes, max_experiments=len(scripts[point])),
              proposer=ScriptedProposer(scripts[point])) as loop:
        loop.run()
""").format(tests=str(Path(__file__).parent))


def killed_at(tmp_path, point: str) -> Path:
    repo = make_repo(tmp_path / "project")
    process = subprocess.run([sys.executable, "-c", KILLING_LOOP, str(repo), point], timeout=240)
    assert process.returncode == 9, f"the loop was not killed {point}"
    return repo


def rows_of(repo):
    return [(r.experiment, r.kind, r.status) for r in results.read_rows(RunFolder.of(repo, "t").results)]


def test_a_baseline_seed_saved_without_its_row_is_recorded_on_resume_and_the_loop_goes_on(tmp_path):
    repo = killed_at(tmp_path, "after the baseline run is saved")
    assert rows_of(repo) == [] and runstate.load_state(RunFolder.of(repo, "t").path).flights[0].runs
    with Loop(config(repo, baseline_seeds=(0,), resume=True), proposer=ScriptedProposer([("better", {"VALUE": 0.5})])) as loop:
        assert rows_of(repo) == [(1, "baseline", "keep")]  # settled on open, not run again
        new = loop.step()  # before the fix: nothing (the loop waited for a baseline seed forever)
    assert [(r.experiment, r.status) for r in new] == [(2, "keep")]


def test_a_candidate_saved_without_its_row_is_decided_on_resume_not_lost_or_run_twice(tmp_path):
    repo = killed_at(tmp_path, "after the candidate run is saved")
    folder = RunFolder.of(repo, "t")
    assert rows_of(repo) == [(1, "baseline", "keep")]
    with Loop(config(repo, baseline_seeds=(0,), resume=True), proposer=ScriptedProposer([("better", {"VALUE": 0.5})])) as loop:
        assert rows_of(repo) == [(1, "baseline", "keep"), (2, "candidate", "discard")]
        assert loop.state.flights == [] and "refs/autoresearch/t/discarded/2" in loop.workspace.repo.git.for_each_ref()
        new = loop.step()
    assert [(r.experiment, r.status) for r in new] == [(3, "keep")]  # number 2 is not reserved forever
    assert len(list(folder.notebooks.glob("0002-*/*.ipynb"))) == 1  # the candidate ran once


def test_a_reserved_confirmation_runs_once_after_resume(tmp_path):
    repo = killed_at(tmp_path, "after a confirmation is reserved")
    assert rows_of(repo) == [(1, "baseline", "keep"), (2, "baseline", "keep")]
    with Loop(config(repo, resume=True), proposer=ScriptedProposer([])) as loop:
        new = loop.step()
    assert [(r.experiment, r.kind, r.seed) for r in new] == [(3, "candidate", 0), (4, "confirm", 1)]
    assert [r.experiment for r in results.read_rows(RunFolder.of(repo, "t").results)] == [1, 2, 3, 4]


def test_a_kill_between_a_rebase_and_its_stale_row_rebases_once(tmp_path):
    repo = killed_at(tmp_path, "between the rebase and the stale row")
    assert [row[2] for row in rows_of(repo)] == ["keep", "keep", "keep"]  # 2 baseline seeds, the fast keep
    with Loop(config(repo, resume=True, lanes=2, max_experiments=0), proposer=ScriptedProposer([])) as loop:
        assert loop.run() == "max experiments reached"
    rows = results.read_rows(RunFolder.of(repo, "t").results)
    assert [(r.kind, r.description, r.status) for r in rows[3:]] == [("candidate", "slow", "stale"),
                                                                     ("rebase", "slow", "keep")]
    assert f"re-applied there as experiment {rows[4].experiment}" in rows[3].failure


def test_a_timeout_runs_again_with_a_longer_limit_before_it_counts_as_the_codes(tmp_path):
    # Under load a baseline run passed its wall limit here and the loop blamed the unmodified notebook. A
    # timeout is now run again with twice the limit; only a second one is the code's.
    repo = make_repo(tmp_path / "project")
    proposer = ScriptedProposer([("never ends", {"SLEEP": 600})])
    with Loop(config(repo, baseline_seeds=(0,), timeout_s=12, max_experiments=1), proposer=proposer) as loop:
        assert loop.run() == "max experiments reached"
    rows = results.read_rows(RunFolder.of(repo, "t").results)
    assert [(r.experiment, r.description, r.status) for r in rows] == [(1, "baseline (seed 0)", "keep"),
                                                                        (2, "never ends", "crash")]
    assert "past its 24 s wall-clock limit" in rows[1].failure and rows[1].wall_seconds >= 24
    assert not records.is_machine_fault(rows[1])  # twice past its limit: the code's
