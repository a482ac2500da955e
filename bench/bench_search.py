"""Searchers on the same compute: random search, mutate, Optuna's TPE and Optuna's CMA-ES, each R times.

What it runs: the shipped train_template.ipynb through the loop itself (jail, scorer, gate, results.tsv), on
the cpu profile with a fixed token budget, so a run's val_bpb depends only on the notebook and the seed. Each
method runs R repeats of N experiments (proposals); each repeat is a fresh run tag (the baseline measured
again on the loop's 3 seeds) in a fresh temporary git repository, and repeat r gives the proposer seed r.
The methods are the loop's own proposers:
- random: `--proposer optuna --sampler random` (uniform draws in the same ranges as TPE and CMA-ES: the yardstick);
- mutate: `--proposer mutate` (one constant stepped at a time, a hill-climber);
- tpe, cmaes: `--proposer optuna --sampler tpe | cmaes`.

It prints, per method: the gate's best after each experiment (the mean of the kept commit's runs; experiment 0
is the baseline) as the mean and min-max over repeats; the final best; how many experiments each repeat needed
to beat the baseline by --threshold (bpb); keeps, confirmations, crashes, invalid proposals; wall time.
It saves the mean best-so-far curves with min-max bands to --out (a PNG) and every row of every run to a TSV
beside it (method, repeat and proposer seed first, then results.tsv's columns).

What the stricter gate costs (unless --no-recheck): each candidate the means rule did not keep is judged again
by the loop's former margin rule (bench_gate.py's `margin_rule`: beat the best by max(min_margin, z * sd of the
baseline seeds), re-run on seed 1 within the band), against the best of the moment in this run. Each one that
rule would have kept, and each near miss (the means rule re-ran it on more seeds, then discarded it), is re-run,
through the loop, on two seeds that neither rule saw (HELD_UP_SEEDS); its gain "held up" when the mean of those
two runs still beats that best. --from-tsv runs nothing but these re-checks, on candidates rebuilt from their
descriptions, and prints the figures of the rows an earlier bench wrote (one cut short, say).

    python bench/bench_search.py [--repeats 1] [--first-repeat 0] [--experiments 16] [--budget-flops 1.25e12 | --budget-tokens N]
                                 [--methods random,mutate,tpe,cmaes] [--threshold 0.02] [--data-dir DIR]
                                 [--out bench/search.png] [--no-recheck] [--from-tsv TSV ...]

Why 16 experiments: Optuna's TPE draws its first 10 trials at random (n_startup_trials), and the kept notebook
is the first trial of each region, so with the same seed TPE proposes exactly what random search proposes for
its first 9 experiments; fewer experiments compare random search with itself.
Time: a run costs 35 to 80 s here whatever the token budget (start-up, export and scoring dominate; 8,192
tokens train in 4 s), so the default, 4 methods x 1 repeat x (3 baseline seeds + 16 experiments + their
confirmations) and the re-checks, about 80 runs, took 51.8 minutes on a quiet machine (more on a busy one);
each further repeat (--repeats, or --first-repeat on its own and --from-tsv to read them together) as long.
`--repeats 1 --experiments 2 --budget-tokens 8192` checks the script in about five minutes per method.

A second workload: `--task circle-packing` (tasks/circle_packing: 26 circles in the unit square, maximise the
sum of radii; best known about 2.635). Its runs take seconds and are deterministic (one baseline seed, no
confirmations, no re-checks), its budget is the task's (gradient steps), and "best" means highest.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import git
import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gate import TIMEOUT_S, former_margin, margin_rule, margin_rule_status, project  # noqa: E402

from autoresearch_kernel import gate, tasks
from autoresearch_kernel.errors import AutoresearchError  # noqa: E402
from autoresearch_kernel.harness.prepare import default_data_dir, prepare  # noqa: E402
from autoresearch_kernel.harness.profiles import choose_budget  # noqa: E402
from autoresearch_kernel.journal.records import seed_for  # noqa: E402
from autoresearch_kernel.journal.results import COLUMNS, Row  # noqa: E402
from autoresearch_kernel.loop.events import Event  # noqa: E402
from autoresearch_kernel.loop.loop import Loop, LoopConfig  # noqa: E402
from autoresearch_kernel.proposers.optuna_search import PREFIX, edit  # noqa: E402
from autoresearch_kernel.text import one_line  # noqa: E402
from autoresearch_kernel.workspace.constants import find_constants, literal_value  # noqa: E402
from autoresearch_kernel.workspace.notebook import SANDBOX  # noqa: E402

# method -> (the loop's --proposer, its options besides the seed)
METHODS = {
    "random": ("optuna", {"sampler": "random"}),
    "mutate": ("mutate", {}),
    "tpe": ("optuna", {"sampler": "tpe"}),
    "cmaes": ("optuna", {"sampler": "cmaes"}),
}
BASELINE_SEEDS = (0, 1, 2)  # the loop's default
# Seeds no candidate runs on in the search: it runs on the first baseline seed and confirms on the next ones,
# up to the paired rule's last look (the means rule's confirmations stop earlier).
_GATE = gate.GateConfig()
_LAST = seed_for(BASELINE_SEEDS, (_GATE.paired_runs - 1) if _GATE.rule == "paired" else _GATE.confirm_runs)
HELD_UP_SEEDS = (_LAST + 1, _LAST + 2)
OUT = Path(__file__).resolve().parent / "search.png"


@dataclass
class Search:
    """One repeat of one method: the rows in the order written, and the experiments as they ended."""

    method: str
    repeat: int
    rows: list[Row] = field(default_factory=list)
    experiments: list[tuple[Row, ...]] = field(default_factory=list)  # a candidate's rows, or (invalid row,)
    wall_s: float = 0.0
    error: str = ""
    lower_is_better: bool = True  # the task's metric's direction

    def on_event(self, event: Event) -> None:
        self.rows += event.rows
        if event.invalid is not None:
            self.experiments.append((event.invalid,))
        elif event.rows and event.rows[0].kind != "baseline":
            self.experiments.append(event.rows)

    @property
    def baseline(self) -> list[float]:
        return [r.val_bpb for r in self.rows if r.kind == "baseline" and r.val_bpb is not None]

    def curve(self) -> list[float]:
        """The gate's best after the baseline (index 0) and after each experiment; an invalid one changes nothing."""
        best = [r.best for r in self.rows if r.kind == "baseline" and r.best is not None][-1:]
        for rows in self.experiments:
            best.append(rows[-1].best if rows[-1].best is not None else best[-1])
        return best

    def lowest(self) -> list[float]:
        """The lowest first run so far (seed 0, kept or not), from the baseline's seed 0 (index 0): what the
        search found, whatever the gate made of it."""
        lowest = [r.val_bpb for r in self.rows if r.kind == "baseline" and r.seed == BASELINE_SEEDS[0]][:1]
        better = min if self.lower_is_better else max  # "lowest" is the best single run: highest for some tasks
        for rows in self.experiments:
            value = rows[0].val_bpb
            lowest.append(better(lowest[-1], value) if value is not None else lowest[-1])
        return lowest

    def statuses(self) -> list[str]:
        return [rows[0].status for rows in self.experiments]


def search(method: str, repeat: int, folder: Path, args: argparse.Namespace, data_dir: Path) -> Search:
    """Run one repeat of one method in a fresh repository under `folder`."""
    proposer, options = METHODS[method]
    gpt = args.task == tasks.DEFAULT
    found = Search(method, repeat, lower_is_better=tasks.load(args.task).metric.lower_is_better)
    config = LoopConfig(repo=project(folder), tag=f"{method}-{repeat}", data_dir=str(data_dir), device="cpu",
                        task=args.task, budget_tokens=args.budget_tokens if gpt else 0,
                        budget_flops=args.budget_flops if gpt else 0.0,
                        baseline_seeds=BASELINE_SEEDS if gpt else None, proposer=proposer,
                        proposer_options={**options, "seed": repeat}, max_experiments=args.experiments,
                        timeout_s=TIMEOUT_S)
    started = time.perf_counter()
    try:
        with Loop(config, on_event=found.on_event) as loop:
            why = loop.run()
        if why == "interrupted":  # the loop took the Ctrl-C: end the bench too
            raise KeyboardInterrupt
        if why != "max experiments reached":
            found.error = f"the loop ended with {why!r}"
    except Exception as error:  # a bug in the loop: say exactly what, keep the other searches going
        found.error = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    found.wall_s = time.perf_counter() - started
    return found


# -- what the stricter gate costs -------------------------------------------------------------------------
def run_on_seeds(repo_path: Path, commit: str, seeds: tuple[int, ...], tag: str, args, data_dir: Path) -> dict[int, float | None]:
    """val_bpb of a run's commit on `seeds`, through the loop: a new tag whose baseline is that commit."""
    repo = git.Repo(repo_path)
    repo.git.checkout("--detach", commit)
    config = LoopConfig(repo=repo_path, tag=tag, data_dir=str(data_dir), device="cpu", budget_tokens=args.budget_tokens,
                        budget_flops=args.budget_flops,
                        baseline_seeds=seeds, max_experiments=0, timeout_s=TIMEOUT_S)
    try:
        with Loop(config) as loop:
            if loop.run() == "interrupted":
                raise KeyboardInterrupt
            return {r.seed: r.val_bpb for r in loop.records.rows}
    except AutoresearchError as error:  # a crash on one of the seeds
        print(f"  re-check of {commit[:7]} on seeds {seeds}: {error}", file=sys.stderr)
        return {}


@dataclass
class Missed:
    """A candidate the means rule did not keep: one the margin rule would have kept, or a near miss (the means
    rule re-ran it on more seeds, then discarded it)."""

    search: Search
    number: int  # the experiment, 1-based
    rows: tuple[Row, ...]
    best: float  # the gate's best when it was decided
    runs: dict[int, float | None]  # seed -> val_bpb, the search's runs and the re-check's
    margin_keeps: bool  # the former margin rule would have kept it

    @property
    def held_up(self) -> bool | None:
        fresh = [self.runs.get(s) for s in HELD_UP_SEEDS]
        if any(v is None for v in fresh):
            return None
        return gate.improvement(self.best, statistics.fmean(fresh)) > 0


def recheck(found: Search, repo_path: Path, args, data_dir: Path) -> tuple[list[Missed], int]:
    """The candidates of one search that the means rule did not keep and the margin rule would have, and its
    near misses, re-run on the seeds they lack; also how many the means rule kept that the margin rule would not."""
    margin = former_margin(found.baseline)
    curve, missed, extra_keeps = found.curve(), [], 0
    for number, rows in enumerate(found.experiments, 1):
        before, status = curve[number - 1], rows[0].status
        runs = {r.seed: r.val_bpb for r in rows if r.val_bpb is not None}
        if status in ("invalid", "crash", "noop") or 0 not in runs:
            continue
        first = margin_rule(before, margin, [runs[0]])
        if status == "keep":  # a keep the margin rule would not have made (where its confirmation run exists)
            extra_keeps += first == "discard" or (1 in runs and margin_rule_status(before, margin, [runs[0], runs[1]]) != "keep")
            continue
        near = any(r.kind == "confirm" for r in rows)
        if first == "discard" and not near:
            continue
        tag = f"check-{found.method}-{found.repeat}-{number}"
        print(f"  re-check: {found.method} repeat {found.repeat} experiment {number} ({rows[0].description})", flush=True)
        if first == "confirm" and 1 not in runs:  # the margin rule's confirmation run on seed 1 first
            runs.update(run_on_seeds(repo_path, rows[0].commit, (1,), f"{tag}-confirm", args, data_dir))
        margin_keeps = first == "keep" or (
            first == "confirm" and runs.get(1) is not None and margin_rule_status(before, margin, [runs[0], runs[1]]) == "keep")
        if not (margin_keeps or near):
            continue
        runs.update(run_on_seeds(repo_path, rows[0].commit, HELD_UP_SEEDS, tag, args, data_dir))
        missed.append(Missed(found, number, rows, before, runs, margin_keeps))
        print(f"  best then {before:.6f}, runs by seed {runs}: held up {missed[-1].held_up}", flush=True)
    return missed, extra_keeps


def rebuild(found: Search, folder: Path) -> tuple[Path, Search]:
    """For --from-tsv: a repository with each candidate of a search committed again, rebuilt from its description
    (`NAME old -> new, ...`, as mutate and optuna write them) on the notebook kept at its moment."""
    path = project(folder)
    repo, sandbox = git.Repo(path), path / SANDBOX
    kept = nbformat.read(sandbox, as_version=4)
    experiments = []
    for rows in found.experiments:
        if rows[0].status == "invalid":
            experiments.append(rows)
            continue
        constants = {c.name: c for c in find_constants(kept, "cpu")}
        changes = {}
        for part in rows[0].description.removeprefix(PREFIX).split(", "):
            name, old, _, new = part.split(" ")
            if literal_value(old) != constants[name].value:
                raise ValueError(f"{rows[0].description!r} does not start from the kept notebook's {name}")
            changes[constants[name]] = new
        notebook = edit(kept, changes)
        nbformat.write(notebook, sandbox)
        repo.git.commit("-am", rows[0].description)
        experiments.append(tuple(dataclasses.replace(r, commit=repo.head.commit.hexsha) for r in rows))
        kept = notebook if rows[0].status == "keep" else kept
    return path, dataclasses.replace(found, experiments=experiments)


# -- reporting --------------------------------------------------------------------------------------------
def spread(values: list[float], digits: int = 4) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def reached(curve: list[float], threshold: float, lower_is_better: bool = True) -> int | None:
    """The first experiment whose best beats the baseline (curve[0]) by more than `threshold`; None: never."""
    return next((n for n, best in enumerate(curve) if gate.improvement(curve[0], best, lower_is_better) > threshold),
                None)


def write_rows(path: Path, searches: list[Search]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(("method", "repeat", "proposer_seed", *COLUMNS))
        for found in searches:
            for row in found.rows + [rows[0] for rows in found.experiments if rows[0].status == "invalid"]:
                values = dataclasses.astuple(row)
                writer.writerow((found.method, found.repeat, found.repeat, *("" if v is None else v for v in values)))


def read_rows(path: Path, lower_is_better: bool = True) -> dict[str, list[Search]]:
    """The searches of a TSV that write_rows wrote (a bench cut short, say); wall times from the rows' clocks,
    and invalid proposals, whose place among the experiments the TSV does not keep, counted at the end."""
    fields = {f.name: f for f in dataclasses.fields(Row)}
    optional = ("val_bpb", "memory_gb", "best", "noise_std", "cost_usd")

    def value(name: str, text: str):
        if text == "":
            return None if name in optional else fields[name].default
        kind = str(fields[name].type)
        return float(text) if "float" in kind else int(text) if kind.startswith("int") else text

    by_method: dict[str, list[Search]] = {}
    with path.open(newline="") as handle:
        for line in csv.DictReader(handle, delimiter="\t"):
            row = Row(**{name: value(name, line.get(name) or "") for name in COLUMNS})  # older TSVs lack newer columns
            searches = by_method.setdefault(line["method"], [])
            if not searches or searches[-1].repeat != int(line["repeat"]):
                searches.append(Search(line["method"], int(line["repeat"]), lower_is_better=lower_is_better))
            found = searches[-1]
            if row.status == "invalid":
                found.experiments.append((row,))
                continue
            found.rows.append(row)
            if row.kind == "confirm":
                found.experiments[-1] += (row,)
            elif row.kind != "baseline":
                found.experiments.append((row,))
    for found in (s for ss in by_method.values() for s in ss):
        clocks = [time.mktime(time.strptime(r.finished_at, "%Y-%m-%dT%H:%M:%S")) for r in found.rows]
        found.wall_s = max(clocks) - min(clocks) + found.rows[0].wall_seconds
    return by_method


def chart(path: Path, by_method: dict[str, list[Search]], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.8), dpi=100)
    axes = figure.subplots()
    for method, searches in by_method.items():
        curves = [s.curve() for s in searches if len(s.curve()) == args.experiments + 1]
        if not curves:
            continue
        xs = range(args.experiments + 1)
        columns = list(zip(*curves))
        line, = axes.plot(xs, [statistics.fmean(c) for c in columns], marker="o", markersize=3,
                          label=f"{method}: the gate's best (mean of {len(curves)})")
        axes.fill_between(xs, [min(c) for c in columns], [max(c) for c in columns], color=line.get_color(), alpha=0.15)
        lowest = list(zip(*[s.lowest() for s in searches if len(s.lowest()) == args.experiments + 1]))
        axes.plot(xs, [statistics.fmean(c) for c in lowest], linestyle="--", drawstyle="steps-post", alpha=0.8,
                  color=line.get_color(),
                  label=f"{method}: {'lowest' if searches[0].lower_is_better else 'highest'} seed-0 run, kept or not")
    axes.set_xlabel("experiment (0: the baseline)")
    axes.set_ylabel(tasks.load(args.task).metric.phrase())
    axes.set_title(f"{workload(args)}.\nSolid: the gate's best so far (the mean of the kept runs), mean over "
                   f"repeats (band: min-max). Dashed: the best seed-0 run so far", fontsize=8)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def workload(args) -> str:
    """What each run measured: the GPT's profile and tokens, or another task's budget."""
    if args.task == tasks.DEFAULT:
        budget = choose_budget("cpu", tokens=args.budget_tokens, flops=args.budget_flops).describe()
        return f"cpu profile, {budget} per run, baseline seeds {BASELINE_SEEDS}"
    task = tasks.load(args.task)
    return f"task {task.name}, {task.budget.default:g} {task.budget.kind} per run, baseline seeds (0,)"


def report(by_method: dict[str, list[Search]], missed: list[Missed], extra_keeps: int, args, wall: float) -> None:
    methods = list(by_method)
    metric = tasks.load(args.task).metric
    print(f"\n{workload(args)}; {args.repeats} repeats x {args.experiments} experiments per method; "
          f"{wall / 60:.1f} min in all")
    found = next((s for ss in by_method.values() for s in ss if len(s.baseline) > 1), None)
    if found is not None:
        margin = [r.margin for r in found.rows if r.kind == "baseline"][-1]
        print(f"baseline (the same in every repeat: a token budget is deterministic): "
              f"{', '.join(f'{v:.6f}' for v in found.baseline)}; mean {statistics.fmean(found.baseline):.6f}, sd "
              f"{statistics.stdev(found.baseline):.6f}; the gate's first margin {margin:.6f} (the former rule's "
              f"{former_margin(found.baseline):.6f})")
    for searches in by_method.values():
        for s in searches:
            if s.error:
                print(f"!! {s.method} repeat {s.repeat}: {s.error}")
    print(f"\nbest {metric.name} after each experiment: mean [min-max] over repeats")
    print(f"{'exp':>3}  " + "  ".join(f"{m:<24}" for m in methods))
    for n in range(args.experiments + 1):
        cells = [spread([c[n] for s in by_method[m] if len(c := s.curve()) > n]) for m in methods]
        print(f"{n:>3}  " + "  ".join(f"{cell:<24}" for cell in cells))
    print(f"\nthe {'lowest' if metric.lower_is_better else 'highest'} first run (seed 0) so far, kept or not (0: the "
          "baseline's seed 0): mean [min-max] over repeats")
    print(f"{'exp':>3}  " + "  ".join(f"{m:<24}" for m in methods))
    for n in range(args.experiments + 1):
        cells = [spread([c[n] for s in by_method[m] if len(c := s.lowest()) > n]) for m in methods]
        print(f"{n:>3}  " + "  ".join(f"{cell:<24}" for cell in cells))
    print(f"\n{'method':<8} {'final best: mean [min-max]':<28} {'sd':>7} {'gain':>7} {'best run':>8}  "
          f"{'experiments to beat the baseline by ' + format(args.threshold, 'g'):<42} "
          f"{'keep':>4} {'conf':>4} {'crash':>5} {'noop':>4} {'inval':>5} {'wall min':>8} {'s/exp':>6}")
    for method, searches in by_method.items():
        finals = [s.curve()[-1] for s in searches if s.curve()]
        gains = [gate.improvement(s.curve()[0], s.curve()[-1], metric.lower_is_better) for s in searches if s.curve()]
        best_runs = [(min if metric.lower_is_better else max)(firsts) for s in searches
                     if (firsts := [rows[0].val_bpb for rows in s.experiments if rows[0].val_bpb is not None])]
        hits = [reached(s.curve(), args.threshold, metric.lower_is_better) for s in searches if s.curve()]
        hit_text = ", ".join("not reached" if h is None else str(h) for h in hits)
        statuses = [st for s in searches for st in s.statuses()]
        confirms = sum(any(r.kind == "confirm" for r in rows) for s in searches for rows in s.experiments)
        experiments = sum(len(s.experiments) for s in searches)
        wall_s = sum(s.wall_s for s in searches)
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        print(f"{method:<8} {spread(finals, 6):<28} {sd:7.4f} {statistics.fmean(gains) if gains else 0:7.4f} "
              f"{statistics.fmean(best_runs) if best_runs else float('nan'):8.4f}  "
              f"{hit_text:<42} {statuses.count('keep'):>4} {confirms:>4} {statuses.count('crash'):>5} "
              f"{statuses.count('noop'):>4} {statuses.count('invalid'):>5} {wall_s / 60:8.1f} "
              f"{wall_s / max(1, experiments + sum(len(s.baseline) for s in searches)):6.0f}")
    print("(gain: the final best's improvement over the baseline's mean; best run: the best first run (seed 0) of any "
          "candidate, kept or not; both means over repeats; s/exp: wall seconds per experiment or baseline seed, "
          "confirmations included)")
    if args.no_recheck:
        return
    margins = sorted({round(former_margin(s.baseline), 6)
                      for ss in by_method.values() for s in ss if len(s.baseline) > 1})
    print(f"\nwhat the stricter gate costs: the candidates the means rule did not keep that the former margin rule "
          f"(margin {', '.join(map(str, margins))}, against the best of the moment) would have kept, and its near "
          f"misses (re-run on more seeds, then discarded), each re-run on seeds {HELD_UP_SEEDS}")
    print(f"{'method':<7} {'rep':>3} {'exp':>3} {'best then':>9} {'seed 0':>9} {'seed 1':>9} {'fresh':>9} "
          f"{'gain':>8} {'held up':<7} {'margin rule':<11} description")
    for m in missed:
        fresh = [m.runs.get(s) for s in HELD_UP_SEEDS]
        mean = statistics.fmean(fresh) if None not in fresh else None
        cells = [f"{v:.6f}" if v is not None else "-" for v in (m.runs.get(1), mean)]
        gain = f"{gate.improvement(m.best, mean):+.4f}" if mean is not None else "-"
        print(f"{m.search.method:<7} {m.search.repeat:>3} {m.number:>3} {m.best:9.6f} "
              f"{m.runs[0]:9.6f} {cells[0]:>9} {cells[1]:>9} {gain:>8} {str(m.held_up):<7} "
              f"{'keep' if m.margin_keeps else 'discard':<11} {one_line(m.rows[0].description, 60)}")
    candidates = sum(1 for ss in by_method.values() for s in ss for rows in s.experiments if rows[0].status != "invalid")
    by_margin = [m for m in missed if m.margin_keeps]
    near = [m for m in missed if not m.margin_keeps]
    print(f"of {candidates} candidates: the margin rule would have kept {len(by_margin)} the means rule did not, "
          f"{sum(m.held_up is True for m in by_margin)} of them held up (their mean on seeds {HELD_UP_SEEDS} beats "
          f"the best of the moment); near misses of both rules: {len(near)}, {sum(m.held_up is True for m in near)} "
          f"held up; the means rule kept {extra_keeps} the margin rule would not have")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each method (R); repeat r: proposer seed r")
    parser.add_argument("--first-repeat", type=int, default=0,
                        help="start at this repeat (and proposer seed): more repeats of a bench run before, whose "
                             "TSVs --from-tsv then reads together")
    parser.add_argument("--experiments", type=int, default=16, help="proposals per run (N)")
    parser.add_argument("--budget-tokens", type=int, default=0, help="a token budget instead of FLOPs")
    parser.add_argument("--budget-flops", type=float, default=0.0,
                        help="training FLOPs per run (default: the cpu profile's 1.25e12, 65,536 tokens of the baseline)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--threshold", type=float, default=0.02, help="the improvement over the baseline to reach, "
                        "in the metric")
    parser.add_argument("--task", default=tasks.DEFAULT, help="the workload: gpt (default) or circle-packing")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(OUT), help="the chart (PNG); the rows go beside it as .tsv")
    parser.add_argument("--no-recheck", action="store_true", help="skip re-running what the margin rule would keep")
    parser.add_argument("--from-tsv", nargs="+", default=None,
                        help="run nothing but the re-checks: the figures and chart of the TSVs this bench wrote")
    args = parser.parse_args()
    args.no_recheck = args.no_recheck or args.task != tasks.DEFAULT  # re-checks re-run seeds: none to re-draw
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not (data_dir / "cpu" / "manifest.json").exists():
        prepare(source="embedded", profile="cpu", data_dir=data_dir, progress=False)
    if args.from_tsv:  # the rows of an earlier bench; the re-checks run again, on candidates rebuilt
        by_method, missed, extra_keeps = {}, [], 0
        for path in args.from_tsv:
            for method, searches in read_rows(Path(path), tasks.load(args.task).metric.lower_is_better).items():
                by_method.setdefault(method, []).extend(searches)
        args.repeats = max(len(ss) for ss in by_method.values())
        for found in (s for ss in by_method.values() for s in ss if not args.no_recheck and len(s.baseline) > 1):
            with tempfile.TemporaryDirectory(prefix=f"bench_search_{found.method}_") as temporary:
                path, rebuilt = rebuild(found, Path(temporary))
                more, extra = recheck(rebuilt, path, args, data_dir)
                missed, extra_keeps = missed + [dataclasses.replace(m, search=found) for m in more], extra_keeps + extra
        report(by_method, missed, extra_keeps, args, sum(s.wall_s for ss in by_method.values() for s in ss))
        chart(Path(args.out), by_method, args)
        print(f"\nchart: {args.out} (from {', '.join(args.from_tsv)})")
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}: choose from {', '.join(METHODS)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tsv = out.with_suffix(".tsv")
    by_method: dict[str, list[Search]] = {m: [] for m in methods}
    missed: list[Missed] = []
    extra_keeps = 0
    started = time.perf_counter()
    try:
        for repeat in range(args.first_repeat, args.first_repeat + args.repeats):  # repeat-major: a bench cut short has about as many repeats of each
            for method in methods:
                with tempfile.TemporaryDirectory(prefix=f"bench_search_{method}_") as temporary:
                    found = search(method, repeat, Path(temporary), args, data_dir)
                    by_method[method].append(found)
                    print(f"{method} repeat {repeat}: {len(found.experiments)} experiments in {found.wall_s / 60:.1f} "
                          f"min, best {' '.join(f'{b:.4f}' for b in found.curve())}, statuses "
                          f"{' '.join(found.statuses())}{'; ' + found.error if found.error else ''}", flush=True)
                    if not args.no_recheck and len(found.baseline) > 1:
                        more, extra = recheck(found, Path(temporary) / "project", args, data_dir)
                        missed += more
                        extra_keeps += extra
                write_rows(tsv, [s for ss in by_method.values() for s in ss])
    except KeyboardInterrupt:
        print("interrupted: the figures below are of the searches that finished", flush=True)
    wall = time.perf_counter() - started
    report(by_method, missed, extra_keeps, args, wall)
    chart(out, by_method, args)
    print(f"\nchart: {out}\nrows: {tsv}")


if __name__ == "__main__":
    main()
