"""The idea memory in the real loop (tiny fixture notebook, real git, real kernels): a repeat is refused before it
runs, the memory survives a resume and reaches a new tag, and a proposer that only repeats itself is stopped.

One scenario runs once (a module fixture) and the tests read what it left.
"""
import git
import nbformat
import pytest
from loop_fixture import ScriptedProposer, make_repo, set_constant
from test_loop import config

from autoresearch_kernel import agent
from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.journal import results
from autoresearch_kernel.journal.memory import Memory, memory_path
from autoresearch_kernel.loop.intake import MAX_DUPLICATES
from autoresearch_kernel.loop.loop import Loop, LoopConfig


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("memory") / "project")
    # run a: 1 baseline (1.0), 2 keep (0.5), 3 discard (2.0)
    with Loop(config(repo, tag="a", baseline_seeds=(0,), max_experiments=2),
              proposer=ScriptedProposer([("half", {"VALUE": 0.5}), ("worse", {"VALUE": 2.0})])) as loop:
        loop.run()
    # a resumed: the same discard again is refused (a duplicate of a #3), the proposer is asked again: 4 keep
    resumed = ScriptedProposer([("worse again", {"VALUE": 2.0}), ("better", {"VALUE": 0.4})])
    with Loop(LoopConfig.resumed(repo, "a", max_experiments=2), proposer=resumed) as loop:
        resumed_why = loop.run()
    # a new tag from the same commit: its baseline runs, the first idea of run a is refused, 3 keep
    newcomer = ScriptedProposer([("half again", {"VALUE": 0.5}), ("other", {"VALUE": 0.6})])
    with Loop(config(repo, tag="b", baseline_seeds=(0,), max_experiments=2), proposer=newcomer) as loop:
        loop.run()
    with Memory.open(repo) as memory:
        live = memory.entries()
    # b resumed with a proposer that only repeats run a's first idea: stopped after MAX_DUPLICATES in a row
    parrot = ScriptedProposer([("half once more", {"VALUE": 0.5})] * (MAX_DUPLICATES + 5))
    with Loop(LoopConfig.resumed(repo, "b", max_experiments=None), proposer=parrot) as loop:
        with pytest.raises(AutoresearchError, match=f"repeated experiments already run {MAX_DUPLICATES} times"):
            loop.run()
        parrot_phase = loop.status.phase
    folder = repo / "runs"
    return dict(repo=repo, resumed=resumed, resumed_why=resumed_why, newcomer=newcomer, parrot=parrot, live=live,
                parrot_phase=parrot_phase, rows={tag: results.read_rows(folder / tag / "results.tsv") for tag in "ab"},
                invalid={tag: results.read_rows(folder / tag / "invalid.tsv") for tag in "ab"})


def test_a_repeat_is_refused_before_it_runs_and_the_proposer_is_asked_again(memory_run):
    rows, [duplicate] = memory_run["rows"]["a"], memory_run["invalid"]["a"]
    assert [(r.experiment, r.description, r.status) for r in rows] == [
        (1, "baseline (seed 0)", "keep"), (2, "half", "keep"), (3, "worse", "discard"), (4, "better", "keep")]
    assert duplicate.status == "duplicate" and duplicate.description == "worse again" and duplicate.val_bpb == 2.0
    assert duplicate.failure.startswith(f"duplicate of a #3 ({rows[2].commit}, discard, 2.000000): the same change "
                                        f"(VALUE 0.5 -> 2.0) from the same parent {rows[1].commit}")
    project = git.Repo(memory_run["repo"])
    assert not project.git.log("--all", "--format=%s", "--grep=worse again")  # never committed
    notebooks = sorted(p.name for p in (memory_run["repo"] / "runs" / "a" / "notebooks").iterdir())
    assert [int(name[:4]) for name in notebooks] == [1, 2, 3, 4]  # no folder for it: it never ran
    proposer = memory_run["resumed"]
    assert proposer.feedbacks == ["duplicate", "keep"] and len(proposer.contexts) == 2
    assert (proposer.contexts[1].history[-1].status, proposer.contexts[1].history[-1].val_bpb) == ("duplicate", 2.0)
    assert memory_run["resumed_why"] == "max experiments reached"  # the duplicate counted as a proposal


def test_a_new_tag_sees_the_earlier_runs_ideas(memory_run):
    rows, duplicate = memory_run["rows"]["b"], memory_run["invalid"]["b"][0]
    assert [(r.kind, r.description, r.status) for r in rows] == [  # the baseline ran: it is no idea
        ("baseline", "baseline (seed 0)", "keep"), ("candidate", "other", "keep")]
    assert duplicate.failure.startswith("duplicate of a #2 (") and "keep, 0.500000): the same change" in duplicate.failure
    first = memory_run["newcomer"].contexts[0]
    assert "- VALUE: " in first.memory and "ideas tried in 1 run (a)" in first.memory  # the prompt's digest


def test_a_proposer_that_only_repeats_itself_is_stopped(memory_run):
    repeats = memory_run["invalid"]["b"][1:]
    assert len(repeats) == MAX_DUPLICATES and {r.status for r in repeats} == {"duplicate"}
    assert all("runs the same code" in r.failure and "a #2" in r.failure for r in repeats)
    assert len(memory_run["parrot"].contexts) == MAX_DUPLICATES and memory_run["parrot_phase"] == "error"
    assert len(memory_run["rows"]["b"]) == 2  # nothing ran


def test_an_agents_step_that_repeats_an_experiment_is_refused_and_says_which(memory_run):
    sandbox = memory_run["repo"] / "runs" / "a" / "worktree" / "notebooks" / "train_template.ipynb"
    nbformat.write(set_constant(nbformat.read(sandbox, as_version=4), "VALUE", 2.0), sandbox)
    outcome = agent.step(memory_run["repo"], "a", "VALUE 0.4 -> 2.0")
    assert outcome.status == "refused" and outcome.exit_code == 12
    assert outcome.reason.startswith("duplicate of a #3 (") and "runs the same code" in outcome.reason
    assert len(results.read_rows(memory_run["repo"] / "runs" / "a" / "results.tsv")) == 4  # nothing ran
    assert "ideas tried (memory, every run):" in agent.status_lines(memory_run["repo"], "a")


def test_the_memory_the_loops_kept_is_the_one_rebuilt_from_disk(memory_run):
    live = memory_run["live"]
    assert [(e.tag, e.experiment) for e in live] == [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1), ("b", 2)]
    memory_path(memory_run["repo"]).unlink()
    with Memory.open(memory_run["repo"]) as memory:
        assert memory.entries() == live
