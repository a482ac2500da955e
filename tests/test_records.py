"""The run's record in memory: appended rows are on disk and in the lists; numbers count the run in flight."""
import dataclasses
import math

import pytest

from autoresearch_kernel import gate
from autoresearch_kernel.journal import results
from autoresearch_kernel.journal.records import Records, same_result
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.journal.runstate import Pending
from autoresearch_kernel.workspace.runfolder import RunFolder


def row(number, kind="candidate", status="keep", value=1.0, seed=0, commit="c"):
    return Row(f"{commit}{number:06d}", value, 1.0, status, f"idea {number}", experiment=number, kind=kind,
               seed=seed, tokens_m=0.25)


def test_rows_are_kept_as_written_and_read_back_alike(tmp_path):
    folder = RunFolder(tmp_path)
    records = Records(folder)
    written = records.append([row(1, "baseline"), row(2, "baseline", seed=1, value=1.002)])
    records.append_invalid(Row("", None, None, "invalid", "no edit", experiment=1))
    records.append([row(3, value=0.9)])
    assert all(r.finished_at for r in written)
    again = Records(folder)
    assert [r.experiment for r in again.rows] == [r.experiment for r in records.rows] == [1, 2, 3]
    assert [h.status for h in records.history()] == ["invalid", "keep"]  # as they finished
    assert sorted(h.status for h in again.history()) == ["invalid", "keep"]  # a tie within a second: either
    assert records.noise_std() == again.noise_std() and records.missing_seeds((0, 1, 2)) == [2]
    assert same_result(again.rows[0], records.rows[0]) and not same_result(records.rows[0], records.rows[1])


def test_the_next_number_counts_the_experiment_in_flight(tmp_path):
    """A baseline seed run while an experiment waits for its re-run must not take that experiment's number."""
    records = Records(RunFolder(tmp_path))
    records.append([row(1, "baseline"), row(2, "baseline", seed=1)])
    pending = Pending(numbers=[3], kind="candidate", commit="c" * 40, parent="p" * 40, description="x")
    assert records.next_number([pending]) == 4 and records.next_number([]) == 3
    assert len(results.read_rows(tmp_path / "results.tsv")) == 2


def test_the_gates_inputs_come_from_every_repeated_run_and_the_last_kept_commits_runs(tmp_path):
    """The best's runs are the kept commit's runs (one per seed); the noise pools each commit measured on more
    than one seed, a discarded candidate's confirmation included, and counts a same-seed re-run once."""
    config = gate.GateConfig(prior_sd=0.01, prior_weight=2.0, rule="means")
    records = Records(RunFolder(tmp_path), "cpu", config)
    assert records.best_runs() == [] and records.margin() is None
    records.append([row(1, "baseline", commit="b"), row(1, "baseline", seed=1, value=1.02, commit="b")])
    assert records.best_runs() == [1.0, 1.02]
    records.append([row(3, value=0.97, status="discard", commit="d"),
                    row(3, "confirm", value=0.99, seed=1, status="discard", commit="d")])
    records.append([row(5, value=0.90, commit="k"), row(5, "confirm", value=0.92, seed=1, commit="k"),
                    row(5, "confirm", value=0.92, seed=1, commit="k")])  # the same seed again: no new draw
    assert records.best_runs() == [0.90, 0.92]
    noise = records.noise()
    assert noise.measured_dof == 3
    assert noise.sd == pytest.approx(gate.NoiseEstimate.pooled([[1.0, 1.02], [0.97, 0.99], [0.9, 0.92]], 0.01, 2.0).sd)
    assert records.noise_std() == noise.upper
    assert records.margin(2) == pytest.approx(config.z * noise.upper * math.sqrt(1 / 2 + 1 / 2))
    paired = Records(RunFolder(tmp_path), "cpu", gate.GateConfig(prior_sd=0.01, prior_weight=2.0))
    assert paired.margin() == pytest.approx(gate.first_look_margin(noise, paired.gate_config))


def test_a_candidates_runs_pair_with_the_bests_run_on_each_seed(tmp_path):
    """Pairs by seed with the kept commit's runs (a pair run of the best included); a seed the best lacks
    pairs with nothing and is asked for; the rows record their partner and the paired gain."""
    records = Records(RunFolder(tmp_path), "cpu", gate.GateConfig())
    best = lambda number, *args, **kw: dataclasses.replace(row(1, *args, commit="b", **kw), experiment=number)  # noqa: E731
    records.append([best(1, "baseline"), best(2, "baseline", seed=1, value=1.02), best(3, "pair", seed=3, value=1.01),
                    best(4, "pair", seed=4, value=None, status="crash")])
    runs = [dataclasses.replace(row(5, *args, commit="c", **kw), experiment=n) for n, args, kw in [
        (5, (), dict(value=0.99)), (6, ("confirm",), dict(seed=2, value=0.98)), (7, ("confirm",), dict(seed=3, value=1.0))]]
    kept = "b000001" + "0" * 33
    pairs = records.pairs(kept, runs)
    assert [(p.seed, p.best, p.gain) for p in pairs] == [(0, 1.0, pytest.approx(0.01)), (2, None, None),
                                                         (3, 1.01, pytest.approx(0.01))]
    assert records.lacks_run(kept, 2) and not records.lacks_run(kept, 3)
    assert not records.lacks_run(kept, 4)  # its pair run crashed: not asked for again
    paired = records.paired(kept, runs)
    assert [(r.pair_experiment, r.paired_gain) for r in paired] == [(1, pytest.approx(0.01)), (0, None),
                                                                    (3, pytest.approx(0.01))]
    records.append(paired)
    assert records.last_kept_commit() == "c000005" and [r.pair_experiment for r in results.read_rows(
        tmp_path / "results.tsv")][-3:] == [1, 0, 3]


def test_rows_in_memory_hold_the_figures_results_tsv_holds(tmp_path):
    """A decision at the margin must not differ after a resume: memory keeps what the file keeps."""
    records = Records(RunFolder(tmp_path))
    records.append([row(1, "baseline", value=1.23456789)])
    assert records.rows[0].val_bpb == Records(RunFolder(tmp_path)).rows[0].val_bpb == 1.234568


def test_one_value_per_seed_is_the_first_for_the_best_as_for_the_noise(tmp_path):
    records = Records(RunFolder(tmp_path))
    twice = [Row("abcdef1", value, 1.0, "keep", "baseline", experiment=n, kind="baseline", seed=0)
             for n, value in ((1, 1.0), (2, 1.5))]  # one commit run twice on one seed
    records.append(twice)
    assert records.best_runs() == [1.0] == gate.repeated_groups((r.commit, r.seed, r.val_bpb) for r in twice)[0]


def test_a_rebased_idea_reaches_the_history_and_ends_a_plateau(tmp_path):
    from autoresearch_kernel.proposers.base import experiments_since_keep

    records = Records(RunFolder(tmp_path))
    records.append([row(1, "baseline"), row(2, status="stale", value=0.9), row(3, "rebase", value=0.9)])
    assert [(h.number, h.status) for h in records.history()] == [(2, "stale"), (3, "keep")]
    assert experiments_since_keep(records.history()) == 0
