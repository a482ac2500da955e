"""Seed luck at the gate: how many candidates that only re-draw the initialisation each rule keeps.

What it runs: the shipped train_template.ipynb through the loop itself (jail, scorer, results.tsv), on the cpu
profile with a fixed token budget: the baseline on 3 seeds, then K candidates from a scripted proposer whose
only edit is `torch.randn(N)` before the model is built (N differs per candidate), so the model's
initialisation is drawn again and nothing else changes. No such candidate is better, so every keep is false.

Both rules are applied afterwards to the same measured values, each candidate against the baseline:
- the margin rule the loop had: beat the baseline's mean by max(min_margin, z * sd of the 3 seeds); a gain
  within the band above that margin is re-run on seed 1, and the mean of the two runs decides;
- the means rule (gate.decide_by_means, `GateConfig(rule="means")`; bench/bench_power.py measures it beside
  the paired rule, the loop's default now): the candidate's mean against the baseline's mean in standard
  errors of their difference, with the noise pooled over the baseline and the confirmation pairs this rule
  asked for so far, and the cpu profile's default as the prior.
To measure what either rule might ask for, the loop runs with a gate that keeps nothing and re-runs every
candidate on the next seeds (1, 2, 3: the means rule's confirmations) while its mean beats the baseline's mean
(neither rule re-runs any other).

    python bench/bench_gate.py [--candidates 10] [--budget-flops 1.25e12 | --budget-tokens N] [--data-dir DIR]

About a minute per run on this machine's 2 shared cores (--candidates 4: 9 runs in 8.7 minutes); the default,
3 + 10 runs and the re-runs of about half the candidates, takes 15 to 18 minutes.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import git
import nbformat

from autoresearch_kernel import gate
from autoresearch_kernel.harness.prepare import default_data_dir, prepare
from autoresearch_kernel.harness.profiles import choose_budget
from autoresearch_kernel.loop.loop import Loop, LoopConfig
from autoresearch_kernel.proposers import Proposal, ProposalContext, Usage

TEMPLATE = Path(__file__).resolve().parents[1] / "notebooks" / "train_template.ipynb"

BASELINE_SEEDS = (0, 1, 2)  # as the issue measured it: the loop's default
MODEL_LINE = "model = GPT().to(run.device)"
# The measuring gate: never keeps (the margin is a million standard errors), and re-runs every candidate whose
# first run is better than the baseline's mean at all (a floor of 0 standard errors, no band).
RULE = gate.GateConfig(rule="means")  # the means rule with the loop's defaults (the paired: bench_power.py)
MEASURE_ALL = gate.GateConfig(z=1e6, min_margin=0.0, confirm_band=0.0, confirm_floor=0.0,
                              confirm_runs=RULE.confirm_runs, rule="means")
# A run's wall-clock limit. The loop's default (from the cpu profile's 45 s: 165 s) is hit by a 65,536-token run
# on a busy shared machine; a token budget gives the same val_bpb however long the run takes, so wait for it.
TIMEOUT_S = 900.0


class RedrawProposer:
    """Each proposal adds `torch.randn(N)` before the model is built: the initialisation is drawn again."""

    name = "redraw"
    fixes_crashes = False

    def __init__(self):
        self.proposed = 0

    def propose(self, context: ProposalContext) -> Proposal:
        self.proposed += 1
        draws = 97 * self.proposed  # distinct for each candidate: a distinct initialisation
        notebook = context.notebook
        cell = next(c for c in notebook.cells if MODEL_LINE in c.source)
        cell.source = cell.source.replace(MODEL_LINE, f"torch.randn({draws})  # re-draws the initialisation\n{MODEL_LINE}")
        return Proposal(f"re-draw the initialisation (torch.randn({draws}))", notebook, Usage())

    def feedback(self, proposal: Proposal, status: str, val_bpb: float | None = None) -> None:
        pass


def former_margin(baseline: list[float]) -> float:
    """The margin of the loop's former rule: max(min_margin, z * sd of the baseline's seeds)."""
    return max(RULE.min_margin, RULE.z * statistics.stdev(baseline))


def margin_rule(best: float, margin: float, runs: list[float]) -> str:
    """The loop's former rule, on the runs so far: keep, discard, or confirm (re-run once, then the mean)."""
    gain = gate.improvement(best, statistics.fmean(runs))
    if gain <= margin:
        return "discard"
    return "confirm" if gain <= margin * (1 + RULE.confirm_band) and len(runs) == 1 else "keep"


def margin_rule_status(best: float, margin: float, runs: list[float]) -> str:
    """The former rule's final status: its first decision, or after a confirmation the one on both runs."""
    status = margin_rule(best, margin, runs[:1])
    return margin_rule(best, margin, runs[:2]) if status == "confirm" else status


def project(folder: Path, notebook: nbformat.NotebookNode | None = None) -> Path:
    """A git repository holding the shipped notebook (or `notebook`), as a user's project holds it."""
    path = folder / "project"
    (path / "notebooks").mkdir(parents=True)
    if notebook is None:
        shutil.copy(TEMPLATE, path / "notebooks")
    else:
        nbformat.write(notebook, path / "notebooks" / TEMPLATE.name)
    repo = git.Repo.init(path)
    with repo.config_writer() as config:
        config.set_value("user", "name", "bench")
        config.set_value("user", "email", "bench@localhost")
    repo.git.add(".")
    repo.git.commit("-m", "the sandbox")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=10, help="initialisation-only candidates (K)")
    parser.add_argument("--budget-tokens", type=int, default=0, help="a token budget instead of FLOPs")
    parser.add_argument("--budget-flops", type=float, default=0.0,
                        help="training FLOPs per run (default: the cpu profile's 1.25e12, 65,536 tokens of the baseline)")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not (data_dir / "cpu" / "manifest.json").exists():
        prepare(source="embedded", profile="cpu", data_dir=data_dir, progress=False)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_gate_") as temporary:
        config = LoopConfig(repo=project(Path(temporary)), tag="gate", data_dir=str(data_dir), device="cpu",
                            budget_tokens=args.budget_tokens, budget_flops=args.budget_flops, baseline_seeds=BASELINE_SEEDS,
                            gate=MEASURE_ALL, max_experiments=args.candidates, timeout_s=TIMEOUT_S)
        with Loop(config, proposer=RedrawProposer()) as loop:
            why = loop.run()
            rows = list(loop.records.rows)
    wall = time.perf_counter() - started

    crashed = [r for r in rows if r.val_bpb is None]
    if crashed or why != "max experiments reached":
        sys.exit(f"the bench's loop ended with {why!r}; crashed: {[(r.experiment, r.failure) for r in crashed]}")
    baseline = [r.val_bpb for r in rows if r.kind == "baseline"]
    candidates: dict[str, list[float]] = {}
    names: dict[str, str] = {}
    for row in rows:
        if row.kind != "baseline":
            candidates.setdefault(row.commit, []).append(row.val_bpb)
            names.setdefault(row.commit, row.description)

    pooled = [baseline]  # the means rule pools the confirmation pairs it asked for, in order, as the loop does
    old_keeps = new_keeps = 0
    mean = statistics.fmean(baseline)
    print(f"cpu profile, {choose_budget('cpu', tokens=args.budget_tokens, flops=args.budget_flops).describe()} per run, {len(rows)} runs in {wall / 60:.1f} min")
    print(f"baseline, seeds {BASELINE_SEEDS}: {', '.join(f'{v:.6f}' for v in baseline)}; mean {mean:.6f}, "
          f"sd {statistics.stdev(baseline):.6f}; the margin rule's margin "
          f"{former_margin(baseline):.6f}")
    print(f"{'candidate':<46} {'seed 0':>9} {'seed 1':>9}  {'margin rule':<12} {'means rule':<10} margin (means)")
    for commit, runs in candidates.items():
        old = margin_rule_status(mean, former_margin(baseline), runs)
        noise = gate.estimate_noise(pooled, "cpu", RULE)
        new, used = gate.decide_by_means(baseline, runs[:1], noise, RULE), 1
        while new.status == "confirm" and used < len(runs):  # the confirmations it asks for, one seed at a time
            used += 1
            new = gate.decide_by_means(baseline, runs[:used], noise, RULE)
        if used > 1:
            pooled.append(runs[:used])
        old_keeps += old == "keep"
        new_keeps += new.status == "keep"
        second = f"{runs[1]:.6f}" if len(runs) > 1 else "-"
        print(f"{names[commit]:<46} {runs[0]:9.6f} {second:>9}  {old:<12} {new.status:<10} {new.margin:.6f}")

    first_runs = [runs[0] for runs in candidates.values()]
    pairs = [runs for runs in candidates.values() if len(runs) > 1]
    within = gate.NoiseEstimate.pooled([baseline, *pairs], prior_sd=None)
    final = gate.estimate_noise(pooled, "cpu", RULE)
    print(f"spread: {len(first_runs)} re-draws of the initialisation on seed 0: sd {statistics.stdev(first_runs):.6f} "
          f"(mean {statistics.fmean(first_runs):.6f}); seed-to-seed within the baseline and {len(pairs)} re-run "
          f"groups: sd {within.sd:.6f} on {within.measured_dof} dof")
    print(f"means rule's noise at the end: sd {final.sd:.6f}, upper bound {final.upper:.6f} on {final.dof:g} dof "
          f"({final.measured_dof} measured)")
    print(f"false keeps: margin rule {old_keeps} of {len(candidates)}, means rule {new_keeps} of {len(candidates)}")


if __name__ == "__main__":
    main()
