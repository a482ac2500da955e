"""The run's report, reading results.tsv only: the progress chart, the counts, baseline -> best, kept gains.

`autoresearch report` prints it, the controller notebook and the dashboard show it. Everything takes the
DataFrame of `results.load`, so it works on a finished run, on a live one, and on the reference project's
five-column results.tsv (where the first row is the baseline, the running best is the running minimum of the
kept rows, and there is no noise band).

Rows are runs, not ideas: the baseline's seeds are runs of the unmodified notebook (they are written as
"keep" but are no decision), and a borderline candidate is re-run on more seeds ("confirm" rows). So the
counts are of candidates, with the baseline runs counted apart; every run is still drawn on the chart.
A "noop" candidate (its result bit-identical to its parent's: nothing was measured) is neither a keep nor a
discard and is counted apart too, and so is a "stale" one (lanes: it beat the best, but the best had moved
on from its parent while it ran): its change, re-applied onto the new best, runs again as an experiment of
kind "rebase", which is decided and counted as a candidate of its own. Rows may say `sandbox` "none" (the
experiment ran without its jail): the report warns about them, and so about rows `scored` "kernel" (a task
whose metric the experiment reported itself, not a scorer outside it). The `val_bpb` column holds the task's
metric (`metric` and `direction` say which, `metric_of`): for a higher-is-better one the running best is the
running maximum, gains are increases, and the chart keeps better upwards as always. Files written before
those marks existed read the same as before (val_bpb, lower is better).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator

from autoresearch_kernel import gate
from autoresearch_kernel.journal import results
from autoresearch_kernel.tasks import Metric

BASELINE = "baseline"
CONFIRM = "confirm"
NOOP = "noop"
STALE = "stale"
OVER_BUDGET = "over-budget"  # trained past its budget, as the loop measured it (integrity/budget.py)
REBASE = "rebase"
PAIR = "pair"  # the best run again on a seed it lacked, for the paired gate: no idea, no decision
# settle.py's words in a stale row's `failure` when its change was re-applied as another experiment
REBASED_AS = re.compile(r"re-applied there as experiment (\d+)")
UNSANDBOXED = "none"  # the `sandbox` column's value for an experiment that ran without the jail
KERNEL_SCORED = "kernel"  # the `scored` column's value for a metric the experiment reported itself


def metric_of(frame: pd.DataFrame) -> Metric:
    """The metric the `val_bpb` column holds, from the rows' `metric` and `direction` (val_bpb, lower is better
    for files written before tasks, and the reference's)."""
    for column in ("metric", "direction"):
        if column not in frame:
            return Metric()
    named = frame[frame["metric"].astype(str) != ""]
    if not len(named):
        return Metric()
    last = named.iloc[-1]
    return Metric(str(last["metric"]), str(last["direction"]) != "higher")


def plural(count: int, noun: str) -> str:
    """`1 baseline run`, `2 baseline runs`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass(frozen=True)
class Summary:
    """The counts and the headline numbers of one run."""

    baseline_runs: int  # runs of the unmodified notebook (seeds), crashed ones included
    baseline_noise: gate.Noise | None  # their mean and spread, over the runs that produced a metric
    experiments: int  # candidates tried: a candidate re-run to confirm it counts once
    keep: int
    discard: int
    crash: int
    noop: int  # candidates whose result was bit-identical to their parent's: no measurement
    stale: int  # candidates that beat a best which had moved on: decided again as a rebase, or not applicable
    unsandboxed: int  # runs (rows) that ran without the sandbox
    kernel_scored: int  # runs whose metric the experiment's kernel reported itself (scored "kernel")
    runs: int  # rows in the file: every executed notebook
    keep_rate: float | None  # keeps / candidates decided on a measurement (noops, stales left out); None: none
    baseline: float | None  # the first best (the baseline's mean in our files, its first row in the reference's)
    best: float | None
    change_percent: float | None  # (best - baseline) / baseline * 100: negative is better for val_bpb
    over_budget: int = 0  # candidates that trained past their budget: never kept
    suspect: int = 0  # scored below the profile's floor (a leak or a cheat): never kept
    metric: Metric = Metric()  # what baseline and best are values of

    def baseline_phrase(self) -> str:
        """`2 baseline runs (mean 1.683143 ± 0.004500)`; "" when there is no baseline run."""
        if not self.baseline_runs:
            return ""
        noise = self.baseline_noise
        if noise is None:
            values = "crashed"
        else:
            values = f"{noise.mean:.6f}" if noise.runs == 1 else f"mean {noise.mean:.6f} ± {noise.std:.6f}"
            if noise.runs < self.baseline_runs:
                values += f"; {self.baseline_runs - noise.runs} crashed"
        return f"{plural(self.baseline_runs, 'baseline run')} ({values})"

    def counts_phrase(self) -> str:
        """`3 experiments: keep 0, discard 3, crash 0, keep rate 0%` (noops and stales named only when there are
        some)."""
        noop = f", noop {self.noop}" if self.noop else ""
        stale = f", stale {self.stale}" if self.stale else ""
        stale += f", over-budget {self.over_budget}" if self.over_budget else ""
        stale += f", SUSPECT {self.suspect}" if self.suspect else ""
        rate = f", keep rate {self.keep_rate:.0%}" if self.keep_rate is not None else ""
        return (f"{plural(self.experiments, 'experiment')}: keep {self.keep}, discard {self.discard}, "
                f"crash {self.crash}{noop}{stale}{rate}")

    def lines(self) -> list[str]:
        first = ", ".join(part for part in (self.baseline_phrase(), self.counts_phrase()) if part)
        out = [first]
        if self.baseline is not None and self.best is not None:
            named = "" if self.metric == Metric() else f"{self.metric.phrase()}: "
            out.append(f"{named}baseline {self.baseline:.6f} -> best {self.best:.6f} ({self.change_percent:+.2f}%)")
        if self.unsandboxed:
            out.append(self.sandbox_warning())
        if self.kernel_scored:
            out.append(f"note: {self.kernel_scored} of {plural(self.runs, 'run')} were scored by the experiment's own "
                       f"kernel (scored {KERNEL_SCORED!r}), not by a scorer outside it: the task trusts its notebook")
        return out

    def sandbox_warning(self) -> str:
        """One line when some runs ran without the jail, else ""."""
        if not self.unsandboxed:
            return ""
        return (f"warning: {self.unsandboxed} of {plural(self.runs, 'run')} ran without the sandbox "
                f"(sandbox {UNSANDBOXED!r}): nothing kept those experiments from the machine or the network")


def _numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(float("nan"), frame.index)


def kinds(frame: pd.DataFrame) -> pd.Series:
    """Each row's kind. The reference's file has no such column: its first row is the baseline."""
    if "kind" in frame:
        return frame["kind"].astype(str)
    named = pd.Series("candidate", index=frame.index, dtype=object)
    if len(frame):
        named.iloc[0] = BASELINE
    return named


def outcome(status: str, kind: str) -> str:
    """A row's status as a reader should take it: a baseline seed is written "keep" (the reference's three
    statuses) but is no decision, so it reads "baseline" (the best's run for a pair reads "pair"); a crashed
    seed still reads "crash"."""
    return kind if kind in (BASELINE, PAIR) and status != "crash" else status


def rebased_as(failure: str) -> int | None:
    """The experiment that re-applied a stale row's change, from the row's `failure`; None when it was not."""
    match = REBASED_AS.search(failure)
    return int(match.group(1)) if match else None


def baseline_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs of the unmodified notebook (its seeds)."""
    return frame[kinds(frame) == BASELINE]


def candidate_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per idea tried: not the baseline's seeds, not a candidate's confirmation re-runs."""
    return frame[~kinds(frame).isin([BASELINE, CONFIRM, PAIR])]


def unsandboxed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose experiment ran without the jail; none in a file written before the `sandbox` column."""
    if "sandbox" not in frame:
        return frame.iloc[:0]
    return frame[frame["sandbox"].astype(str) == UNSANDBOXED]


def running_best(frame: pd.DataFrame) -> pd.Series:
    """The best value after each row: the gate's `best` column, else the running minimum (maximum, for a
    higher-is-better metric) of kept rows."""
    best = _numbers(frame, "best")
    if best.notna().any():
        return best.ffill()
    kept = _numbers(frame, "val_bpb").where(frame["status"] == "keep")
    return (kept.cummin() if metric_of(frame).lower_is_better else kept.cummax()).ffill()


def summary(frame: pd.DataFrame) -> Summary:
    seeds = baseline_rows(frame)
    measured = _numbers(seeds, "val_bpb").where(seeds["status"] != "crash")
    ideas = candidate_rows(frame)
    counts = ideas["status"].value_counts() if len(ideas) else pd.Series(dtype=int)
    keep, discard, crash = (int(counts.get(status, 0)) for status in ("keep", "discard", "crash"))
    over_budget = int(counts.get(OVER_BUDGET, 0))
    decided = keep + discard + crash + over_budget
    best = running_best(frame).dropna()
    baseline, last = (float(best.iloc[0]), float(best.iloc[-1])) if len(best) else (None, None)
    return Summary(
        baseline_runs=len(seeds), baseline_noise=gate.noise_floor(list(measured)),
        experiments=len(ideas), keep=keep, discard=discard, crash=crash, noop=int(counts.get(NOOP, 0)),
        stale=int(counts.get(STALE, 0)),
        unsandboxed=len(unsandboxed_rows(frame)), runs=len(frame),
        kernel_scored=int((frame["scored"].astype(str) == KERNEL_SCORED).sum()) if "scored" in frame else 0,
        metric=metric_of(frame),
        keep_rate=keep / decided if decided else None,
        baseline=baseline, best=last,
        change_percent=(last - baseline) / baseline * 100 if baseline else None,
        over_budget=over_budget,
        suspect=int(counts.get("suspect", 0)),
    )


def kept_changes(frame: pd.DataFrame) -> pd.DataFrame:
    """Kept ideas ranked by their gain: how much each improved the running best (in the metric, and percent)."""
    lower = metric_of(frame).lower_is_better
    best = running_best(frame)
    before = best.shift(1)
    kept = candidate_rows(frame)
    kept = kept[kept["status"] == "keep"]
    table = pd.DataFrame({
        "experiment": _numbers(kept, "experiment").astype("Int64") if "experiment" in kept else kept.index + 1,
        "commit": kept["commit"],
        "description": kept["description"],
        "val_bpb": best.loc[kept.index],
        "gain": gate.improvement(before, best, lower).loc[kept.index],
    })
    table["gain_percent"] = table["gain"] / before.loc[kept.index] * 100
    return table.sort_values("gain", ascending=False).reset_index(drop=True)


def noise_band(frame: pd.DataFrame, ax) -> None:
    """Shade the gate's margin beyond the running best (below it for a lower-is-better metric, above it for a
    higher-is-better one): a candidate must land past the band to be kept."""
    best, margin = _numbers(frame, "best").ffill(), _numbers(frame, "margin").fillna(0.0)
    shown = best.notna() & (margin > 0)
    if not shown.any():
        return
    x = _numbers(frame, "experiment")[shown]
    bar = best - margin if metric_of(frame).lower_is_better else best + margin
    (edges, high), (_, low) = _to_next_run(x, best[shown]), _to_next_run(x, bar[shown])
    ax.fill_between(edges, low, high, step="post", color="tab:blue", alpha=0.15, linewidth=0,
                    label="gate margin (noise)")


def _to_next_run(x: pd.Series, y: pd.Series) -> tuple[pd.Series, pd.Series]:
    """A step line's points with its last value carried one run further: a best set by the last row (the
    last baseline seed, say) would otherwise draw no line at all."""
    if not len(x) or pd.isna(x.iloc[-1]):
        return x, y
    return (pd.concat([x, pd.Series([x.iloc[-1] + 1])], ignore_index=True),
            pd.concat([y, pd.Series([y.iloc[-1]])], ignore_index=True))


def chart_title(counts: Summary) -> str:
    """`2 baseline runs, 3 experiments: 0 kept, 0 crashed` (`, 1 stale` when some were)."""
    seeds = f"{plural(counts.baseline_runs, 'baseline run')}, " if counts.baseline_runs else ""
    stale = f", {counts.stale} stale" if counts.stale else ""
    return f"{seeds}{plural(counts.experiments, 'experiment')}: {counts.keep} kept, {counts.crash} crashed{stale}"


def progress_chart(frame: pd.DataFrame, ax=None, band: bool = False):
    """The reference's chart: discarded grey dots, kept green dots labelled, the running best as a step line;
    the baseline's seeds as blue diamonds of their own, noops as grey crosses; with lanes, stale candidates as
    open orange triangles and kept rebases (a stale change re-applied onto the new best) as green dots ringed
    in orange, so that a reader sees which keeps came through re-applying.

    Crash rows (val_bpb 0.0) are left out. With `band`, the gate's noise margin is shaded under the best.
    Draws on `ax` (a new figure when None) and returns the axes.
    """
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: safe from any thread, no global state

        ax = Figure(figsize=(11, 4.5), dpi=100).add_subplot(1, 1, 1)
    x = _numbers(frame, "experiment")
    value = _numbers(frame, "val_bpb")
    status = frame["status"] if len(frame) else pd.Series(dtype=str)
    drawn = status.isin(["keep", "discard", NOOP, STALE]) & (value > 0) & (kinds(frame) != PAIR)
    seed = drawn & (kinds(frame) == BASELINE)
    discarded, kept, noop, stale = (drawn & ~seed & (status == name) for name in ("discard", "keep", NOOP, STALE))
    rebased = kept & (kinds(frame) == REBASE)
    for shown, style in [
        (discarded, dict(s=14, color="#bbbbbb", label="discarded", zorder=2)),
        (noop, dict(s=18, marker="x", color="#999999", label="no-op (same as parent)", zorder=2)),
        (stale, dict(s=34, marker="^", facecolors="none", edgecolors="tab:orange", linewidth=1.2,
                     label="stale (best moved on)", zorder=3)),
        (seed, dict(s=30, marker="D", color="tab:blue", edgecolor="black", linewidth=0.5, label="baseline seeds",
                    zorder=3)),
        (kept & ~rebased, dict(s=30, color="#2ca02c", edgecolor="black", linewidth=0.5, label="kept", zorder=3)),
        (rebased, dict(s=42, color="#2ca02c", edgecolor="tab:orange", linewidth=1.5, label="kept after re-applying",
                       zorder=3)),
    ]:
        if shown.any():  # an empty series would still take a line in the legend
            ax.scatter(x[shown], value[shown], **style)
    for index in candidate_rows(frame[kept]).index:
        ax.annotate(str(frame.at[index, "description"])[:40], (x[index], value[index]), xytext=(4, 6),
                    textcoords="offset points", fontsize=7, rotation=30, color="#1b5e20")
    best = running_best(frame)
    metric = metric_of(frame)
    if best.notna().any():
        ax.step(*_to_next_run(x, best), where="post", color="#2ca02c", linewidth=1.2, label="running best")
        ax.set_ylim(*_view(value, best, _numbers(frame, "margin").fillna(0.0), drawn, seed, band, metric))
    if band:
        noise_band(frame, ax)
    if x.notna().any():  # room on the right for the last kept point's label
        ax.set_xlim(float(x.min()) - 0.5, float(x.max()) + max(1.0, 0.08 * float(x.max() - x.min())))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # runs are counted, never fractional
    ax.set_xlabel("run")
    ax.set_ylabel(metric.phrase())
    ax.set_title(chart_title(summary(frame)))
    ax.grid(alpha=0.3)
    if len(frame):
        ax.legend(loc="upper right", fontsize="small")
    return ax


def _view(value, best, margin, drawn, seed, band: bool, metric: Metric) -> tuple[float, float]:
    """The y range: from the baseline (its worst seed, else the first best) to the best, with what a candidate
    must beat in view; far-off discards beyond the baseline are cut off, since they would flatten the climb.
    Values keep their axis (higher values up), whichever way is better."""
    sign = 1.0 if metric.lower_is_better else -1.0  # in sign * value, lower is better
    worst = float(max(sign * best.dropna().iloc[0], (sign * value[seed]).max() if seed.any() else float("-inf")))
    bar = sign * best - margin  # what a candidate must beat
    good = float(min((sign * value[drawn]).min(), bar.min() if band else (sign * best).min()))
    span = max(worst - good, abs(worst) * 0.005, 1e-6)
    ends = (good - 0.15 * span, worst + 0.6 * span)  # the baseline's side gets the room
    return (ends[0], ends[1]) if sign > 0 else (-ends[1], -ends[0])


def write_report(results_tsv: str | os.PathLike, png: str | os.PathLike | None = None) -> tuple[Path, list[str]]:
    """progress.png next to results.tsv (or at `png`), and the report's lines: summary, then ranked keeps."""
    results_tsv = Path(results_tsv)
    frame = results.load(results_tsv)
    png = Path(png) if png else results_tsv.with_name("progress.png")
    ax = progress_chart(frame, band=True)
    ax.figure.tight_layout()
    ax.figure.savefig(png)
    lines = summary(frame).lines()
    ranked = kept_changes(frame)
    if len(ranked):
        lines.append("kept changes, ranked by gain:")
        lines += [f"  {row.gain:+.6f} ({row.gain_percent:+.2f}%)  {row.commit}  {row.description}"
                  for row in ranked.itertuples()]
    return png, lines
