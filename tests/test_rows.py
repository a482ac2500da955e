"""The one place rows are built (journal/rows.py): every kind of row carries the run's marks and its proposer."""
import dataclasses

from autoresearch_kernel.execution.lanes import Job, Lane, Outcome
from autoresearch_kernel.execution.runner import RunResult
from autoresearch_kernel.journal.history import Usage
from autoresearch_kernel.journal.rows import Marks, RowBuilder
from autoresearch_kernel.journal.runstate import Pending
from autoresearch_kernel.workspace.runfolder import RunFolder

MARKS = Marks("score", "higher", "bwrap", lambda: "outside", "llm")


def builder(tmp_path) -> RowBuilder:
    return RowBuilder(RunFolder(tmp_path), MARKS)


def flight(kind="candidate", **fields) -> Pending:
    return Pending(numbers=[4], kind=kind, commit="abcdef0123", parent="9876543210", description="an idea",
                   usage={"prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 0.5}, **fields)


def outcome(tmp_path, status="ok", metrics=None, kind="candidate") -> Outcome:
    result = RunResult(status, metrics, 12.5, tmp_path / "notebooks" / "0004-abcdef0" / "run.ipynb",
                       tmp_path / "run.log", cpu_seconds=20.0)
    return Outcome(Job(4, "abcdef0123", 1, kind, queued_at=1.0), Lane(1, "cpu"), result, "host", 2.0, 3.0)


def test_a_finished_run_carries_its_figures_the_marks_where_it_ran_and_the_proposals_usage(tmp_path):
    metrics = {"score": 0.75, "training_seconds": 9.0, "total_tokens_M": 0.0625, "peak_vram_mb": 2048,
               "flops": float("nan")}
    row = builder(tmp_path).of_run(outcome(tmp_path, metrics=metrics), flight())
    assert (row.status, row.val_bpb, row.memory_gb, row.tokens_m, row.flops) == ("keep", 0.75, 2.0, 0.0625, None)
    assert (row.commit, row.parent, row.seed, row.experiment, row.lane, row.node) == ("abcdef0", "9876543", 1, 4, 2,
                                                                                      "host")
    assert (row.metric, row.direction, row.scored, row.sandbox, row.proposer) == ("score", "higher", "outside",
                                                                                  "bwrap", "llm")
    assert (row.prompt_tokens, row.cost_usd, row.notebook) == (10, 0.5, "notebooks/0004-abcdef0/run.ipynb")


def test_a_confirmation_carries_no_usage_and_a_run_without_its_metric_is_a_crash(tmp_path):
    confirmed = flight(runs=[{"commit": "abcdef0"}], proposer="agent")
    row = builder(tmp_path).of_run(outcome(tmp_path, metrics={"training_seconds": 1.0}, kind="confirm"), confirmed)
    assert (row.status, row.val_bpb, row.prompt_tokens, row.cost_usd) == ("crash", None, 0, None)
    assert row.failure == "crash: the run reported no score" and row.proposer == "agent"


def test_runs_of_the_best_name_no_proposer(tmp_path):
    for kind in ("baseline", "pair"):
        row = builder(tmp_path).of_run(outcome(tmp_path, metrics={"score": 1.0}, kind=kind), flight(kind))
        assert row.proposer == ""
        assert builder(tmp_path).never_run(flight(kind), 2, "interrupted").proposer == ""


def test_a_run_that_never_ran_and_an_invalid_proposal_are_marked_alike(tmp_path):
    never = builder(tmp_path).never_run(flight(), 0, "integrity: refused")
    assert (never.status, never.failure, never.lane, never.prompt_tokens, never.scored) == (
        "crash", "integrity: refused", 0, 10, "outside")
    invalid = builder(tmp_path).invalid(3, "fix", "9876543210", "no edit", Usage(7, 1, None), status="duplicate",
                                        val_bpb=0.5)
    assert (invalid.commit, invalid.experiment, invalid.parent, invalid.description) == (
        "", 3, "9876543", "(no description)")
    assert (invalid.status, invalid.val_bpb, invalid.metric, invalid.proposer) == ("duplicate", 0.5, "score", "llm")
    assert (invalid.prompt_tokens, invalid.completion_tokens) == (7, 1)


def test_marks_fill_only_what_a_row_lacks(tmp_path):
    row = builder(tmp_path).never_run(flight(), 0, "x")
    kept = builder(tmp_path).marked(dataclasses.replace(row, scored="kernel", metric="val_bpb", direction=""))
    assert (kept.scored, kept.metric, kept.direction) == ("kernel", "val_bpb", "higher")
