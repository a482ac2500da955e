"""The loop's overhead per experiment on CPU, against the same notebook run as a plain Python script.

What it runs (the real train_template.ipynb on the embedded corpus, cpu profile, a fixed training budget):
- the notebook's code cells as one plain script, `python script.py`, twice: the floor any runner pays
  (interpreter, torch import, data load, training, the harness's evaluation);
- the loop with the offline `mutate` proposer in a temporary git repository: the baseline and a few
  experiments, each step timed from the outside.

It prints, per experiment: the loop's wall time, the papermill run's share, the training seconds; the loop's
overhead (wall time that is neither training nor the LLM: the mutate proposer is offline, so its few
milliseconds count as overhead) as seconds and as a ratio of the plain script's wall time; and the
experiments per hour at a 60 s budget, estimated as 3600 / (60 + measured non-training seconds).

    python bench/bench_loop.py [--budget-seconds 10] [--experiments 2] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import git
import nbformat

from autoresearch_kernel.harness.prepare import default_data_dir, prepare
from autoresearch_kernel.loop import Loop, LoopConfig

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "train_template.ipynb"


def plain_script(parameters: dict) -> str:
    """The notebook's code cells as one script, with the parameters set as papermill would set them."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    chunks = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        chunks.append(cell.source)
        if "parameters" in cell.metadata.get("tags", []):
            chunks.append("\n".join(f"{name} = {value!r}" for name, value in parameters.items()))
    return "import matplotlib\nmatplotlib.use('Agg')\n" + "\n\n".join(chunks) + "\n"


def time_script(folder: Path, parameters: dict) -> float:
    script = folder / "train_script.py"
    script.write_text(plain_script(parameters))
    started = time.perf_counter()
    subprocess.run([sys.executable, str(script)], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def make_project(folder: Path) -> Path:
    repo_dir = folder / "project"
    (repo_dir / "notebooks").mkdir(parents=True)
    shutil.copy(NOTEBOOK, repo_dir / "notebooks")
    repo = git.Repo.init(repo_dir)
    repo.git.add(".")
    repo.git.commit("-m", "bench project", env={"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@l",
                                                "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@l"})
    return repo_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-seconds", type=float, default=10.0)
    parser.add_argument("--experiments", type=int, default=2, help="mutate experiments after the baseline")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not (data_dir / "cpu" / "manifest.json").exists():
        prepare(source="embedded", profile="cpu", data_dir=data_dir, progress=False)
    with tempfile.TemporaryDirectory(prefix="bench_loop_") as temporary:
        folder = Path(temporary)
        parameters = dict(PROFILE="cpu", DATA_DIR=str(data_dir), DEVICE="cpu", SEED=0,
                          BUDGET_SECONDS=args.budget_seconds, BUDGET_TOKENS=0,
                          METRICS_PATH=str(folder / "script.metrics.json"))
        script_walls = [time_script(folder, parameters) for _ in range(2)]
        script_wall = statistics.fmean(script_walls)

        config = LoopConfig(repo=make_project(folder), tag="bench", data_dir=str(data_dir), device="cpu",
                            budget_seconds=args.budget_seconds, baseline_seeds=(0,), proposer="mutate")
        steps = []
        with Loop(config) as loop:
            while len(steps) < 1 + args.experiments:
                started = time.perf_counter()
                rows = loop.step()
                if rows:  # an invalid proposal runs nothing: not an experiment
                    steps.append((time.perf_counter() - started, rows))

    print(f"plain script: {script_wall:.1f} s wall per run ({', '.join(f'{w:.1f}' for w in script_walls)}), "
          f"budget {args.budget_seconds:.0f} s of training")
    overheads, non_training = [], []
    for wall, rows in steps:
        runner_wall = sum(r.wall_seconds for r in rows)
        training = sum(r.training_seconds for r in rows)
        scripts = script_wall * len(rows)  # a confirmed candidate runs twice
        overheads.append((wall - scripts) / len(rows))
        non_training.append((wall - training) / len(rows))
        print(f"  #{rows[0].experiment:<3} {rows[0].status:<7} loop step {wall:6.1f} s = papermill run {runner_wall:6.1f} s"
              f" + loop {wall - runner_wall:4.2f} s; training {training:5.1f} s  ({rows[0].description})")
    overhead = statistics.fmean(overheads)
    outside = statistics.fmean(non_training)
    print(f"loop overhead per experiment: {overhead:.1f} s over the plain script "
          f"(ratio loop/script wall {(script_wall + overhead) / script_wall:.2f})")
    print(f"non-training time per experiment in the loop: {outside:.1f} s (start-up, data, evaluation, git, records)")
    print(f"experiments per hour at a 60 s budget: {3600 / (60 + outside):.1f} "
          f"(plain script: {3600 / (60 + script_wall - args.budget_seconds):.1f})")


if __name__ == "__main__":
    main()
