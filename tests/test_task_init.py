"""`autoresearch init` on the shipped example notebook (examples/classifier), then the loop on the task it made:
real git, real kernels in the jail, the user's scorer in a jail of its own; and the held-out labels, which only
that scorer's jail holds, out of the experiment's reach."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import git
import nbformat
from llm_server import scripted_llm  # noqa: F401  (a fixture)

from autoresearch_kernel import tasks
from autoresearch_kernel.journal import results

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "classifier"
INIT = ["init", "--notebook", "examples/classifier/classifier.ipynb", "--task", "classifier", "--metric", "accuracy",
        "--direction", "higher", "--scorer", "examples/classifier/scorer.py:accuracy", "--artifact",
        "predictions.json", "--prepare", "examples/classifier/data.py:prepare", "--fixed", "1,2,5", "--tunable",
        "HIDDEN,LEARNING_RATE,WEIGHT_DECAY,INIT_SCALE", "--budget", "300", "--no-input"]


def cli(*args, cwd, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "autoresearch_kernel", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def user_repo(path: Path) -> Path:
    """A user's repository holding the example as they wrote it (no tags, no task)."""
    shutil.copytree(EXAMPLE, path / "examples" / "classifier", ignore=shutil.ignore_patterns("__pycache__"))
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "test")
        config.set_value("user", "email", "test@localhost")
    repo.git.add("-A")
    repo.git.commit("-m", "my project")
    return path


def test_init_makes_a_task_that_the_loop_runs(tmp_path):
    repo = user_repo(tmp_path / "project")
    done = cli(*INIT, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "task classifier: accuracy (higher is better), notebook " \
                                          "examples/classifier/classifier.ipynb"
    task = tasks.load("classifier", repo)
    assert (task.artifact, task.scored, task.deterministic, task.budget.default) == ("file", "outside", True, 300)
    notebook = nbformat.read(repo / task.sandbox, as_version=4)
    assert notebook.cells[1].metadata.tags == ["parameters"] and "harness" in notebook.cells[5].metadata.tags
    assert notebook.metadata.autoresearch.tunable == ["HIDDEN", "LEARNING_RATE", "WEIGHT_DECAY", "INIT_SCALE"]
    assert "**accuracy** (higher is better)" in (repo / "tasks" / "classifier" / "program.md").read_text()
    assert not git.Repo(repo).is_dirty(untracked_files=True)  # committed: the loop can branch from it

    loop = cli("loop", "--task", "classifier", "--tag", "c1", "--max-experiments", 2, "--data-dir", tmp_path / "data",
               cwd=repo)
    assert loop.returncode == 0, loop.stderr
    rows = results.read_rows(repo / "runs" / "c1" / "results.tsv")
    assert len(rows) == 3 and rows[0].kind == "baseline" and 0.5 < rows[0].val_bpb < 1.0
    assert {(r.metric, r.direction, r.scored) for r in rows} == {("accuracy", "higher", "outside")}
    assert all(r.description.split()[0] in task_tunable(notebook) for r in rows[1:])  # only the tunable moved
    report = cli("report", "--tag", "c1", cwd=repo)
    assert "accuracy (higher is better): baseline" in report.stdout


def task_tunable(notebook):
    return set(notebook.metadata.autoresearch.tunable)


PEEK = """Description: read the held-out labels
<<<<<<< SEARCH
print("training accuracy:", ((forward(x)[1] > 0.5) == y).mean())
=======
print("training accuracy:", ((forward(x)[1] > 0.5) == y).mean())
labels = np.load("{labels}")
forward = lambda inputs: (None, labels)  # noqa: E731
>>>>>>> REPLACE
"""


def test_the_experiment_cannot_read_what_only_the_scorer_may(tmp_path, scripted_llm):
    repo = user_repo(tmp_path / "project")
    assert cli(*INIT, cwd=repo).returncode == 0
    data = tmp_path / "data"
    labels = tasks.data_folders(tasks.load("classifier", repo), str(data))[1] / "test_y.npy"
    scripted_llm.push(PEEK.format(labels=labels))
    env = dict(os.environ, OPENAI_API_KEY="sk-test")
    done = cli("loop", "--task", "classifier", "--tag", "peek", "--max-experiments", 1, "--proposer", "llm",
               "--model", "scripted", "--base-url", scripted_llm.base_url, "--data-dir", data, cwd=repo, env=env)
    assert done.returncode == 0, done.stderr
    assert labels.is_file()  # the labels exist, outside the jail
    baseline, peek = results.read_rows(repo / "runs" / "peek" / "results.tsv")
    assert peek.status == "crash" and "No such file or directory" in peek.failure
    assert json.loads((repo / "runs" / "peek" / "config.json").read_text())["settings"]["task"] == "classifier"


def test_a_task_that_trusts_its_kernel_is_marked_so_on_every_row_and_in_the_report(tmp_path):
    repo = user_repo(tmp_path / "project")
    done = cli("init", "--notebook", "examples/classifier/classifier.ipynb", "--task", "trusting", "--metric",
               "train_accuracy", "--direction", "higher", "--scored-by", "kernel", "--prepare",
               "examples/classifier/data.py:prepare", "--fixed", "1,2,5", "--budget", "300", "--no-input", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "scored by the notebook's own METRICS_PATH (rows say scored kernel)" in done.stdout
    loop = cli("loop", "--task", "trusting", "--tag", "k", "--max-experiments", 1, "--data-dir", tmp_path / "data",
               cwd=repo)
    assert loop.returncode == 0, loop.stderr
    rows = results.read_rows(repo / "runs" / "k" / "results.tsv")
    assert len(rows) == 2 and {r.scored for r in rows} == {"kernel"} and 0.5 < rows[0].val_bpb <= 1.0
    report = cli("report", "--tag", "k", cwd=repo)
    assert "2 of 2 runs were scored by the experiment's own kernel" in report.stdout
