"""The experiment cycle, part by part: how much of it is training, cold kernels against warm ones.

What it runs: the loop itself (jail, kernel host, papermill, scorer, paired gate, results.tsv) with the
offline mutate proposer on the shipped train_template.ipynb, cpu profile, the cpu profile's FLOP budget
(or --budget-flops), in a temporary git repository, for each lane count and each way of running:
- cold: `--cold-kernels --no-overlap` (each run's kernel starts when the run starts; the lane waits for
  the scorer), as the loop ran before kernels were started ahead;
- warm: the default (the lane's next kernel starts, imports and loads the data while its run runs; the
  next run trains while the last one is scored).

The baseline seed runs first (not timed); then the loop runs until --experiments proposals, timed from the
first run after the baseline to the last row. It prints, per way and lane count:
- the cycle: the seconds one run holds its lane (lanes x elapsed / runs), runs per hour, and training (the
  harness's training_seconds) as a share of the cycle;
- the parts of one run, means over its runs, read from the executed notebooks (papermill's per-cell times)
  and the rows: `start` (kernel host, kernel start and papermill outside the cells; a warm kernel has paid
  most of it ahead), `set-up` (parameters and the harness's set-up cell: imports, the data's verification and
  load), `model` (the agent's cells before the training loop), `first step` (the training cell beyond the
  timed training: the first step, under the FLOP counter), `training`, `export` (harness.finish: checkpoint
  and torch.export), `scoring` (the scorer's seconds, behind the next run's training when warm).

    python bench/bench_loop.py [--lanes 1,2,4,8] [--experiments 6] [--ways cold,warm] [--budget-flops F]
                               [--data-dir DIR]

Time: about (experiments + confirmations) x 30 s per lane count and way on two cores at the default budget.
"""
from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import nbformat
from bench_gate import project  # a sibling script

from autoresearch_kernel.harness.prepare import default_data_dir, prepare
from autoresearch_kernel.loop.loop import Loop, LoopConfig
from autoresearch_kernel.proposers.mutate import MutateProposer

WAYS = {"cold": dict(warm_kernels=False, overlap_scoring=False), "warm": dict(warm_kernels=True, overlap_scoring=True)}
PARTS = ("start", "set-up", "model", "first step", "training", "export", "scoring")
TRAINING_CELL = "while not run.done()"  # the template's training loop


def parts_of(row, folder: Path) -> dict[str, float]:
    """One run's seconds by part, from its executed notebook and its row."""
    notebook = nbformat.read(folder / row.notebook, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    seconds = [float(cell.metadata.get("papermill", {}).get("duration") or 0.0) for cell in code]
    setup = next(i for i, cell in enumerate(code) if "harness.start(" in cell.source)
    training = next(i for i, cell in enumerate(code) if TRAINING_CELL in cell.source)
    finish = next(i for i, cell in enumerate(code) if "harness.finish(" in cell.source)
    scored = re.search(r"scored in ([0-9.]+) s", notebook.cells[-1].source if notebook.cells else "")
    return {
        "start": row.wall_seconds - sum(seconds),
        "set-up": sum(seconds[: setup + 1]),
        "model": sum(seconds[setup + 1: training]),
        "first step": seconds[training] - row.training_seconds,
        "training": row.training_seconds,
        "export": seconds[finish],
        "scoring": float(scored.group(1)) if scored else 0.0,
    }


class Clock:
    """When the first run after the baseline started and the last row was written (the loop's events)."""

    def __init__(self):
        self.first = self.last = None

    def __call__(self, event) -> None:
        if self.first is None and event.phase == "running" and event.status.kind not in ("baseline", ""):
            self.first = time.perf_counter()
        if event.rows and event.rows[-1].kind != "baseline":
            self.last = time.perf_counter()


def measure(way: str, lanes: int, args, data_dir: Path) -> tuple[dict, list[dict]]:
    """(the cycle's figures, the parts of each timed run) of one loop."""
    with tempfile.TemporaryDirectory(prefix=f"bench_loop_{way}_") as temporary:
        config = LoopConfig(repo=project(Path(temporary)), tag="cycle", data_dir=str(data_dir), device="cpu",
                            budget_flops=args.budget_flops, baseline_seeds=(0,), lanes=lanes,
                            max_experiments=args.experiments, **WAYS[way])
        clock = Clock()
        with Loop(config, proposer=MutateProposer(seed=0), on_event=clock) as loop:
            why = loop.run()
            rows = [r for r in loop.records.rows if r.kind != "baseline" and r.notebook]
            parts = [parts_of(r, loop.folder) for r in rows if r.status != "crash"]
    if why != "max experiments reached" or not parts:
        raise SystemExit(f"{way}, {lanes} lanes: the loop ended with {why!r} after {len(parts)} runs")
    elapsed = clock.last - clock.first
    cycle = lanes * elapsed / len(rows)
    training = statistics.fmean(p["training"] for p in parts)
    return dict(runs=len(rows), elapsed=elapsed, cycle=cycle, per_hour=3600 * len(rows) / elapsed,
                share=training / cycle), parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 4, 8])
    parser.add_argument("--experiments", type=int, default=6, help="proposals per loop")
    parser.add_argument("--ways", default="cold,warm", help="cold, warm or both (comma-separated)")
    parser.add_argument("--budget-flops", type=float, default=1.25e12, help="the cpu profile's default budget")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not (data_dir / "cpu" / "manifest.json").exists():
        prepare(source="embedded", profile="cpu", data_dir=data_dir, progress=False)

    print(f"the cycle: train_template.ipynb, cpu profile, {args.budget_flops:.3g} FLOPs per run, mutate proposer, "
          f"{args.experiments} proposals after one baseline seed, in the jail")
    print(f"{'way':<5} {'lanes':>5} {'runs':>5} {'cycle':>7} {'runs/h':>7} {'training':>9} | "
          + " ".join(f"{part:>10}" for part in PARTS))
    for lanes in args.lanes:
        for way in args.ways.split(","):
            cycle, parts = measure(way, lanes, args, data_dir)
            means = [statistics.fmean(p[part] for p in parts) for part in PARTS]
            print(f"{way:<5} {lanes:>5} {cycle['runs']:>5} {cycle['cycle']:>6.1f}s {cycle['per_hour']:>7.1f} "
                  f"{100 * cycle['share']:>8.0f}% | " + " ".join(f"{m:>9.2f}s" for m in means), flush=True)


if __name__ == "__main__":
    main()
