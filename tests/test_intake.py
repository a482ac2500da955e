"""What a proposal is built from (intake.py): the human's program.md is the one in the user's checkout, live."""
from __future__ import annotations

from loop_fixture import ScriptedProposer, make_repo

from autoresearch_kernel.gate import GateConfig
from autoresearch_kernel.loop import Loop, LoopConfig
from autoresearch_kernel.workspace import read_program


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
