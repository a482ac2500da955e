"""The circle-packing task through the real loop: `autoresearch loop --task circle-packing` with mutate and with
the llm proposer (the real openai client against tests/llm_server.py), kernels in the jail, the task's scorer
in a jail of its own; and that scorer's jail on its own."""
import json
import os
import subprocess
import sys

from llm_server import scripted_llm  # noqa: F401  (a fixture)
from loop_fixture import make_repo

from autoresearch_kernel import tasks
from autoresearch_kernel.journal import results
from autoresearch_kernel.tasks.filescore import FileScorer

BASELINE = 2.240701  # the shipped notebook's sum of radii on seed 0 with the default 4,000 steps


def cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "autoresearch_kernel", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_loop_with_mutate_keeps_gains_and_reports_the_best_sum(tmp_path):
    repo = make_repo(tmp_path / "project")  # a repository without the task's notebook: the run branch gets it
    done = cli("loop", "--task", "circle-packing", "--tag", "cp", "--repo", repo, "--max-experiments", 4,
               "--data-dir", tmp_path / "data")
    assert done.returncode == 0, done.stderr
    rows = results.read_rows(repo / "runs" / "cp" / "results.tsv")
    assert [r.kind for r in rows][:1] == ["baseline"] and len([r for r in rows if r.kind == "baseline"]) == 1
    assert rows[0].val_bpb == BASELINE
    assert {(r.metric, r.direction, r.scored, r.sandbox) for r in rows} == {("sum_radii", "higher", "outside", "bwrap")}
    kept = [r for r in rows[1:] if r.status == "keep"]
    assert kept and all(r.val_bpb > BASELINE for r in kept)  # higher is kept
    assert all(r.val_bpb <= r.best for r in rows if r.status == "discard")
    assert not any(r.kind == "confirm" for r in rows)  # deterministic: nothing is re-run on other seeds
    best = max(r.val_bpb for r in kept)
    report = cli("report", "--tag", "cp", "--repo", repo)
    assert report.returncode == 0, report.stderr
    assert f"sum_radii (higher is better): baseline {BASELINE:.6f} -> best {best:.6f}" in report.stdout
    log = (repo / "runs" / "cp" / "integrity.log").read_text()
    assert f"sum_radii {BASELINE:.6f}" in log  # measured by the task's scorer, outside the experiment
    assert "circle_packing.ipynb" in subprocess.run(["git", "-C", repo, "ls-tree", "-r", "--name-only",
                                                      "autoresearch/cp"], capture_output=True, text=True).stdout
    assert "circle_packing" not in subprocess.run(["git", "-C", repo, "ls-files"], capture_output=True,
                                                  text=True).stdout  # the user's branch is as it was


REPLY = """Description: grow the final penalty tenfold
<<<<<<< SEARCH
PENALTY_END = 3.0      # ... growing geometrically to this at its last step
=======
PENALTY_END = 30.0     # ... growing geometrically to this at its last step
>>>>>>> REPLACE
"""
CHEAT = """Description: claim a perfect packing
<<<<<<< SEARCH
centers, radii = best
=======
centers, radii = best[0], best[1] * 2
>>>>>>> REPLACE
"""


def test_loop_with_the_llm_keeps_a_higher_sum_and_refuses_an_invalid_packing(tmp_path, scripted_llm):
    repo = make_repo(tmp_path / "project")
    scripted_llm.push(REPLY)
    scripted_llm.push(CHEAT)
    env = dict(os.environ, OPENAI_API_KEY="sk-test")
    done = cli("loop", "--task", "circle-packing", "--tag", "llm", "--repo", repo, "--max-experiments", 2,
               "--proposer", "llm", "--model", "scripted", "--base-url", scripted_llm.base_url,
               "--data-dir", tmp_path / "data", env=env)
    assert done.returncode == 0, done.stderr
    rows = results.read_rows(repo / "runs" / "llm" / "results.tsv")
    baseline, raised, cheat = rows
    assert raised.status == "keep" and raised.val_bpb > baseline.val_bpb + 0.1 and raised.proposer == "llm"
    assert cheat.status == "crash" and "invalid packing" in cheat.failure  # the scorer checks the geometry
    prompt = scripted_llm.prompt(0)
    assert "## The sandbox: notebooks/circle_packing.ipynb" in prompt
    assert "Best sum_radii so far: 2.240701 (higher is better)" in prompt
    assert "may raise sum_radii" in prompt and "Pack 26 circles" in prompt  # the task's program.md


def test_the_task_scorer_runs_in_its_own_jail(tmp_path):
    task = tasks.load("circle-packing")
    folder, private = tmp_path / "experiment", tmp_path / "private"
    folder.mkdir()
    private.mkdir()
    centers = [[0.1 + 0.2 * i, 0.1 + 0.2 * j] for i in range(5) for j in range(5)] + [[0.0, 0.0]]
    (folder / "packing.json").write_text(json.dumps({"centers": centers, "radii": [0.1] * 25 + [0.0]}))
    scorer = FileScorer(task, tmp_path / "public", private, jail=True)
    score = scorer.score(folder / "packing.json")
    assert score.ok and abs(score.value - 2.5) < 1e-9
    (folder / "packing.json").write_text(json.dumps({"centers": centers, "radii": [0.2] * 26}))
    assert "invalid packing" in scorer.score(folder / "packing.json").failure
    assert scorer.score(folder / "missing.json").failure == "the experiment wrote no packing.json"
