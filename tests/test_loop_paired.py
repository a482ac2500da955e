"""The paired gate in the loop, on real kernels (the fixture sandbox of loop_fixture.py): each candidate run is
paired with the best's run on the same seed, the best is run on a seed it lacks (a `pair` row, the best's,
never a candidate's), and a kill during that run resumes without losing or repeating a row.

The fixture reports VALUE - BONUS + NOISE * SEED: with two baseline seeds (0, 1) a candidate's third run, on
seed 2, needs the best's run on seed 2.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from loop_fixture import ScriptedProposer, make_repo

from autoresearch_kernel.gate import GateConfig, estimate_noise
from autoresearch_kernel.journal import results, runstate
from autoresearch_kernel.loop.loop import Loop, LoopConfig
from autoresearch_kernel.workspace.runfolder import RunFolder

pytestmark = pytest.mark.slow

PAIRED = GateConfig(min_margin=0.001, prior_sd=0.001)  # the default rule, told the fixture's noise
SCRIPT = [
    # pairs +0.002, 0, -0.002: promising, then borderline, then futile once the best has run on seed 2
    ("bonus, noisier", {"BONUS": 0.002, "NOISE": 0.003}),
    # pairs +0.003 on seeds 0, 1, 2: kept at the third, paired with the best's seed-2 run made for the first
    ("bonus", {"BONUS": 0.003}),
]


def config(repo, **overrides):
    settings = dict(repo=repo, tag="t", baseline_seeds=(0, 1), timeout_s=60, pause_seconds=0.3, fix_attempts=0,
                    gate=PAIRED)
    settings.update(overrides)
    return LoopConfig(**settings)


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("paired") / "project")
    with Loop(config(repo, max_experiments=len(SCRIPT)), proposer=ScriptedProposer(SCRIPT)) as loop:
        why = loop.run()
        folder, state = loop.folder, runstate.load_state(loop.folder)
    return dict(why=why, rows=results.read_rows(folder / "results.tsv"), state=state)


def test_the_best_runs_on_the_seed_a_confirmation_needs_and_the_row_is_the_bests(paired_run):
    rows = paired_run["rows"]
    assert paired_run["why"] == "max experiments reached" and paired_run["state"].flights == []
    [pair] = [r for r in rows if r.kind == "pair"]  # one for seed 2, asked for once, used by both candidates
    assert (pair.seed, pair.status, pair.commit, pair.val_bpb) == (2, "keep", rows[0].commit, 1.002)
    assert pair.proposer == "" and pair.best is None and pair.pair_experiment == 0
    assert [(r.experiment, r.kind, r.seed, r.status) for r in rows if r.description == "bonus, noisier"] == [
        (3, "candidate", 0, "discard"), (4, "confirm", 1, "discard"), (5, "confirm", 2, "discard")]
    assert pair.experiment == 6 and rows.index(pair) < 3  # written when it finished, before the candidate's rows


def test_each_row_records_its_seed_partner_and_its_paired_gain(paired_run):
    rows = paired_run["rows"]
    noisier = [r for r in rows if r.description == "bonus, noisier"]
    assert [r.pair_experiment for r in noisier] == [1, 2, 6]
    assert [r.paired_gain for r in noisier] == pytest.approx([0.002, 0.0, -0.002], abs=1e-9)
    kept = [r for r in rows if r.description == "bonus"]
    assert [(r.seed, r.status, r.pair_experiment) for r in kept] == [(0, "keep", 1), (1, "keep", 2), (2, "keep", 6)]
    assert [r.paired_gain for r in kept] == pytest.approx([0.003] * 3, abs=1e-9)
    assert kept[-1].best == pytest.approx(1.001 - 0.003)  # the mean of its three runs


def test_the_bests_pair_run_counts_for_the_noise(paired_run):
    rows = paired_run["rows"]
    kept = [r for r in rows if r.description == "bonus"]
    # the baseline commit on three seeds (its pair run included) and the first candidate's three runs
    noise = estimate_noise([[1.0, 1.001, 1.002], [0.998, 1.001, 1.004]], "cpu", PAIRED)
    assert kept[-1].noise_std == pytest.approx(noise.upper, abs=1e-6) and noise.measured_dof == 4


# -- a kill while the best runs for a pair ----------------------------------------------------------------
LOOP_PROCESS = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from loop_fixture import ScriptedProposer
    from autoresearch_kernel.gate import GateConfig
    from autoresearch_kernel.loop.loop import Loop, LoopConfig
    config = LoopConfig(repo=sys.argv[1], tag="t", baseline_seeds=(0, 1), timeout_s=60, max_experiments=1,
                        fix_attempts=0, gate={gate})
    with Loop(config, proposer=ScriptedProposer([("bonus", {{"BONUS": 0.003}})])) as loop:
        loop.run()
""").format(tests=str(Path(__file__).parent), gate=repr(PAIRED))


def slow_on_seed_two(repo):
    """The fixture, sleeping on seed 2 only: the pair run (and the candidate's third run) take long."""
    notebook = repo / "notebooks" / "train_template.ipynb"
    notebook.write_text(notebook.read_text().replace("SLEEP = 0       #", "SLEEP = 6 if SEED == 2 else 0  #"))
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "slow on seed 2"], check=True)


def test_a_kill_during_the_bests_pair_run_resumes_it_and_decides_the_waiting_candidate(tmp_path):
    repo = make_repo(tmp_path / "project")
    slow_on_seed_two(repo)
    process = subprocess.Popen([sys.executable, "-c", LOOP_PROCESS, str(repo)])
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            status = runstate.read_status(repo, "t")
            if status and status.phase == "running" and status.kind == "pair":
                break
            assert process.poll() is None, "the loop ended before the best's pair run"
            time.sleep(0.2)
        else:
            pytest.fail("the loop never ran the best for a pair")
        time.sleep(1.0)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        process.kill()
    folder = RunFolder.of(repo, "t")
    before = results.read_rows(folder.results)
    flights = runstate.load_state(folder.path).flights
    assert [r.kind for r in before] == ["baseline", "baseline"]  # the candidate waits, undecided, in state.json
    assert sorted(f.kind for f in flights) == ["candidate", "pair"]
    with Loop(config(repo, resume=True, max_experiments=0), proposer=ScriptedProposer([])) as loop:
        why = loop.run()
    rows = results.read_rows(folder.results)
    assert why == "max experiments reached" and runstate.load_state(folder.path).flights == []
    assert [(r.experiment, r.kind, r.seed, r.status) for r in rows] == [
        (1, "baseline", 0, "keep"), (2, "baseline", 1, "keep"), (6, "pair", 2, "keep"),
        (3, "candidate", 0, "keep"), (4, "confirm", 1, "keep"), (5, "confirm", 2, "keep")]
    assert [r.pair_experiment for r in rows[3:]] == [1, 2, 6]
