"""Searchers on the same compute: random search, mutate, Optuna's TPE and Optuna's CMA-ES, each R times.

What it runs: the shipped train_template.ipynb through the loop itself (jail, scorer, gate, results.tsv), on
the cpu profile with a FLOP budget (the profile's 1.25e12 by default: the baseline's 65,536 tokens, a larger model
fewer), so a run's val_bpb depends only on the notebook and the seed. Each
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

Every kept change, re-checked (unless --no-recheck): the gate decides with the paired rule (gate.decide_paired:
a candidate's run on seed s against the best's run on seed s), which looks at seeds up to its last confirmation.
Each change it kept, and the best it beat (the best of that moment), are re-run through the loop on two seeds no
rule looked at (HELD_UP_SEEDS, past the paired rule's last look). The report gives the change's paired gain on
those seeds, seed by seed, and the compute it used against the best's, from the rows (training FLOPs counted by
the harness, tokens, the scorer's forward FLOPs per token, the jail's CPU seconds). Near misses (re-run on more
seeds, then discarded) are listed with their paired gains, not re-run. The re-checks' rows go to a TSV beside
the chart (`search-recheck.tsv`). --from-tsv runs nothing but the re-checks, on candidates rebuilt from their
descriptions, and prints the figures of the rows an earlier bench wrote (one cut short, say).

    python bench/bench_search.py [--repeats 1] [--first-repeat 0] [--experiments 16] [--budget-flops 1.25e12 | --budget-tokens N]
                                 [--methods random,mutate,tpe,cmaes] [--threshold 0.02] [--data-dir DIR]
                                 [--out bench/search.png] [--no-recheck] [--from-tsv TSV ...]

Why 16 experiments: Optuna's TPE draws its first 10 trials at random (n_startup_trials), and the kept notebook
is the first trial of each region, so with the same seed TPE proposes exactly what random search proposes for
its first 9 experiments; fewer experiments compare random search with itself.
Time, measured under the yardstick (FLOP budget, paired gate, 2 cores): random search's 16 experiments took
38.0 minutes and its two re-checks 9 more (its proposals drift to small models that train on 11 to 14 times
the baseline's tokens, 80 to 130 s a run; the ones past the budget's ceiling are stopped at about 180 CPU
seconds); mutate's borderline changes each earn up to 8 paired runs (and the best its runs on those seeds),
about 30 s each, so a repeat of mutate is longer than an hour. Plan an evening per repeat of all four methods.
`--repeats 1 --experiments 2 --budget-flops 1.6e11` (8,192 tokens of the baseline) checks the script in about
five minutes per method.

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

from bench_gate import TIMEOUT_S, project  # noqa: E402

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
        elif event.rows and event.rows[0].kind not in ("baseline", "pair"):  # pair: the best's run, no experiment
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


# -- every kept change, re-checked on fresh seeds ---------------------------------------------------------
def run_on_seeds(repo_path: Path, commit: str, seeds: tuple[int, ...], tag: str, args, data_dir: Path) -> dict[int, Row]:
    """The rows of a commit's runs on `seeds`, through the loop: a new tag whose baseline is that commit."""
    repo = git.Repo(repo_path)
    repo.git.checkout("--detach", commit)
    config = LoopConfig(repo=repo_path, tag=tag, data_dir=str(data_dir), device="cpu", budget_tokens=args.budget_tokens,
                        budget_flops=args.budget_flops,
                        baseline_seeds=seeds, max_experiments=0, timeout_s=TIMEOUT_S)
    try:
        with Loop(config) as loop:
            if loop.run() == "interrupted":
                raise KeyboardInterrupt
            return {r.seed: r for r in loop.records.rows if r.val_bpb is not None}
    except AutoresearchError as error:  # a crash on one of the seeds
        print(f"  re-check of {commit[:7]} on seeds {seeds}: {error}", file=sys.stderr)
        return {}


def _mean(rows: list[Row], name: str) -> float | None:
    values = [getattr(r, name) for r in rows if getattr(r, name) is not None]
    return statistics.fmean(values) if values else None


@dataclass
class Kept:
    """A change the gate kept, and the best it beat (the best of its moment), each re-run on HELD_UP_SEEDS."""

    search: Search
    number: int  # the experiment, 1-based
    rows: tuple[Row, ...]  # the change's runs in the search (the first and its confirmations)
    best: float  # the gate's best when it was decided
    best_rows: list[Row]  # the best's runs in the search: the baseline's, or its own as a candidate
    fresh: dict[int, Row]  # seed -> the change's run on a held-up seed
    best_fresh: dict[int, Row]  # seed -> the best's run on that seed

    def fresh_pairs(self) -> list[float]:
        """The change's gain over the best on each held-up seed where both ran (positive: the change is better)."""
        return [gate.improvement(self.best_fresh[s].val_bpb, self.fresh[s].val_bpb)
                for s in HELD_UP_SEEDS if s in self.fresh and s in self.best_fresh]

    @property
    def fresh_gain(self) -> float | None:
        pairs = self.fresh_pairs()
        return statistics.fmean(pairs) if len(pairs) == len(HELD_UP_SEEDS) else None

    @property
    def held_up(self) -> bool | None:
        return None if self.fresh_gain is None else self.fresh_gain > 0

    def compute(self, name: str) -> tuple[float | None, float | None]:
        """A column of the change's rows and of the best's (search and re-check), each averaged over its runs:
        flops, tokens_m, forward_flops_per_token, cpu_seconds."""
        return (_mean(list(self.rows) + list(self.fresh.values()), name),
                _mean(self.best_rows + list(self.best_fresh.values()), name))


def recheck(found: Search, repo_path: Path, args, data_dir: Path) -> list[Kept]:
    """Every change one search kept, and the best it beat, re-run on HELD_UP_SEEDS: seeds no rule looked at."""
    best_rows = [r for r in found.rows if r.kind == "baseline" and r.val_bpb is not None]
    best_commit = best_rows[0].commit
    fresh_of: dict[str, dict[int, Row]] = {}  # commit -> its runs on the held-up seeds (a best may beat several)
    curve, kept = found.curve(), []
    for number, rows in enumerate(found.experiments, 1):
        if rows[0].status != "keep":
            continue
        tag = f"check-{found.method}-{found.repeat}-{number}"
        print(f"  re-check: {found.method} repeat {found.repeat} experiment {number} ({rows[0].description}) and "
              f"the best it beat ({best_commit[:7]}) on seeds {HELD_UP_SEEDS}", flush=True)
        if best_commit not in fresh_of:
            fresh_of[best_commit] = run_on_seeds(repo_path, best_commit, HELD_UP_SEEDS, f"{tag}-best", args, data_dir)
        fresh_of[rows[0].commit] = run_on_seeds(repo_path, rows[0].commit, HELD_UP_SEEDS, tag, args, data_dir)
        kept.append(Kept(found, number, rows, curve[number - 1], best_rows, fresh_of[rows[0].commit],
                         fresh_of[best_commit]))
        print(f"  paired gains on seeds {HELD_UP_SEEDS}: {kept[-1].fresh_pairs()}: held up {kept[-1].held_up}",
              flush=True)
        best_commit, best_rows = rows[0].commit, list(rows)
    return kept


def safe_recheck(found: Search, repo_path: Path, args, data_dir: Path) -> list[Kept]:
    """recheck, whose failure (a bug) costs only the re-checks: the rows are saved, --from-tsv runs them again."""
    try:
        return recheck(found, repo_path, args, data_dir)
    except Exception:
        traceback.print_exc()
        print(f"!! the re-checks of {found.method} repeat {found.repeat} failed: --from-tsv runs them again", flush=True)
        return []


def near_misses(found: Search) -> list[tuple[int, tuple[Row, ...]]]:
    """The candidates the gate ran on more seeds (promising after one run), then discarded: not re-run."""
    return [(n, rows) for n, rows in enumerate(found.experiments, 1)
            if rows[0].status == "discard" and any(r.kind == "confirm" for r in rows)]


def rebuild(found: Search, folder: Path) -> tuple[Path, Search]:
    """For --from-tsv: a repository with each candidate of a search committed again, rebuilt from its description
    (`NAME old -> new, ...`, as mutate and optuna write them) on the notebook kept at its moment."""
    path = project(folder)
    repo, sandbox = git.Repo(path), path / SANDBOX
    kept, baseline = nbformat.read(sandbox, as_version=4), repo.head.commit.hexsha
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
    rows = [dataclasses.replace(r, commit=baseline) if r.kind == "baseline" else r for r in found.rows]
    return path, dataclasses.replace(found, rows=rows, experiments=experiments)


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


def write_rechecks(path: Path, kept: list[Kept]) -> None:
    """The re-checks' runs: for each kept change, its runs and the best's on the held-up seeds."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(("method", "repeat", "kept_experiment", "role", *COLUMNS))
        for k in kept:
            for role, runs in (("best", k.best_fresh), ("change", k.fresh)):
                for row in runs.values():
                    values = ("" if v is None else v for v in dataclasses.astuple(row))
                    writer.writerow((k.search.method, k.search.repeat, k.number, role, *values))


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
            if row.kind in ("baseline", "pair"):
                continue
            if row.kind == "confirm":
                found.experiments[-1] += (row,)
            else:
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


def report(by_method: dict[str, list[Search]], args, wall: float) -> None:
    methods = list(by_method)
    metric = tasks.load(args.task).metric
    print(f"\n{workload(args)}; {args.repeats} repeats x {args.experiments} experiments per method; "
          f"{wall / 60:.1f} min in all")
    found = next((s for ss in by_method.values() for s in ss if len(s.baseline) > 1), None)
    if found is not None:
        margin = [r.margin for r in found.rows if r.kind == "baseline"][-1]
        print(f"baseline (the same in every repeat: the budget is deterministic): "
              f"{', '.join(f'{v:.6f}' for v in found.baseline)}; mean {statistics.fmean(found.baseline):.6f}, sd "
              f"{statistics.stdev(found.baseline):.6f}; the gate's first margin {margin:.6f}")
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


def report_rechecks(by_method: dict[str, list[Search]], kept: list[Kept]) -> None:
    """Every kept change: its paired gain in the search and on the held-up seeds, and the compute it used."""
    print(f"\nevery kept change, re-run with the best of its moment on seeds {HELD_UP_SEEDS}, which no rule looked "
          "at (gain: the best's val_bpb minus the change's, seed by seed; compute: mean over the runs, the change's "
          "over the best's)")
    print(f"{'method':<7} {'rep':>3} {'exp':>3} {'best then':>9} {'runs':>4} {'search gain':>11} "
          f"{'fresh gains':>17} {'held up':<7} {'train FLOPs':>11} {'tokens M':>13} {'fwd FLOPs/tok':>17} "
          f"{'CPU s':>11}  description")
    for k in kept:
        searched = [r.paired_gain for r in k.rows if r.paired_gain is not None]
        fresh = " ".join(f"{g:+.4f}" for g in k.fresh_pairs()) or "-"
        cells = []
        for name, digits in (("flops", ".3g"), ("tokens_m", ".4f"), ("forward_flops_per_token", ".4g"),
                             ("cpu_seconds", ".0f")):
            mine, best = k.compute(name)
            cells.append("-" if mine is None or best is None else
                         f"{mine:{digits}} x{mine / best:.2f}" if best else f"{mine:{digits}}")
        print(f"{k.search.method:<7} {k.search.repeat:>3} {k.number:>3} {k.best:9.6f} {len(k.rows):>4} "
              f"{f'{statistics.fmean(searched):+.4f}' if searched else '-':>11} {fresh:>17} {str(k.held_up):<7} "
              f"{cells[0]:>11} {cells[1]:>13} {cells[2]:>17} {cells[3]:>11}  {one_line(k.rows[0].description, 90)}")
    candidates = sum(1 for ss in by_method.values() for s in ss for rows in s.experiments if rows[0].status != "invalid")
    print(f"of {candidates} candidates the gate kept {len(kept)}; {sum(k.held_up is True for k in kept)} held up "
          f"(their mean paired gain on seeds {HELD_UP_SEEDS} is positive)")
    misses = [(s, n, rows) for ss in by_method.values() for s in ss for n, rows in near_misses(s)]
    print(f"near misses (re-run on more seeds, then discarded; not re-checked): {len(misses)}")
    for s, n, rows in misses:
        gains = " ".join(f"{r.paired_gain:+.4f}" for r in rows if r.paired_gain is not None)
        print(f"  {s.method} repeat {s.repeat} experiment {n}: paired gains {gains}; {one_line(rows[0].description, 90)}")


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
    parser.add_argument("--no-recheck", action="store_true", help="skip re-running the kept changes on fresh seeds")
    parser.add_argument("--from-tsv", nargs="+", default=None,
                        help="run nothing but the re-checks: the figures and chart of the TSVs this bench wrote")
    args = parser.parse_args()
    args.no_recheck = args.no_recheck or args.task != tasks.DEFAULT  # re-checks re-run seeds: none to re-draw
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not (data_dir / "cpu" / "manifest.json").exists():
        prepare(source="embedded", profile="cpu", data_dir=data_dir, progress=False)
    if args.from_tsv:  # the rows of an earlier bench; the re-checks run again, on candidates rebuilt
        by_method, kept = {}, []
        for path in args.from_tsv:
            for method, searches in read_rows(Path(path), tasks.load(args.task).metric.lower_is_better).items():
                by_method.setdefault(method, []).extend(searches)
        args.repeats = max(len(ss) for ss in by_method.values())
        for found in (s for ss in by_method.values() for s in ss if not args.no_recheck and len(s.baseline) > 1):
            with tempfile.TemporaryDirectory(prefix=f"bench_search_{found.method}_") as temporary:
                path, rebuilt = rebuild(found, Path(temporary))
                kept += [dataclasses.replace(k, search=found) for k in recheck(rebuilt, path, args, data_dir)]
        report(by_method, args, sum(s.wall_s for ss in by_method.values() for s in ss))
        if not args.no_recheck:
            report_rechecks(by_method, kept)
            write_rechecks(Path(args.out).with_name(Path(args.out).stem + "-recheck.tsv"), kept)
        chart(Path(args.out), by_method, args)
        print(f"\nchart: {args.out} (from {', '.join(args.from_tsv)})")
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}: choose from {', '.join(METHODS)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tsv, rechecks = out.with_suffix(".tsv"), out.with_name(out.stem + "-recheck.tsv")
    by_method: dict[str, list[Search]] = {m: [] for m in methods}
    kept: list[Kept] = []
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
                        kept += safe_recheck(found, Path(temporary) / "project", args, data_dir)
                write_rows(tsv, [s for ss in by_method.values() for s in ss])
                write_rechecks(rechecks, kept)
    except KeyboardInterrupt:
        print("interrupted: the figures below are of the searches that finished", flush=True)
    wall = time.perf_counter() - started
    report(by_method, args, wall)
    if not args.no_recheck:
        report_rechecks(by_method, kept)
    chart(out, by_method, args)
    print(f"\nchart: {out}\nrows: {tsv}; the re-checks' rows: {rechecks}")


if __name__ == "__main__":
    main()
