"""The budget's verification on real runs: what honest models of other shapes spend under a FLOP budget, and
what the compute-seconds test allows them.

What it runs: the loop itself (jail, scorer, budget verification, results.tsv) on the shipped
train_template.ipynb, cpu profile, the cpu profile's FLOP budget (or --budget-flops), one baseline seed, then
one run of each change below (no confirmations: only the budget's figures are read). Honest changes of shape
(a model cheaper or costlier per token gets more or fewer tokens), and one that trains as long again on
re-used batches without telling the clock (the tokens it reports stay within the budget; its CPU seconds give
it away).

It prints, per run: its status, tokens, forward FLOPs and compute microseconds per token (the scorer's), the
FLOP scale (integrity/budget.flop_scale: its seconds per FLOP over the baseline's, between 1 and 3), the CPU
seconds of the jail's tree, the seconds allowed, and how much of the allowance it used.

    python bench/bench_budget.py [--budget-flops F] [--data-dir DIR]

Time: about a minute per run on two cores (7 runs).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nbformat
from bench_gate import project  # a sibling script

from autoresearch_kernel.gate import GateConfig
from autoresearch_kernel.harness.prepare import default_data_dir, prepare
from autoresearch_kernel.integrity import budget
from autoresearch_kernel.journal import records
from autoresearch_kernel.loop.loop import Loop, LoopConfig
from autoresearch_kernel.proposers import Proposal, Usage

AFTER_TRAINING = "    model.zero_grad(set_to_none=True)\n    run.tick(step, loss.detach())\n    step += 1"
# Twice the budget's compute: once it is spent, as many steps again on the last batch, re-used (no token more
# is served, so the tokens it reports stay within the budget), unseen by the clock and by done()
TWICE = AFTER_TRAINING + """
for _ in range(step):
    with autocast:
        loss = train_model(x, y)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()
    model.zero_grad(set_to_none=True)"""
CHANGES = [  # (description, [(old, new), ...]) in the cpu profile's hyperparameters
    ("DEPTH 4 -> 2, ASPECT_RATIO 48 -> 27 (a ninth of the FLOPs per token)",
     [("    DEPTH = 4\n", "    DEPTH = 2\n"), ("    ASPECT_RATIO = 48\n", "    ASPECT_RATIO = 27\n")]),
    ("DEPTH 4 -> 2", [("    DEPTH = 4\n", "    DEPTH = 2\n")]),
    ("HEAD_DIM 48 -> 32", [("    HEAD_DIM = 48\n", "    HEAD_DIM = 32\n")]),
    ("DEPTH 4 -> 6", [("    DEPTH = 4\n", "    DEPTH = 6\n")]),
    ("ASPECT_RATIO 48 -> 64", [("    ASPECT_RATIO = 48\n", "    ASPECT_RATIO = 64\n")]),
    ("trains twice its budget on re-used batches, unseen by the clock", [(AFTER_TRAINING, TWICE)]),
]


class Scripted:
    """Proposes CHANGES in order, each on the baseline (nothing is kept: no confirmations, a high bar)."""

    name = "bench"
    fixes_crashes = False

    def __init__(self):
        self.changes = list(CHANGES)

    def propose(self, context) -> Proposal:
        description, edits = self.changes.pop(0)
        notebook = nbformat.from_dict(context.notebook)
        for old, new in edits:
            cell = next(c for c in notebook.cells if old in c.source)
            cell.source = cell.source.replace(old, new, 1)
        return Proposal(description, notebook, Usage())

    def feedback(self, proposal, status, val_bpb=None) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-flops", type=float, default=1.25e12)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or str(default_data_dir())
    prepare(profile="cpu", data_dir=data_dir, progress=False)
    # one run each, nothing kept (so that every change runs on the baseline): a margin no change reaches
    never = GateConfig(confirm_runs=0, min_margin=1.0, rule="means")
    with tempfile.TemporaryDirectory(prefix="bench_budget_") as temporary:
        config = LoopConfig(repo=project(Path(temporary)), tag="budget", data_dir=data_dir, device="cpu",
                            baseline_seeds=(0,), max_experiments=len(CHANGES), fix_attempts=0, gate=never,
                            budget_flops=args.budget_flops, timeout_s=1200)
        with Loop(config, proposer=Scripted()) as loop:
            loop.run()
            rows, reference = list(loop.records.rows), loop.records.budget_reference()
    print(f"FLOP budget {args.budget_flops:.3g}, cpu profile, one run each; allowed = 1.5 x the baseline's CPU "
          f"seconds x the FLOP scale")
    print(f"{'status':<12} {'tokens':>8} {'fwd MFLOP/tok':>14} {'us/tok':>8} {'scale':>6} {'CPU s':>7} "
          f"{'allowed':>8} {'used':>6} {'val_bpb':>9}  change")
    for row in rows:
        spent = records.spent(row)
        allowed = budget.allowed_seconds("flops", spent, reference, budget.Tolerance())
        scale = budget.flop_scale(spent, reference)
        used = f"{spent.seconds / allowed:>5.0%}" if allowed and spent.seconds else "-"
        print(f"{row.status:<12} {spent.tokens:>8,.0f} {(spent.forward_flops_per_token or 0) / 1e6:>14.3f} "
              f"{row.forward_us_per_token or 0:>8.2f} {scale:>6.2f} {spent.seconds or 0:>7.1f} "
              f"{allowed or 0:>8.1f} {used:>6} {row.val_bpb or 0:>9.6f}  {row.description}")


if __name__ == "__main__":
    main()
