"""Deciding and recording experiments, in the order their runs finish: the gate, the stale rule, keep or revert.

A run finished on some lane. Its experiment (a `runstate.Pending`, "a flight") is then:
- a baseline seed: its row is written; the seed that completes the baseline also writes the first best;
- a candidate's run past its budget, as measured outside its kernel (integrity/budget.py): "over-budget"
  before any gate, never kept, reverted, and the proposer is told;
- a candidate whose parent is still the best: decided by the gate as always (keep, discard, noop, crash, or
  "confirm": one more run on another seed, which a lane picks up next);
- a candidate whose parent is no longer the best (another lane's candidate was kept while it ran) that
  beats the best: not kept as it is, since it was never measured together with what was kept meanwhile.
  Its change is re-applied onto the current best (merge.py, a cell-level three-way merge) and committed as
  a "rebase" experiment, whose run decides; the original is recorded as "stale" with a pointer to it. A
  change that does not apply, or is already in the best, is recorded as stale and that is all;
- anything else that lost is decided as usual: it did not beat the best, whatever the best is now.
- under the paired rule (gate.decide_paired), a candidate's run on a seed the best has no run on waits: the
  best is run on that seed (a `pair` flight, asked for when the confirmation is reserved, so another lane may
  run it meanwhile); its row is the best's (it counts for every later pair and for the noise, never moves the
  best), and the candidates that waited for it are decided then (`settle_waiting`, also after a resume).

Then the rows are appended to results.tsv, the branch keeps or reverts, the flight leaves state.json, and
the proposer hears the outcome. The loop owns the lanes and the proposals; this module owns the verdicts.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from autoresearch_kernel import gate
from autoresearch_kernel.errors import AutoresearchError, ProposalError
from autoresearch_kernel.execution.runresult import OVER_BUDGET_ERROR
from autoresearch_kernel.harness.profiles import Budget, choose_budget
from autoresearch_kernel.integrity import budget
from autoresearch_kernel.journal import records
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.journal.runstate import FixRequest, Pending, pending_rows
from autoresearch_kernel.loop.guard import Candidate
from autoresearch_kernel.loop.ledger import Ledger
from autoresearch_kernel.proposers import Proposal, Usage
from autoresearch_kernel.redaction import redact
from autoresearch_kernel.workspace.merge import merge_notebooks
from autoresearch_kernel.workspace.worktree import Workspace, short

FAILURE_EXCERPT_CHARS = 3000  # how much of a crash's traceback a fix proposal sees
# Statuses whose runs are never needed again: their weights are deleted (GPU ones are large).
REVERTED_WITHOUT_WEIGHTS = ("discard", "noop", "stale", budget.STATUS)
# Crashes that are the machine's, not the code's: no fix proposal is asked for (the code may be fine).
NOT_THE_CODE = ("WorkerLost",)


@dataclass(frozen=True)
class Yardstick:
    """What every verdict of a run is measured with (settings.YARDSTICK: a resume may not change it)."""

    gate: gate.GateConfig
    baseline_seeds: tuple[int, ...]
    budget: Budget  # the budget in force (harness/profiles.choose_budget)
    tolerance: budget.Tolerance  # how far past it a run may go (integrity/budget.py)

    @classmethod
    def of(cls, config) -> Yardstick:
        """The yardstick of a `settings.LoopConfig`."""
        chosen = choose_budget(config.profile, config.budget_seconds, config.budget_tokens, config.budget_flops)
        return cls(config.gate, config.baseline_seeds, chosen, config.budget_tolerance)


class Settler:
    """The verdicts of one loop. Its doors: the ledger (flights, rows, status), the workspace (git), the
    yardstick, the integrity pre-filter (for a rebase) and the proposer's feedback."""

    def __init__(self, ledger: Ledger, workspace: Workspace, yardstick: Yardstick,
                 check_candidate: Callable[[Candidate], str | None],
                 feedback: Callable[[Proposal, str, float | None], None]):
        self.ledger, self.workspace, self.yardstick = ledger, workspace, yardstick
        self.check_candidate, self.feedback = check_candidate, feedback

    @property
    def state(self):
        return self.ledger.state

    @property
    def records(self) -> records.Records:
        return self.ledger.records

    # -- a run finished -------------------------------------------------------------------------------------
    def run_finished(self, flight: Pending, row: Row, excerpt: str, error_name: str | None = None) -> list[Row]:
        """Record the run in the flight; settle the flight when its runs decide it. Returns the rows written.
        `error_name`: the run's error (RunResult.error_name), for a crash."""
        flight.runs.append(dataclasses.asdict(row))
        self.ledger.save()
        return self.decide(flight, excerpt, error_name)

    def decide(self, flight: Pending, excerpt: str = "", error_name: str | None = None) -> list[Row]:
        """The verdict on a flight whose last run is saved: its rows, one more run (confirm), or a rebase."""
        row = pending_rows(flight)[-1]
        if flight.kind == "baseline":
            return self._baseline(flight, row)
        if flight.kind == records.PAIR:
            return self._pair(flight, row)
        if row.status == "suspect":  # the gate never sees it; the proposer hears the status, not the figure
            verdict = gate.Decision("suspect", None, self.records.best(), self.records.margin(), None, row.failure)
            return self.settle(flight, verdict, fixable=False)
        over = self._stopped_over_budget(row) if error_name == OVER_BUDGET_ERROR else self._over_budget(row)
        if over is not None:
            return self.settle(flight, over, fixable=False)
        if self._awaits_pair(flight):  # decided once the best has run on this seed too
            return []
        return self._judge(flight, excerpt, error_name)

    def _judge(self, flight: Pending, excerpt: str = "", error_name: str | None = None) -> list[Row]:
        """The gate on a flight whose runs are all in: settle it, or reserve its next run (and the best's)."""
        decision = self._decide(flight)
        if flight.parent != self.state.kept and decision.status in ("keep", "confirm"):
            return self._stale(flight, decision)
        if decision.status == "confirm":  # one more run, on the next seed: a lane takes it next
            flight.numbers.append(self.records.next_number(self.state.flights))
            flight.queued_at = time.time()
            self.ledger.save()
            self._request_pair(records.seed_for(self.yardstick.baseline_seeds, len(flight.runs)))
            return []
        if decision.status == "crash" and error_name in NOT_THE_CODE:  # the code may be fine: no fix, no blame
            return self.settle(flight, decision, fixable=False, fault=True)
        return self.settle(flight, decision, excerpt=excerpt)

    def interrupted(self, flight: Pending) -> list[Row]:
        reason = "interrupted: the loop stopped during this experiment more than once"
        if flight.kind == records.PAIR:
            return self._pair(flight, self.ledger.rows.never_run(flight, flight.seed, reason))
        return self.settle(flight, self._crash(reason), fixable=False, fault=True)

    # -- the paired gate: the best's run on the seed a candidate ran on ----------------------------------------
    def _awaits_pair(self, flight: Pending) -> bool:
        """The paired rule needs the best's run on the seed of the flight's last run, and it has none yet: a
        run of the best on that seed is asked for (once) and the flight waits for it."""
        done = pending_rows(flight)
        if self.yardstick.gate.rule != "paired" or flight.parent != self.state.kept or done[-1].val_bpb is None:
            return False
        if not self.records.lacks_run(self.state.kept, done[-1].seed):
            return False
        self._request_pair(done[-1].seed)
        return True

    def _request_pair(self, seed: int) -> None:
        """A run of the best on `seed`, unless it has one, tried one, or one is in flight."""
        kept = self.state.kept
        if self.yardstick.gate.rule != "paired" or not self.records.lacks_run(kept, seed) or any(
                f.kind == records.PAIR and f.commit == kept and f.seed == seed for f in self.state.flights):
            return
        self.ledger.add_flight(Pending(numbers=[], kind=records.PAIR, commit=kept, parent=kept,
                                     description=f"the best on seed {seed}, to pair with", seed=seed))

    def _pair(self, flight: Pending, row: Row) -> list[Row]:
        """The best's run on a seed it lacked: recorded as the best's (it counts for pairs and for the noise, it
        decides nothing), then the candidates that waited for it are decided."""
        noise = self.records.noise(with_rows=[row]).upper
        written = self.ledger.append([dataclasses.replace(row, best=None, noise_std=noise)])
        self._forget(flight)
        return written + self.settle_waiting()

    def settle_waiting(self) -> list[Row]:
        """Decide the flights whose runs are all saved but that have no rows: those that waited for the best's
        run on a seed, and any a kill left between a run's save and its rows (baselines and pair runs too:
        else a baseline seed would be waited for forever). Called after a pair run and when the loop opens.
        Through `decide`, so the suspect and budget verdicts apply to them as to any run."""
        rows: list[Row] = []
        for flight in list(self.state.flights):
            if flight in self.state.flights and flight.runs and not flight.owes_run() \
                    and not self.records.written(flight.numbers):
                rows += self.decide(flight, excerpt=pending_rows(flight)[-1].failure)
        return rows

    def refused(self, flight: Pending, reason: str) -> list[Row]:
        return self.settle(flight, self._crash(reason), fixable=False)

    def _crash(self, reason: str) -> gate.Decision:
        return gate.Decision("crash", None, self.records.best(), self.records.margin(), None, reason)

    def cpu_ceiling(self, kind: str, device: str, task) -> float | None:
        """The CPU seconds past which a run is stopped while it runs: more than any run on the budget could be
        allowed (budget.ceiling_seconds), known once the baseline has run. For the GPT task's runs on a CPU (whose
        CPU seconds the budget verifies), never the baseline's or the best's own runs (they set the measure)."""
        if kind in ("baseline", records.PAIR) or not task.is_gpt or device.startswith("cuda"):
            return None
        chosen = self.yardstick.budget
        return budget.ceiling_seconds(chosen.kind, self.records.budget_reference(), self.yardstick.tolerance)

    def _stopped_over_budget(self, row: Row) -> gate.Decision:
        """A run the runner stopped past its CPU ceiling (Settler.cpu_ceiling): over-budget, never scored."""
        reason = f"{budget.STATUS}: {row.failure.split(OVER_BUDGET_ERROR + ': ', 1)[-1]}"
        return gate.Decision(budget.STATUS, None, self.records.best(), self.records.margin() or 0.0, None, reason)

    def _over_budget(self, row: Row) -> gate.Decision | None:
        """The over-budget verdict of a run that trained past its budget (measured outside its kernel), else None.
        A run the scorer did not measure (a base notebook without harness.finish reports its own metrics, and
        spends no budget the harness knows of) is not verified."""
        if row.status == "crash" or row.forward_flops_per_token is None:
            return None
        chosen = self.yardstick.budget
        verdict = budget.verify(chosen.kind, chosen.amount, records.spent(row), self.records.budget_reference(),
                                self.yardstick.tolerance)
        if not verdict.over:
            return None
        best = self.records.best()
        lower = self.yardstick.gate.lower_is_better
        gain = gate.improvement(best, row.val_bpb, lower) if best is not None and row.val_bpb is not None else None
        return gate.Decision(budget.STATUS, row.val_bpb, best, self.records.margin() or 0.0, gain, verdict.reason)

    def _decide(self, flight: Pending) -> gate.Decision:
        """The gate on the runs so far, against the best of this moment; a first run identical to its parent's
        run on that seed is a no-op."""
        done = pending_rows(flight)
        parent_run = self.records.parent_run(flight.parent, done[0].seed)
        if parent_run is not None and records.same_result(done[0], parent_run):
            return gate.noop_decision(self.records.best(), done[0].val_bpb, self.records.margin(), done[0].seed)
        config = self.yardstick.gate
        if config.rule == "means":
            return gate.decide_by_means(self.records.best_runs(), [r.val_bpb for r in done], self.records.noise(),
                                        config)
        return gate.decide_paired(self.records.pairs(self.state.kept, done), self.records.best(),
                                  self.records.noise(), config)

    # -- the verdicts -----------------------------------------------------------------------------------------
    def _baseline(self, flight: Pending, row: Row) -> list[Row]:
        values = self.records.baseline_values() + [row.val_bpb]
        if row.status in ("crash", "suspect"):
            pass
        elif len(values) == len(self.yardstick.baseline_seeds):
            noise = self.records.noise(with_rows=[row])  # this seed's run counts too
            decision = gate.baseline_decision(values, noise, self.yardstick.gate)
            row = dataclasses.replace(row, margin=decision.margin, best=decision.best, noise_std=noise.upper)
        self.ledger.append([row])
        self._forget(flight)
        if row.status in ("crash", "suspect"):
            raise AutoresearchError(
                f"the unmodified notebook {'crashed' if row.status == 'crash' else 'scored below the floor'} on "
                f"baseline seed {row.seed} ({row.failure}); see "
                f"{self.ledger.folder.path / row.notebook}; fix the notebook or the data, then resume the tag")
        return [row]

    def _stale(self, flight: Pending, decision: gate.Decision) -> list[Row]:
        """It beat the best, but the best moved on from its parent while it ran: re-apply its change there."""
        kept, workspace = self.state.kept, self.workspace
        moved = f"stale: the best moved on from {short(flight.parent)} to {short(kept)} while it ran"
        merged = merge_notebooks(workspace.read_sandbox(flight.parent), workspace.read_sandbox(kept),
                                 workspace.read_sandbox(flight.commit))
        rebase = None
        if merged is None:
            reason = f"{moved}, and its change does not apply there"
        else:
            try:
                commit = workspace.commit_sandbox(merged, flight.description, parent=kept)
            except ProposalError:
                commit, reason = None, f"{moved}, and its change is already in it"
            # a loop killed after it saved the rebase and before this row: the rebase is there, not made twice
            rebase = next((f for f in self.state.flights if f.rebase_of == flight.numbers[0]), None)
            if rebase is not None:
                reason = f"{moved}; re-applied there as experiment {rebase.numbers[0]}"
            elif commit is not None:
                number = self.records.next_number(self.state.flights)
                refused = self.check_candidate(Candidate(
                    number, "rebase", commit, kept, flight.description, workspace.sandbox, workspace))
                if refused:
                    reason = f"{moved}; its change re-applied there is refused: {refused}"
                else:
                    rebase = self.ledger.add_flight(Pending(
                        numbers=[], kind="rebase", commit=commit, parent=kept, description=flight.description,
                        rebase_of=flight.numbers[0], proposer=flight.proposer))
                    reason = f"{moved}; re-applied there as experiment {rebase.numbers[0]}"
        verdict = gate.Decision("stale", decision.value, self.records.best(), decision.margin, decision.gain, reason)
        # the proposer hears the outcome of the re-applied run (same description), not of this one
        return self.settle(flight, verdict, fixable=False, tell=rebase is None)

    def settle(self, flight: Pending, decision: gate.Decision, fixable: bool = True, excerpt: str = "",
               tell: bool = True, fault: bool = False) -> list[Row]:
        """Write the flight's rows with the final status, then keep or revert, then forget the flight.
        `fault`: a crash that is the machine's, not the code's (its rows say so: records.MACHINE_FAULT)."""
        status = decision.status
        seed = flight.seed if flight.seed is not None else records.seed_for(self.yardstick.baseline_seeds, 0)
        runs = pending_rows(flight) or [self.ledger.rows.never_run(flight, seed, decision.reason)]
        noise_std = self.records.noise_std()
        rows = [dataclasses.replace(row, status=status, margin=decision.margin, best=decision.best,
                                    noise_std=noise_std,
                                    failure=decision.reason if status == budget.STATUS else
                                    row.failure or ("" if status == "keep" else decision.reason))
                for row in runs]
        if fault:
            rows = [dataclasses.replace(row, failure=records.MACHINE_FAULT + row.failure) for row in rows]
        rows = self.ledger.append(self.records.paired(self.state.kept, rows))  # before _apply: paired with the best
        self._apply(flight, status)
        if status in REVERTED_WITHOUT_WEIGHTS:
            for row in rows:
                for suffix in (".checkpoint.pt", ".program.pt2"):
                    (self.ledger.folder.path / row.notebook).with_suffix(suffix).unlink(missing_ok=True)
        # a fix is built on the crashed notebook and committed on the best: only where that is its parent (with
        # lanes the best may have moved on, and the fix would undo what was kept meanwhile)
        if status == "crash" and fixable and flight.fixes_left > 0 and flight.parent == self.state.kept:
            failure = redact(excerpt or rows[-1].failure)[-FAILURE_EXCERPT_CHARS:]
            self.state.fix = FixRequest(flight.commit, flight.description, failure, flight.fixes_left, flight.parent)
        self._forget(flight)
        if tell:
            proposal = Proposal(flight.description, self.workspace.read_sandbox(flight.commit), Usage(**flight.usage),
                                proposer=flight.proposer)
            self.feedback(proposal, status, decision.value)
        return rows

    def _apply(self, flight: Pending, status: str) -> None:
        """Keep: the branch moves to the commit (its parent is the best). Otherwise keep it under a ref."""
        if status == "keep":
            self.workspace.reset_to(flight.commit)  # also cleans whatever was left in the worktree
            self.state.kept = flight.commit
        else:
            self.workspace.discard(flight.commit, flight.numbers[0], self.state.kept)

    def _forget(self, flight: Pending) -> None:
        self.ledger.forget(flight)
