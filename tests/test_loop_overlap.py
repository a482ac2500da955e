"""One lane, the next run training while the last one is scored (LoopConfig.overlap_scoring, lanes.py): the
proposal made meanwhile is built on the best of that moment, a keep that lands before it is decided makes it
stale, and its change is re-applied onto the new best and run again; every experiment runs once.

The fixture's notebook reports its own figure; the checks here score it "outside" slowly (a few seconds, as
the real scorer takes), which is what makes the loop hand the lane on before the decision.
"""
import time
from datetime import datetime

from loop_fixture import ScriptedProposer, make_repo
from test_loop import config, no_kernels_left

from autoresearch_kernel.journal import results
from autoresearch_kernel.loop.guard import Checks
from autoresearch_kernel.loop.loop import Loop

SCORE_SECONDS = 3.0


class SlowScorer(Checks):
    """Believes the run's figure, after SCORE_SECONDS, and says it measured it outside."""

    def score(self, result):
        if result.ok:
            time.sleep(SCORE_SECONDS)
        return result

    def scored_mark(self) -> str:
        return "outside"


def test_the_next_run_trains_while_the_last_is_scored_and_a_keep_meanwhile_makes_it_stale(tmp_path):
    repo = make_repo(tmp_path / "project")
    script = [("better", {"VALUE": 0.9}),  # 3 keep, decided while 4 runs
              ("another lever", {"BONUS": 0.2})]  # 4 built on the baseline: 0.8 beats 0.9 -> stale, 5 rebase
    proposer = ScriptedProposer(script)
    with Loop(config(repo, max_experiments=len(script)), proposer=proposer, checks=SlowScorer()) as loop:
        assert loop.run() == "max experiments reached"
        folder = loop.folder
    rows = results.read_rows(folder / "results.tsv")
    assert [(r.experiment, r.kind, r.status) for r in rows] == [
        (1, "baseline", "keep"), (2, "baseline", "keep"), (3, "candidate", "keep"), (4, "candidate", "stale"),
        (5, "rebase", "keep")]
    assert rows[3].parent == rows[0].commit  # proposed before 3 was kept: on the best of that moment
    assert rows[4].parent == rows[2].commit and rows[4].val_bpb == 0.7  # VALUE 0.9 and BONUS 0.2 together
    at = {r.experiment: (datetime.fromisoformat(r.started_at), datetime.fromisoformat(r.finished_at)) for r in rows}
    assert at[4][0] < at[3][1] and at[2][0] < at[1][1]  # started while the run before it was being scored
    assert all((folder / r.notebook).exists() for r in rows) and not no_kernels_left()


def test_without_overlap_each_run_is_decided_before_the_next_proposal(tmp_path):
    repo = make_repo(tmp_path / "project")
    script = [("better", {"VALUE": 0.9}), ("another lever", {"BONUS": 0.2})]
    with Loop(config(repo, max_experiments=len(script), overlap_scoring=False), proposer=ScriptedProposer(script),
              checks=SlowScorer()) as loop:
        loop.run()
        folder = loop.folder
    rows = results.read_rows(folder / "results.tsv")
    assert [(r.kind, r.status) for r in rows[2:]] == [("candidate", "keep"), ("candidate", "keep")]
    assert rows[3].parent == rows[2].commit
