"""The idea memory: normalised changes, the SQLite file rebuilt from results.tsv and git, novelty, the digest.

The runs here are recorded the way the loop records them (commits on the run branch through `Workspace`,
discards under their refs, rows through `results.append`, settings through `settings.store`) without running
a kernel; tests/test_memory_loop.py drives the real loop.
"""
import sqlite3

import git
import pytest
from loop_fixture import make_repo, set_constant
from sandbox_fixture import sandbox_notebook

from autoresearch_kernel.journal import records, results
from autoresearch_kernel.journal.change import change_of, notebook_hash
from autoresearch_kernel.journal.memory import DIGEST_CHARS, Memory, digest, memory_path
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.loop import settings
from autoresearch_kernel.loop.settings import LoopConfig
from autoresearch_kernel.proposers import ProposalContext
from autoresearch_kernel.proposers.llm import build_prompt
from autoresearch_kernel.workspace.worktree import Workspace, _read_sandbox


def with_source(notebook, cell, old, new):
    """A copy of the notebook with `old` replaced by `new` in one cell."""
    import copy

    changed = copy.deepcopy(notebook)
    assert old in changed.cells[cell].source, old
    changed.cells[cell].source = changed.cells[cell].source.replace(old, new)
    return changed


# -- the normalised change ----------------------------------------------------------------------------------
def test_a_constants_edit_is_the_constants_it_moved_whatever_the_spelling():
    parent = sandbox_notebook()
    step = with_source(parent, 3, "MATRIX_LR = 0.04 ", "MATRIX_LR = 0.05 ")
    change = change_of(parent, step)
    assert change.constants == (("MATRIX_LR", "0.04", "0.05"),) and change.tuning and change.cells == (3,)
    # the same step spelled otherwise, its comment changed: the same change, the same code
    respelled = with_source(parent, 3, "MATRIX_LR = 0.04        # learning rate of the block matrices",
                            "MATRIX_LR = 5e-2  # a new comment")
    assert change_of(parent, respelled).diff == change.diff
    assert notebook_hash(respelled) == change.notebook
    power = with_source(parent, 3, "BATCH_SIZE = 2**5 ", "BATCH_SIZE = 32 ")
    assert notebook_hash(power) == notebook_hash(parent)  # 2**5 is 32, as the compiler folds it
    other = with_source(parent, 3, "MATRIX_LR = 0.04 ", "MATRIX_LR = 0.06 ")
    assert change_of(parent, other).diff != change.diff and notebook_hash(other) != change.notebook
    both = with_source(step, 3, "DEPTH = 4 ", "DEPTH = 6 ")
    assert change_of(parent, both).constants == (("DEPTH", "4", "6"), ("MATRIX_LR", "0.04", "0.05"))


def test_a_code_edit_is_its_changed_cells_and_comments_change_nothing():
    parent = sandbox_notebook()
    code = with_source(parent, 5, "loss.backward()", "loss.backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)")
    change = change_of(parent, code)
    assert change.constants == () and not change.tuning and change.cells == (5,) and change.diff
    mixed = with_source(code, 3, "MATRIX_LR = 0.04 ", "MATRIX_LR = 0.05 ")
    assert change_of(parent, mixed).constants == (("MATRIX_LR", "0.04", "0.05"),)
    assert not change_of(parent, mixed).tuning  # a constant moved with code: a code idea, not a knob
    commented = with_source(parent, 4, "import torch\n", "import torch  # the framework\n\n\n")
    assert change_of(parent, commented).diff == "" and notebook_hash(commented) == notebook_hash(parent)
    markdown = with_source(parent, 0, "# Training sandbox", "# Training sandbox, renamed")
    assert notebook_hash(markdown) == notebook_hash(parent)  # markdown runs nothing
    harness = with_source(parent, 6, "harness.finish(run, model)", "harness.finish(run, model)  # mine")
    assert notebook_hash(harness) != notebook_hash(parent)  # the integrity check's business, byte for byte
    magic = with_source(parent, 4, "import torch\n", "%time import torch\n# note\n")
    again = with_source(parent, 4, "import torch\n", "%time import torch\n")
    assert notebook_hash(magic) == notebook_hash(again)  # a cell that does not parse: comment lines dropped


# -- runs recorded as the loop records them -----------------------------------------------------------------
def record_run(repo, tag, steps, budget_seconds=0.0):
    """A run of `tag` on disk: a baseline of 1.0, then per step (description, {constant: value}, status, val_bpb,
    optionally the failure) a commit built on the kept one, kept or discarded under its ref, and its row."""
    workspace = Workspace.open(repo, tag)
    folder = workspace.folder
    config = LoopConfig(repo=repo, tag=tag, baseline_seeds=(0,), budget_seconds=budget_seconds)
    settings.store(folder, config, "/data", [])
    kept, best = workspace.head(), 1.0
    rows = [Row(kept[:7], 1.0, 0.1, "keep", "baseline (seed 0)", experiment=1, kind="baseline", parent=kept[:7],
                best=1.0, finished_at="2026-01-01T00:00:01")]
    for number, (description, changes, status, value, *failure) in enumerate(steps, start=2):
        notebook = workspace.read_sandbox(kept)
        for name, new in changes.items():
            notebook = set_constant(notebook, name, new)
        commit = workspace.commit_sandbox(notebook, description)
        if status == "keep":
            best, parent, kept = value, kept, commit
        else:
            parent = kept
            workspace.discard(commit, number, kept)
        rows.append(Row(commit[:7], value, 0.1, status, description, experiment=number, parent=parent[:7],
                        best=best, proposer="scripted", finished_at=f"2026-01-01T00:00:{number:02d}",
                        failure="".join(failure)))
    results.append(folder.results, *rows)
    workspace.close()
    return folder


def sandbox_of(repo, commit):
    return _read_sandbox(git.Repo(repo), commit)


@pytest.fixture
def two_runs(tmp_path):
    repo = make_repo(tmp_path / "project")
    record_run(repo, "a", [("VALUE 1.0 -> 0.9", {"VALUE": 0.9}, "keep", 0.9),
                           ("VALUE 0.9 -> 1.5", {"VALUE": 1.5}, "discard", 1.5),
                           ("raise", {"FAIL": True}, "crash", None)])
    record_run(repo, "b", [("NOISE up", {"NOISE": 0.002}, "discard", 1.2)])
    return repo


def test_every_experiment_of_every_run_is_remembered_with_its_change(two_runs):
    with Memory.open(two_runs) as memory:
        entries = memory.entries()
    assert [(e.tag, e.experiment, e.kind, e.status) for e in entries] == [
        ("a", 1, "baseline", "keep"), ("a", 2, "candidate", "keep"), ("a", 3, "candidate", "discard"),
        ("a", 4, "candidate", "crash"), ("b", 1, "baseline", "keep"), ("b", 2, "candidate", "discard")]
    first, second, third, crash = entries[:4]
    assert first.gain is None and first.constants == () and first.notebook
    assert second.constants == (("VALUE", "1.0", "0.9"),) and second.tuning and second.gain == pytest.approx(0.1)
    assert third.parent == second.commit and third.gain == pytest.approx(-0.6)  # against the best before it
    assert crash.val_bpb is None and crash.gain is None and crash.constants == () and crash.cells == (1,)
    assert entries[0].notebook == entries[4].notebook  # both baselines run the project's notebook
    assert memory_path(two_runs).exists()
    assert "runs/" in (two_runs / ".git" / "info" / "exclude").read_text()  # not in the user's git status


def test_a_deleted_or_corrupt_memory_comes_back_identical(two_runs):
    with Memory.open(two_runs) as memory:
        live = memory.entries()
    memory_path(two_runs).unlink()
    with Memory.open(two_runs) as memory:
        assert memory.entries() == live
    memory_path(two_runs).write_bytes(b"this is not a database" * 100)
    for stale in ("-wal", "-shm"):
        memory_path(two_runs).with_name(memory_path(two_runs).name + stale).unlink(missing_ok=True)
    with Memory.open(two_runs) as memory:
        assert memory.entries() == live
    assert list(memory_path(two_runs).parent.glob("memory.sqlite.corrupt-*"))  # moved aside, not lost


def test_a_memory_behind_its_results_catches_up_and_follows_the_files(two_runs):
    with Memory.open(two_runs) as memory:
        assert len(memory.entries("b")) == 2
        record_more = Row("abcdef0", 1.1, 0.1, "discard", "by hand", experiment=3, parent="abcdef0",
                          finished_at="2026-01-02T00:00:00")
        results.append(two_runs / "runs" / "b" / "results.tsv", record_more)
        assert memory.remember("b") == 1 and memory.remember("b") == 0
        entry = memory.entries("b")[-1]
        assert entry.description == "by hand" and entry.notebook == ""  # a commit git does not have
    (two_runs / "runs" / "b" / "results.tsv").unlink()
    with Memory.open(two_runs) as memory:
        assert {e.tag for e in memory.entries()} == {"a"}  # the run folder went: so did its ideas


def test_rows_handed_on_by_the_loop_are_remembered_without_reading_the_file(two_runs, monkeypatch):
    path = two_runs / "runs" / "b" / "results.tsv"
    handed = results.read_rows(path) + [Row("abcdef0", 1.1, 0.1, "discard", "by hand", experiment=3,
                                            parent="abcdef0", finished_at="2026-01-02T00:00:00")]

    def parsed(_path):
        raise AssertionError("results.tsv parsed again although the loop handed its rows on")

    with Memory.open(two_runs) as memory:
        results.append(path, handed[-1])  # as the loop does, then hands the rows on
        monkeypatch.setattr(results, "read_rows", parsed)
        assert memory.remember("b", results.as_written(handed)) == 1
        assert memory.entries("b")[-1].description == "by hand"


def test_a_candidate_that_runs_code_already_run_is_a_duplicate(two_runs):
    repo = git.Repo(two_runs)
    a_kept = repo.commit("autoresearch/a").hexsha
    baseline = repo.commit("main").hexsha
    base = sandbox_of(two_runs, baseline)
    with Memory.open(two_runs) as memory:
        # the same step from the same parent, in another run: a duplicate of a #2, which was kept
        same = memory.duplicate_of("b", baseline, set_constant(base, "VALUE", 0.9))
        assert same.same_parent and same.value == pytest.approx(0.9)
        assert same.failure.startswith("duplicate of a #2 (") and ", keep, 0.900000): the same change (VALUE 1.0 " \
            "-> 0.9) from the same parent" in same.failure
        # the same code reached from another parent: a #3 (VALUE 0.9 -> 1.5) measured VALUE = 1.5
        other = memory.duplicate_of("b", baseline, set_constant(base, "VALUE", 1.5))
        assert not other.same_parent and other.earlier.experiment == 3 and "runs the same code" in other.failure
        # a repeat of a crash: no value to tell
        crash = memory.duplicate_of("a", a_kept, set_constant(set_constant(base, "VALUE", 0.9), "FAIL", True))
        assert crash.earlier.status == "crash" and crash.value is None
        # the unmodified notebook is the baseline's: a candidate that undoes everything is not run either
        assert memory.duplicate_of("a", a_kept, base).earlier.kind == "baseline"
        assert memory.duplicate_of("a", a_kept, set_constant(base, "VALUE", 0.8)) is None  # a new idea


def test_a_crash_that_was_the_machines_does_not_block_its_code(two_runs):
    # a lost Ray worker, a loop killed mid-run too often: the code may be fine, so it may run again
    record_run(two_runs, "w", [("lost worker", {"VALUE": 0.7}, "crash", None,
                                records.MACHINE_FAULT + "crash: WorkerLost: the node went away")])
    baseline = git.Repo(two_runs).commit("main").hexsha
    with Memory.open(two_runs) as memory:
        assert memory.entries("w")[-1].status == "fault"
        assert memory.duplicate_of("b", baseline, set_constant(sandbox_of(two_runs, baseline), "VALUE", 0.7)) is None


def test_novelty_holds_only_for_runs_measured_alike(two_runs):
    record_run(two_runs, "long", [], budget_seconds=60.0)  # another budget: its results are another yardstick
    baseline = git.Repo(two_runs).commit("main").hexsha
    notebook = set_constant(sandbox_of(two_runs, baseline), "VALUE", 0.9)
    with Memory.open(two_runs) as memory:
        assert memory.duplicate_of("long", baseline, notebook) is None
        assert memory.duplicate_of("b", baseline, notebook) is not None


def test_the_digest_tells_the_knobs_and_topics_tried_within_its_bound(two_runs):
    text = digest(two_runs)
    assert "4 ideas tried in 2 runs (a, b)" in text
    assert "- VALUE: 0.9 keep +0.1000; 1.5 discard -0.6000" in text
    assert "- NOISE: 0.002 discard -0.2000" in text
    assert "cell 1: crash \"raise\"" in text  # no constant moved: by the cell it changed
    many = [(f"LR idea {n}", {"VALUE": 1.0 + n / 1000}, "discard", 1.0 + n / 1000) for n in range(1, 120)]
    record_run(two_runs, "c", many)
    with Memory.open(two_runs) as memory:
        long = memory.digest()
    assert len(long) <= DIGEST_CHARS and "VALUE" in long
    assert digest(make_repo(two_runs.parent / "empty")) == ""  # before the first idea


def test_the_llm_prompt_shows_the_memory_under_its_heading(two_runs):
    context = ProposalContext(program="", notebook=sandbox_notebook(), memory=digest(two_runs))
    prompt = build_prompt(context)
    assert "## Idea memory: what every run of this repository tried" in prompt
    assert "- VALUE: 0.9 keep +0.1000" in prompt
    assert "Idea memory" not in build_prompt(ProposalContext(program="", notebook=sandbox_notebook()))


def test_a_duplicate_row_keeps_the_earlier_value_in_invalid_tsv(tmp_path):
    path = tmp_path / "invalid.tsv"
    results.append(path, Row("", 1.5, None, "duplicate", "again", experiment=1, failure="duplicate of a #3"),
                   Row("", None, None, "duplicate", "a crash again", experiment=2),
                   Row("", None, None, "invalid", "no edit", experiment=3))
    assert [r.val_bpb for r in results.read_rows(path)] == [1.5, None, None]
    with pytest.raises(ValueError, match="unknown status"):
        results.append(tmp_path / "results.tsv", Row("abc", 1.0, None, "repeated", "x"))


def test_a_locked_memory_is_a_clear_error(two_runs, monkeypatch):
    from autoresearch_kernel.errors import IdeaMemoryError
    from autoresearch_kernel.journal import memory as memory_module

    monkeypatch.setattr(memory_module, "BUSY_SECONDS", 0.1)
    with Memory.open(two_runs) as memory:
        holder = sqlite3.connect(memory_path(two_runs), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process writing, for longer than the memory waits
        try:
            assert memory.remember("b") == 0  # nothing new: no write, no wait
            results.append(two_runs / "runs" / "b" / "results.tsv", Row("abcdef0", 1.1, 0.1, "discard", "x",
                                                                        experiment=3))
            with pytest.raises(IdeaMemoryError, match="delete the file"):
                memory.remember("b")
            assert len(memory.entries("b")) == 2  # readers are never blocked (WAL)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
