"""Lanes: experiments per hour with 1, 2, 4 and 8 lanes, the loop's overhead per experiment, and the real workload.

1. Scheduling alone (`--sleep S`, default 20 s): the loop itself (jail, papermill, a real kernel, git, the
   gate, results.tsv) runs a notebook whose only work is `time.sleep(S)`, M experiments per lane count. The
   figure is experiments per hour from the first candidate's start to the last row, against one lane's
   (goal: N lanes >= 0.9 x N). The overhead per experiment is what a lane spends beyond the sleep: the
   kernel's start and stop (papermill's wall time minus S) and the loop's own share (proposal, commit,
   decision, row) that is left.
2. `--real`: the shipped train_template.ipynb on the cpu profile at a token budget with the mutate
   proposer, 1 lane (the kernel's default threads) against 2 lanes (each half the cores).

    python bench/bench_lanes.py [--lanes 1,2,4,8] [--experiments 16] [--sleep 20] [--executor local|ray] [--cold]
    python bench/bench_lanes.py --real [--experiments 4] [--budget-tokens 32768] [--devices cuda:0]

Scheduling: about 2 x M x S / N + start-up per lane count (M=16, S=20: about 12 minutes for 1,2,4,8).
The real workload: about a minute per experiment on this machine's 2 cores at 32,768 tokens. With
`--devices cuda:0` on a GPU machine: 1 and 2 lanes of the cpu profile's model sharing that GPU.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nbformat
from bench_gate import project  # a sibling script

from autoresearch_kernel import gate
from autoresearch_kernel.harness.prepare import default_data_dir, prepare
from autoresearch_kernel.loop.loop import Loop, LoopConfig
from autoresearch_kernel.proposers import Proposal, ProposalContext, Usage

# The sleep notebook's val_bpb is VALUE exactly: the gate is told the noise is tiny, so nothing is confirmed.
EXACT = gate.GateConfig(z=2.0, min_margin=0.001, confirm_band=0.0, prior_sd=0.001, rule="means")

PARAMETERS = """\
PROFILE = "cpu"
DATA_DIR = ""
DEVICE = "auto"
SEED = 0
BUDGET_SECONDS = 0.0
BUDGET_TOKENS = 0
METRICS_PATH = "metrics.json"
EVALUATE = True"""
REPORT = """\
import json
json.dump({"status": "ok", "val_bpb": VALUE, "training_seconds": SLEEP, "total_tokens_M": 0.0}, open(METRICS_PATH, "w"))"""


def sleep_notebook(seconds: float) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    notebook.cells = [
        nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(f"VALUE = 1.0\nSLEEP = {seconds}"),
        nbformat.v4.new_code_cell("import time\ntime.sleep(SLEEP)"),
        nbformat.v4.new_code_cell(REPORT, metadata={"tags": ["harness"]}),
    ]
    return notebook


class WorseEachTime:
    """Proposes VALUE a little higher each time: every experiment runs, and is discarded."""

    name = "bench"
    fixes_crashes = False

    def __init__(self):
        self.proposed = 0

    def propose(self, context: ProposalContext) -> Proposal:
        self.proposed += 1
        notebook = nbformat.from_dict(context.notebook)
        notebook.cells[1].source = notebook.cells[1].source.replace("VALUE = 1.0", f"VALUE = {1 + self.proposed / 1000}")
        return Proposal(f"VALUE 1.0 -> {1 + self.proposed / 1000}", notebook, Usage())

    def feedback(self, proposal: Proposal, status: str, val_bpb: float | None = None) -> None:
        pass


class Clock:
    """When the first candidate started and the last row was written (the loop's own events)."""

    def __init__(self):
        self.first = self.last = None

    def __call__(self, event) -> None:
        if self.first is None and event.phase == "running" and event.status.kind == "candidate":
            self.first = time.perf_counter()
        if event.rows and event.rows[-1].kind != "baseline":
            self.last = time.perf_counter()


def run_loop(config: LoopConfig, proposer) -> tuple[list, float]:
    clock = Clock()
    with Loop(config, proposer=proposer, on_event=clock) as loop:
        why = loop.run()
        rows = list(loop.records.rows)
    if why != "max experiments reached":
        raise SystemExit(f"the loop ended with {why!r}")
    crashed = [r for r in rows if r.status == "crash"]
    if crashed:
        raise SystemExit(f"crashes: {[(r.experiment, r.failure) for r in crashed]}")
    return rows, clock.last - clock.first


def scheduling(args) -> None:
    print(f"scheduling: a notebook that sleeps {args.sleep:g} s, {args.experiments} experiments per lane count, "
          f"executor {args.executor}, in the jail, {'cold kernels' if args.cold else 'kernels started ahead'}")
    print(f"{'lanes':>5} {'wall':>8} {'exp/hour':>9} {'speed-up':>9} {'of N':>6} {'papermill+kernel':>17} "
          f"{'loop share':>11}")
    one = None
    for lanes in args.lanes:
        with tempfile.TemporaryDirectory(prefix="bench_lanes_") as temporary:
            config = LoopConfig(repo=project(Path(temporary), sleep_notebook(args.sleep)), tag="lanes",
                                baseline_seeds=(0,), lanes=lanes, device="cpu", max_experiments=args.experiments,
                                timeout_s=args.sleep + 300, gate=EXACT, executor=args.executor,
                                ray_address=args.ray_address, warm_kernels=not args.cold,
                                overlap_scoring=not args.cold)
            rows, span = run_loop(config, WorseEachTime())
        runs = [r for r in rows if r.kind == "candidate"]
        per_hour = len(runs) / span * 3600
        one = one or per_hour
        kernel = statistics.fmean(r.wall_seconds for r in runs) - args.sleep  # papermill + kernel start/stop
        lane_seconds = span * lanes / len(runs)  # what one experiment held its lane for
        print(f"{lanes:>5} {span:>7.1f}s {per_hour:>9.0f} {per_hour / one:>8.2f}x {per_hour / one / lanes:>6.2f} "
              f"{kernel:>16.2f}s {lane_seconds - args.sleep - kernel:>10.2f}s")


def real(args) -> None:
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not (data_dir / "cpu" / "manifest.json").exists():
        prepare(source="embedded", profile="cpu", data_dir=data_dir, progress=False)
    from autoresearch_kernel.proposers.mutate import MutateProposer

    print(f"real workload: train_template.ipynb, cpu profile, {args.budget_tokens:,} tokens per experiment, "
          f"mutate proposer (seed 0), {args.experiments} experiments")
    print(f"{'lanes':>5} {'threads':>8} {'wall':>8} {'exp/hour':>9} {'speed-up':>9} {'mean run':>9} {'best':>9}")
    one = None
    for lanes in (1, 2):
        with tempfile.TemporaryDirectory(prefix="bench_lanes_real_") as temporary:
            config = LoopConfig(repo=project(Path(temporary)), tag="real", data_dir=str(data_dir),
                                device="cuda" if args.devices else "cpu", devices=args.devices,
                                budget_tokens=args.budget_tokens, baseline_seeds=(0, 1), lanes=lanes,
                                max_experiments=args.experiments)
            loop_rows, span = run_loop(config, MutateProposer(seed=0))
        runs = [r for r in loop_rows if r.kind != "baseline"]
        per_hour = len(runs) / span * 3600
        one = one or per_hour
        best = min(r.best for r in loop_rows if r.best is not None)
        threads = args.devices or ("default" if lanes == 1 else "1 each")
        print(f"{lanes:>5} {threads:>8} {span:>7.1f}s {per_hour:>9.1f} {per_hour / one:>8.2f}x "
              f"{statistics.fmean(r.wall_seconds for r in runs):>8.1f}s {best:>9.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 4, 8])
    parser.add_argument("--experiments", type=int, default=None, help="per lane count (default 16; --real: 4)")
    parser.add_argument("--sleep", type=float, default=20.0)
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--cold", action="store_true", help="each run's kernel started with the run, as before "
                        "kernels were started ahead (--cold-kernels --no-overlap)")
    parser.add_argument("--real", action="store_true", help="the shipped notebook, 1 against 2 lanes")
    parser.add_argument("--budget-tokens", type=int, default=32_768)
    parser.add_argument("--devices", default=None,
                        help="--real on a GPU box: e.g. cuda:0, which 1 and 2 lanes then share (the cpu profile's model)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if args.real:
        args.experiments = args.experiments or 4
        real(args)
    else:
        args.experiments = args.experiments or 16
        scheduling(args)


if __name__ == "__main__":
    main()
