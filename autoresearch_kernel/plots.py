"""The reference's analysis, reading results.tsv only: the progress chart, counts, baseline -> best, kept gains.

Everything takes the DataFrame of `results.load`, so it works on a finished run, on a live one, and on the
reference project's five-column results.tsv (where the running best is the running minimum of the kept
rows, and there is no noise band).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.ticker import MaxNLocator

from autoresearch_kernel import results


@dataclass(frozen=True)
class Summary:
    """The counts and the headline numbers of one run."""

    experiments: int
    keep: int
    discard: int
    crash: int
    keep_rate: float | None  # keeps / decided experiments, baseline rows excluded; None when none
    baseline: float | None  # the first best (the baseline's mean in our files, its first row in the reference's)
    best: float | None
    change_percent: float | None  # (best - baseline) / baseline * 100: negative is better

    def lines(self) -> list[str]:
        out = [f"{self.experiments} experiments: keep {self.keep}, discard {self.discard}, crash {self.crash}"
               + (f", keep rate {self.keep_rate:.0%}" if self.keep_rate is not None else "")]
        if self.baseline is not None and self.best is not None:
            out.append(f"baseline {self.baseline:.6f} -> best {self.best:.6f} ({self.change_percent:+.2f}%)")
        return out


def _numbers(frame: pd.DataFrame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column], errors="coerce") if column in frame else pd.Series(float("nan"), frame.index)


def _candidates(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that are experiments on an idea (not the baseline's seeds, not confirmation re-runs)."""
    if "kind" not in frame:
        return frame.iloc[1:]  # the reference's first row is its baseline
    return frame[frame["kind"].isin(["candidate", "fix"])]


def running_best(frame: pd.DataFrame) -> pd.Series:
    """The best val_bpb after each row: the gate's `best` column, else the running minimum of kept rows."""
    best = _numbers(frame, "best")
    if best.notna().any():
        return best.ffill()
    kept = _numbers(frame, "val_bpb").where(frame["status"] == "keep")
    return kept.cummin().ffill()


def summary(frame: pd.DataFrame) -> Summary:
    counts = frame["status"].value_counts() if len(frame) else pd.Series(dtype=int)
    decided = _candidates(frame)
    kept = int((decided["status"] == "keep").sum())
    best = running_best(frame).dropna()
    baseline, last = (float(best.iloc[0]), float(best.iloc[-1])) if len(best) else (None, None)
    return Summary(
        experiments=len(frame),
        keep=int(counts.get("keep", 0)), discard=int(counts.get("discard", 0)), crash=int(counts.get("crash", 0)),
        keep_rate=kept / len(decided) if len(decided) else None,
        baseline=baseline, best=last,
        change_percent=(last - baseline) / baseline * 100 if baseline else None,
    )


def kept_changes(frame: pd.DataFrame) -> pd.DataFrame:
    """Kept ideas ranked by their gain: how much each lowered the running best (bpb and percent)."""
    best = running_best(frame)
    before = best.shift(1)
    kept = _candidates(frame)
    kept = kept[kept["status"] == "keep"]
    table = pd.DataFrame({
        "experiment": _numbers(kept, "experiment").astype("Int64") if "experiment" in kept else kept.index + 1,
        "commit": kept["commit"],
        "description": kept["description"],
        "val_bpb": best.loc[kept.index],
        "gain": (before - best).loc[kept.index],
    })
    table["gain_percent"] = table["gain"] / before.loc[kept.index] * 100
    return table.sort_values("gain", ascending=False).reset_index(drop=True)


def noise_band(frame: pd.DataFrame, ax) -> None:
    """Shade the gate's margin below the running best: a candidate must land below the band to be kept."""
    best, margin = _numbers(frame, "best").ffill(), _numbers(frame, "margin").fillna(0.0)
    shown = best.notna() & (margin > 0)
    if not shown.any():
        return
    x = _numbers(frame, "experiment")[shown]
    ax.fill_between(x, (best - margin)[shown], best[shown], step="post", color="tab:blue", alpha=0.15,
                    linewidth=0, label="gate margin (noise)")


def progress_chart(frame: pd.DataFrame, ax=None, band: bool = False):
    """The reference's chart: discarded grey dots, kept green dots labelled, the running best as a step line.

    Crash rows (val_bpb 0.0) are left out. With `band`, the gate's noise margin is shaded under the best.
    Draws on `ax` (a new figure when None) and returns the axes.
    """
    if ax is None:
        from matplotlib.figure import Figure  # no pyplot: safe from any thread, no global state

        ax = Figure(figsize=(11, 4.5), dpi=100).add_subplot(1, 1, 1)
    x = _numbers(frame, "experiment")
    value = _numbers(frame, "val_bpb")
    ok = frame["status"].isin(["keep", "discard"]) & (value > 0) if len(frame) else pd.Series(dtype=bool)
    discarded, kept = ok & (frame["status"] == "discard"), ok & (frame["status"] == "keep")
    ax.scatter(x[discarded], value[discarded], s=14, color="#bbbbbb", label="discarded", zorder=2)
    ax.scatter(x[kept], value[kept], s=30, color="#2ca02c", edgecolor="black", linewidth=0.5, label="kept", zorder=3)
    for index in _candidates(frame[kept]).index:
        ax.annotate(str(frame.at[index, "description"])[:40], (x[index], value[index]), xytext=(4, 6),
                    textcoords="offset points", fontsize=7, rotation=30, color="#1b5e20")
    best = running_best(frame)
    if best.notna().any():
        ax.step(x, best, where="post", color="#2ca02c", linewidth=1.2, label="running best")
        # The top of the view is the baseline: its highest seed, else the first best (the reference's file).
        baseline = value[ok & (frame["kind"] == "baseline")] if "kind" in frame else value[ok].iloc[:0]
        top = float(max(best.dropna().iloc[0], baseline.max() if len(baseline) else float("-inf")))
        low = float(min(value[ok].min(), best.min()))
        span = max(top - low, abs(top) * 0.005, 1e-6)
        ax.set_ylim(low - 0.15 * span, top + 0.6 * span)  # far-off discards would flatten the climb
    if band:
        noise_band(frame, ax)
    if x.notna().any():  # room on the right for the last kept point's label
        ax.set_xlim(float(x.min()) - 0.5, float(x.max()) + max(1.0, 0.08 * float(x.max() - x.min())))
    crashes = int((frame["status"] == "crash").sum()) if len(frame) else 0
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # experiments are counted, never fractional
    ax.set_xlabel("experiment")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_title(f"{len(frame)} experiments, {int(kept.sum()) if len(frame) else 0} kept, {crashes} crashed")
    ax.grid(alpha=0.3)
    if len(frame):
        ax.legend(loc="upper right", fontsize="small")
    return ax


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
