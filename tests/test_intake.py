"""What a proposal is built from (intake.py): the human's program.md is the one in the user's checkout, live."""
from __future__ import annotations

from loop_fixture import ScriptedProposer, make_repo

from autoresearch_kernel.gate import GateConfig
from autoresearch_kernel.loop.loop import Loop, LoopConfig
from autoresearch_kernel.workspace.worktree import read_program


def test_an_uncommitted_edit_of_program_md_reaches_the_next_proposal_as_the_dashboard_shows_it(tmp_path):
    repo = make_repo(tmp_path / "project")
    edited = "Make val_bpb lower. New tonight: try the BONUS constant first.\n"

    def edit_after_the_baseline(event):  # the user edits program.md in the checkout while the run goes on
        if any(row.kind == "baseline" for row in event.rows):
            (repo / "program.md").write_text(edited)

    proposer = ScriptedProposer([("better", {"BONUS": 0.5})])
    config = LoopConfig(repo=repo, tag="t", baseline_seeds=(0,), timeout_s=60, max_experiments=1,
                        gate=GateConfig(prior_sd=0.001))
    with Loop(config, proposer=proposer, on_event=edit_after_the_baseline) as loop:
        loop.run()
    assert [context.program for context in proposer.contexts] == [edited]
    assert read_program(repo) == edited  # what the dashboard shows (dashboard/__init__.py reads the same)


def test_a_fix_written_while_another_lanes_keep_landed_keeps_that_keep(tmp_path):
    # A crashes at once and asks for a fix; the proposer is down, and while the loop waits B is kept on the other
    # lane. The fix then arrives, written on A's notebook (the old best): committed as it is, it would undo B.
    repo = make_repo(tmp_path / "project")
    loop_of = {}

    def end_the_pause_once_b_is_kept(event):  # a barrier: the outage lasts until B's row is written
        if any(row.description == "slow" and row.status == "keep" for row in event.rows):
            loop_of["loop"].intake.paused_until = 0.0

    proposer = ScriptedProposer([("raise", {"FAIL": True}), ("slow", {"BONUS": 0.8, "SLEEP": 3}), "unavailable",
                                 ("fix it", {"FAIL": False, "VALUE": 0.9})])
    config = LoopConfig(repo=repo, tag="t", baseline_seeds=(0,), timeout_s=60, max_experiments=3, lanes=2,
                        pause_seconds=600, fix_attempts=1, gate=GateConfig(prior_sd=0.001))
    with Loop(config, proposer=proposer, on_event=end_the_pause_once_b_is_kept) as loop:
        loop_of["loop"] = loop
        assert loop.run() == "max experiments reached"
        fix = next(row for row in loop.records.rows if row.kind == "fix")
        source = loop.workspace.read_sandbox(fix.commit).cells[1].source
    assert "BONUS = 0.8" in source and "VALUE = 0.9" in source and "FAIL = False" in source
    assert fix.parent == next(row.commit for row in loop.records.rows if row.description == "slow")
