"""The run's record, kept in memory: the rows of results.tsv and invalid.tsv, and the rows built from runs.

results.tsv stays the truth on disk. The loop reads it (and invalid.tsv) once when it opens a run, then keeps
the lists: every append goes to the file first, atomically (`results.append`), then to the list, so what the
loop decides from is what a resume would read back. From the rows come the gate's inputs (the best so far
and the runs it is the mean of, the noise pooled over every repeated measurement, the margin a candidate must
beat now), the next experiment number, the seeds the baseline still needs, the history a
proposer sees, and a candidate's parent run on the same seed (a candidate whose result is identical to it
is a no-op). The paired gate's pairs come from here too: each of a candidate's runs with the best's run on
the same seed (`pairs`), whether the best still lacks a seed (`lacks_run`), and the partner and paired gain
each row records (`paired`).

The rows themselves are built in one place, `rows.RowBuilder`; this module only keeps and reads them.
"""
from __future__ import annotations

import dataclasses
import time

from autoresearch_kernel import gate
from autoresearch_kernel.integrity import budget
from autoresearch_kernel.journal import results
from autoresearch_kernel.journal.history import HistoryEntry
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.journal.runstate import Pending
from autoresearch_kernel.workspace.runfolder import RunFolder

# The kinds of row that are a proposer's idea (confirmations and baselines are not). A rebase is the idea
# re-applied onto a newer best: its row, not the "stale" one before it, says whether the idea was kept.
IDEAS = ("candidate", "fix", "rebase")
# A crash that is the machine's, not the code's (a lost worker, a loop killed mid-run too often) says so in its
# failure, so that the idea memory does not block the code for ever (memory.Entry.status "fault").
MACHINE_FAULT = "machine fault: "
# A run past its wall-clock limit may be a busy machine's doing: it is run again, with the limit times
# TIMEOUT_GROWTH, this many times before the timeout counts as the code's.
TIMEOUT_RETRIES = 1
TIMEOUT_GROWTH = 2.0


def is_machine_fault(row: Row) -> bool:
    return row.status == "crash" and row.failure.startswith(MACHINE_FAULT)
# The best run again on a seed it lacks, for a candidate's pair (the paired gate): a run of the best, like a
# baseline seed, never a candidate; it decides nothing and never moves the best.
PAIR = "pair"


class Records:
    """results.tsv and invalid.tsv of one run, read once and appended to."""

    def __init__(self, folder: RunFolder, profile: str = "cpu", gate_config: gate.GateConfig = gate.GateConfig()):
        self.folder = folder
        self.profile, self.gate_config = profile, gate_config  # what the noise's default and bound come from
        results.ensure_file(folder.results)
        self.rows: list[Row] = results.read_rows(folder.results)
        self.invalid: list[Row] = results.read_rows(folder.invalid)
        # The ideas tried, invalid replies included, in the order they finished (files: by their time stamps).
        tried = [r for r in self.rows if r.kind in IDEAS]
        self.ideas: list[Row] = sorted(tried + self.invalid, key=lambda r: r.finished_at)

    def append(self, rows: list[Row]) -> list[Row]:
        """Write the rows (stamped with the time) to results.tsv, then keep them as the file has them (a resume
        reads the same figures back); returns them as written."""
        rows = results.as_written(_stamped(rows))
        results.append(self.folder.results, *rows)
        self.rows.extend(rows)
        self.ideas.extend(r for r in rows if r.kind in IDEAS)
        return rows

    def append_invalid(self, row: Row) -> Row:
        [row] = results.as_written(_stamped([row]))
        results.append(self.folder.invalid, row)
        self.invalid.append(row)
        self.ideas.append(row)
        return row

    # -- what the gate and the loop read --------------------------------------------------------------------
    def baseline_values(self) -> list[float | None]:
        return [r.val_bpb for r in self.rows if r.kind == "baseline" and r.status == "keep"]

    def missing_seeds(self, seeds: tuple[int, ...]) -> list[int]:
        """The baseline seeds not run yet, in the configured order."""
        done = {r.seed for r in self.rows if r.kind == "baseline" and r.status == "keep"}
        return [seed for seed in seeds if seed not in done]

    def best(self) -> float | None:
        """The gate's best so far: the `best` of the last kept row that has one (None before the baseline)."""
        for row in reversed(self.rows):
            if row.status == "keep" and row.best is not None:
                return row.best
        return None

    def best_runs(self) -> list[float]:
        """The runs the best is the mean of: every measured run of the last kept commit (the baseline's seeds,
        or a kept candidate's run and its confirmations), one per seed."""
        kept = self.last_kept_commit()
        runs: dict[int, float] = {}
        for r in self.rows:  # the first run on a seed counts, as in gate.repeated_groups
            if r.commit == kept and r.status == "keep" and r.val_bpb is not None:
                runs.setdefault(r.seed, r.val_bpb)
        return list(runs.values())

    def noise(self, with_rows: list[Row] = ()) -> gate.NoiseEstimate:
        """The run's noise: every commit measured on distinct seeds (baseline, confirmations) pooled with the
        default; `with_rows`: runs not written yet that count too."""
        groups = gate.repeated_groups((r.commit, r.seed, r.val_bpb) for r in [*self.rows, *with_rows])
        return gate.estimate_noise(groups, self.profile, self.gate_config)

    def noise_std(self) -> float:
        """The noise sd the gate decides with (the upper bound of the pooled estimate), as rows record it."""
        return self.noise().upper

    def margin(self, candidate_runs: int = 1) -> float | None:
        """What a candidate with so many runs must gain over the best now (the paired rule: what a first run
        must gain to be kept at once); None before the baseline."""
        best_runs = self.best_runs()
        if not best_runs:
            return None
        if self.gate_config.rule == "paired":
            return gate.first_look_margin(self.noise(), self.gate_config)
        return gate.margin_for_means(self.noise(), len(best_runs), candidate_runs, self.gate_config)

    def next_number(self, flights: list[Pending] = ()) -> int:
        """A number no row and no run in flight has: two rows with one number cannot happen."""
        used = [r.experiment for r in self.rows] + [n for flight in flights for n in flight.numbers]
        return max(used, default=0) + 1

    def written(self, numbers: list[int]) -> list[Row]:
        return [r for r in self.rows if r.experiment in numbers]

    def last_kept_commit(self) -> str | None:
        kept = [r for r in self.rows if r.status == "keep" and r.kind != PAIR]  # a pair may be an older best's
        return kept[-1].commit if kept else None

    def first_baseline_commit(self) -> str | None:
        return next((r.commit for r in self.rows if r.kind == "baseline"), None)

    def history(self) -> list[HistoryEntry]:
        """What a proposer sees: the ideas tried (invalid replies included), in the order they finished."""
        return [HistoryEntry(r.experiment, r.description, r.status, r.val_bpb) for r in self.ideas]

    def budget_reference(self) -> budget.Reference:
        """What the baseline's own runs spent on the run's budget: the yardstick of budget.verify."""
        return budget.Reference.of(spent(r) for r in self.rows if r.kind == "baseline" and r.status == "keep")

    def parent_run(self, parent: str, seed: int) -> Row | None:
        """The kept parent's run on `seed` (a baseline seed, the kept candidate's own run, or a pair run)."""
        for row in reversed(self.rows):
            if row.commit == parent[:7] and row.seed == seed and row.status == "keep" and row.val_bpb is not None:
                return row
        return None

    # -- the paired gate: the best's run on each seed -----------------------------------------------------
    def pairs(self, best: str, runs: list[Row]) -> list[gate.Pair]:
        """Each of the candidate's runs with the best's run on the same seed (best None where it has none)."""
        partners = [self.parent_run(best, run.seed) for run in runs]
        lower = self.gate_config.lower_is_better
        return [gate.Pair(run.seed, partner.val_bpb if partner else None, run.val_bpb, lower)
                for run, partner in zip(runs, partners)]

    def lacks_run(self, best: str, seed: int) -> bool:
        """The best has no run on `seed` and never tried one (a crashed pair run is not asked for again)."""
        return self.parent_run(best, seed) is None and not any(
            r.commit == best[:7] and r.seed == seed and r.kind == PAIR for r in self.rows)

    def paired(self, best: str, rows: list[Row]) -> list[Row]:
        """The rows with their seed partner (the best's run on the same seed) and the paired gain recorded."""
        paired = []
        for row in rows:
            partner = self.parent_run(best, row.seed) if row.kind != PAIR else None
            if partner is not None and row.val_bpb is not None and partner.experiment != row.experiment:
                row = dataclasses.replace(row, pair_experiment=partner.experiment,
                                          paired_gain=gate.improvement(partner.val_bpb, row.val_bpb,
                                                                       self.gate_config.lower_is_better))
            paired.append(row)
        return paired


def _stamped(rows: list[Row]) -> list[Row]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    return [row if row.finished_at else dataclasses.replace(row, finished_at=now) for row in rows]


def same_result(run: Row, parent: Row) -> bool:
    """The two runs measured the same thing: val_bpb and tokens identical to the last digit results.tsv keeps.

    Compared as recorded, so that a row read back after a resume compares as the one just written.
    """
    if run.val_bpb is None or parent.val_bpb is None:
        return False
    return f"{run.val_bpb:.6f}" == f"{parent.val_bpb:.6f}" and f"{run.tokens_m:.3f}" == f"{parent.tokens_m:.3f}"


def spent(row: Row) -> budget.Spent:
    """A run's row as the budget's verification reads it: compute seconds are CPU seconds on a CPU, wall seconds
    on a GPU (whose work the CPU time does not see)."""
    seconds = row.wall_seconds if row.device.startswith("cuda") else row.cpu_seconds
    return budget.Spent(tokens=row.tokens_m * 1e6, forward_flops_per_token=row.forward_flops_per_token,
                        seconds=seconds or None, forward_us_per_token=row.forward_us_per_token)


def seed_for(seeds: tuple[int, ...], run_index: int) -> int:
    """A candidate runs on the first baseline seed; confirmations on the next ones, then beyond."""
    return seeds[run_index] if run_index < len(seeds) else max(seeds) + run_index - len(seeds) + 1
