"""`python -m autoresearch_kernel loop` and `report` as a user runs them: real processes, real repositories.

The fixture sandbox keeps most of these fast; one test runs the real train_template.ipynb on the prepared
embedded corpus with a tiny token budget, end to end (loop with the mutate proposer, then the report).
"""
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import git
import pytest
from loop_fixture import make_repo

from autoresearch_kernel.journal import results, runstate

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "autoresearch_kernel", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_loop_then_report_on_the_fixture(tmp_path):
    repo = make_repo(tmp_path / "project")
    done = cli("loop", "--tag", "c1", "--repo", repo, "--baseline-seeds", 1, "--max-experiments", 2, "--timeout", 30)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert f"results: {repo / 'runs' / 'c1' / 'results.tsv'}" in out
    assert f"notebooks: {repo / 'runs' / 'c1' / 'notebooks'}" in out
    rows = results.read_rows(repo / "runs" / "c1" / "results.tsv")
    for row in rows:  # one line per experiment: n, commit, val_bpb, status (a seed reads baseline), description
        status = "baseline" if row.kind == "baseline" else row.status
        assert any(line.split()[:2] == [str(row.experiment), row.commit] and status in line.split() for line in out)
    assert out[-1].startswith("stopped: max experiments reached. Continue with:")
    assert "--resume" in out[-1]

    again = cli("loop", "--tag", "c1", "--repo", repo)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        "error: run tag 'c1' already exists (branch autoresearch/c1): resume it or choose a new tag"]

    report = cli("report", "--tag", "c1", "--repo", repo)
    assert report.returncode == 0, report.stderr
    ideas = [r for r in rows if r.kind != "baseline"]
    assert report.stdout.startswith(f"1 baseline run ({rows[0].val_bpb:.6f}), {len(ideas)} experiments: keep")
    assert (repo / "runs" / "c1" / "progress.png").stat().st_size > 10_000


def test_clear_refusals(tmp_path):
    not_repo = cli("loop", "--tag", "x", "--repo", tmp_path)
    assert not_repo.returncode == 2 and "git init" in not_repo.stderr
    assert len(not_repo.stderr.strip().splitlines()) == 1
    both = cli("loop", "--tag", "x", "--budget-seconds", 5, "--budget-tokens", 100)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    missing = cli("report", "--tag", "nothing", "--repo", tmp_path)
    assert missing.returncode == 2 and "no results" in missing.stderr


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path):
    repo = make_repo(tmp_path / "project")
    process = subprocess.Popen(
        [sys.executable, "-m", "autoresearch_kernel", "loop", "--tag", "c2", "--repo", str(repo),
         "--baseline-seeds", "2", "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = runstate.read_status(repo, "c2") if (repo / "runs" / "c2" / "status.json").exists() else None
            if status and status.phase == "running":
                break
            time.sleep(0.1)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "stopped: interrupted" in out
    assert not runstate.is_running(repo, "c2")
    resumed = cli("loop", "--tag", "c2", "--repo", repo, "--resume", "--baseline-seeds", 2, "--max-experiments", 0)
    assert resumed.returncode == 0, resumed.stderr
    rows = results.read_rows(repo / "runs" / "c2" / "results.tsv")
    assert [(r.experiment, r.seed) for r in rows] == [(1, 0), (2, 1)]  # nothing lost, nothing twice


def test_real_notebook_end_to_end(tmp_path, prepared_dir):
    """The real sandbox on the prepared embedded corpus: baseline, one mutate experiment, report."""
    repo = tmp_path / "project"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "train_template.ipynb", repo / "notebooks")
    if (ROOT / "program.md").exists():
        shutil.copy(ROOT / "program.md", repo)
    project = git.Repo.init(repo)
    project.git.add(".")
    project.git.commit("-m", "project", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@l",
                                             "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@l"})
    done = cli("loop", "--tag", "e2e", "--repo", repo, "--data-dir", prepared_dir, "--budget-tokens", 8192,
               "--baseline-seeds", 1, "--max-experiments", 1, "--timeout", 240, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = results.read_rows(repo / "runs" / "e2e" / "results.tsv")
    assert rows[0].kind == "baseline" and rows[0].status == "keep" and 1.0 < rows[0].val_bpb < 20.0
    assert rows[0].tokens_m == pytest.approx(0.008, abs=0.002)
    assert len(rows) >= 2 and rows[1].kind == "candidate" and " -> " in rows[1].description
    assert rows[1].status in ("keep", "discard", "crash")
    report = cli("report", "--tag", "e2e", "--repo", repo)
    assert report.returncode == 0 and "baseline" in report.stdout
