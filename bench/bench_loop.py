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
from autoresearch_kernel.loop.loop import Loop, LoopConfig

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


def runner_fixed_cost(folder: Path, repeats: int = 3) -> tuple[float, float]:
    """Median wall of a two-cell notebook (import torch, write metrics) through the runner, and as a script."""
    from autoresearch_kernel.execution.runner import run_notebook

    body = "import json, torch\njson.dump({'status': 'ok', 'val_bpb': 1.0}, open(METRICS_PATH, 'w'))"
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell('METRICS_PATH = "m.json"', metadata={"tags": ["parameters"]}),
                      nbformat.v4.new_code_cell(body)]
    nbformat.write(notebook, folder / "tiny.ipynb")
    (folder / "tiny.py").write_text(f"METRICS_PATH = {str(folder / 'm.json')!r}\n{body}\n")
    kernel, script = [], []
    for n in range(repeats):
        kernel.append(run_notebook(folder / "tiny.ipynb", folder / f"tiny-{n}.ipynb", timeout_s=120).wall_seconds)
        started = time.perf_counter()
        subprocess.run([sys.executable, str(folder / "tiny.py")], check=True)
        script.append(time.perf_counter() - started)
    return statistics.median(kernel), statistics.median(script)


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
        kernel_cost, script_cost = runner_fixed_cost(folder)
        parameters = dict(PROFILE="cpu", DATA_DIR=str(data_dir), DEVICE="cpu", SEED=0,
                          BUDGET_SECONDS=args.budget_seconds, BUDGET_TOKENS=0,
                          METRICS_PATH=str(folder / "script.metrics.json"))
        config = LoopConfig(repo=make_project(folder), tag="bench", data_dir=str(data_dir), device="cpu",
                            budget_seconds=args.budget_seconds, baseline_seeds=(0, 1), proposer="mutate")
        baseline, scripts, experiments = [], [], []
        with Loop(config) as loop:
            # The same work both ways (the unmodified notebook), interleaved so that both see the same load.
            for _ in range(2):
                started = time.perf_counter()
                rows = loop.step()
                baseline.append((time.perf_counter() - started, rows[0]))
                scripts.append(time_script(folder, parameters))
            while len(experiments) < args.experiments:
                started = time.perf_counter()
                rows = loop.step()
                if rows:  # an invalid proposal runs nothing: not an experiment
                    experiments.append((time.perf_counter() - started, rows))

    loop_wall = statistics.fmean(wall for wall, _ in baseline)
    script_wall = statistics.fmean(scripts)
    training = statistics.fmean(row.training_seconds for _, row in baseline)
    own = [wall - sum(r.wall_seconds for r in rows) for wall, rows in experiments]
    print(f"runner fixed cost (kernel + papermill, tiny notebook): {kernel_cost:.1f} s vs {script_cost:.1f} s as a "
          f"script: +{kernel_cost - script_cost:.1f} s per run")
    print(f"real notebook, {args.budget_seconds:.0f} s budget: loop step {loop_wall:.1f} s "
          f"({', '.join(f'{w:.1f}' for w, _ in baseline)}), plain script {script_wall:.1f} s "
          f"({', '.join(f'{w:.1f}' for w in scripts)}); training {training:.1f} s")
    for (wall, rows), extra in zip(experiments, own):
        print(f"  #{rows[0].experiment:<3} {rows[0].status:<7} step {wall:5.1f} s, of which the loop itself "
              f"(proposal, git, records) {extra:.2f} s  ({rows[0].description})")
    overhead = kernel_cost - script_cost + statistics.fmean(own)
    print(f"loop overhead per experiment: {overhead:.1f} s (runner's fixed cost + the loop's own "
          f"{statistics.fmean(own):.2f} s); ratio to the plain script: {(script_wall + overhead) / script_wall:.2f} "
          f"(measured directly: {loop_wall / script_wall:.2f})")
    non_training = loop_wall - training
    print(f"non-training time per experiment in the loop: {non_training:.1f} s (start-up, data, evaluation, git, records)")
    print(f"experiments per hour at a 60 s budget: {3600 / (60 + non_training):.1f} "
          f"(plain script: {3600 / (60 + script_wall - training):.1f})")


if __name__ == "__main__":
    main()
