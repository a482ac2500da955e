"""The budget verified outside the kernel, through the real loop: real kernels in the real jail, the real scorer,
the training notebook shrunk to one narrow layer (tests/test_integrity.py's `tiny_template`).

Under a FLOP, a token and a time budget the loop runs the baseline and a candidate that ignores `run.done()`:
once its budget is spent it trains as many steps again, on fresh batches, without telling the clock. The cheat
is recorded `over-budget` (its reason names the figures), never kept, reverted, and the proposer hears it.
Under the FLOP budget an honest change runs first: the gate decides it as usual.
"""
import nbformat
import pytest
from test_integrity import make_repo

from autoresearch_kernel.gate import GateConfig
from autoresearch_kernel.integrity.budget import MAX_FLOP_SCALE, Tolerance
from autoresearch_kernel.journal import results
from autoresearch_kernel.loop.guard import Guard
from autoresearch_kernel.loop.loop import Loop, LoopConfig
from autoresearch_kernel.proposers.base import Proposal, Usage

STEP_TOKENS = 8 * 256  # the tiny notebook's tokens per step
TINY_FLOPS_PER_TOKEN = 865_152.3  # the tiny notebook's, as the harness counts its first step
AFTER_TRAINING = "    run.tick(step, loss.detach())\n    step += 1"
CHEAT = AFTER_TRAINING + """
for _ in range(step):  # the budget is spent: as many steps again, unseen by the clock and by done()
    for _ in range(GRAD_ACCUM_STEPS):
        x, y, epoch = next(batches)
        with autocast:
            loss = train_model(x, y)
        (loss / GRAD_ACCUM_STEPS).backward()
    for optimizer in optimizers:
        optimizer.step()
    model.zero_grad(set_to_none=True)"""
# Past any allowance: it never stops training (the loop's ceiling stops it, integrity/budget.ceiling_seconds)
RUNAWAY = AFTER_TRAINING + """
while True:
    x, y, epoch = next(batches)
    train_model(x, y).backward()"""
HONEST = ("UNEMBEDDING_LR = 0.004           # AdamW, output head", "UNEMBEDDING_LR = 0.008           # AdamW, output head")
STOPPED = "more than any run on its budget may spend"  # the runner's words for a run past its ceiling
pytestmark = pytest.mark.timeout(1800)  # three loops of real kernels, on two shared cores
# A count budget's steps: twice the budget is past 1.25 x at any count, but the cheat's extra CPU seconds must
# also stand out of a start-up's (imports, export) scatter on a busy machine: 8 steps added 3 CPU seconds to
# 11 and did not, under load.
BUDGET_STEPS = 16
BUDGETS = {
    "flops": dict(budget_flops=BUDGET_STEPS * STEP_TOKENS * TINY_FLOPS_PER_TOKEN * 0.999),
    "tokens": dict(budget_tokens=BUDGET_STEPS * STEP_TOKENS),
    # Wall-clock seconds, so long enough that training, not start-up, weighs in the CPU time even on a busy
    # machine. Measured in the jail on two cores under a load of 10: start-up, export and kernel about 9 CPU
    # seconds, a step 0.4; the baseline trained 24 steps in 20 s (17.2 CPU s) and the cheat billed 26.4 CPU s,
    # 1.54 x, past the 1.3 x below. It would take fewer than 10 steps in 20 s to fall under it.
    "seconds": dict(budget_seconds=20.0),
}
# One run decides each candidate: the budget's verdict is this module's, the paired gate's runs are
# tests/test_loop_paired.py's (under the paired rule the honest change took 4 runs and the best 3 more).
ONE_RUN_DECIDES = GateConfig(rule="means", confirm_runs=0)
# The CPU test runs here with a 30 % slack: an honest change took 0.91 x the baseline's CPU seconds.
TOLERANCE = Tolerance(seconds=0.3)


class EditingProposer:
    """Proposes fixed text replacements in the training notebook, one per proposal; records what it is told."""

    name = "scripted"
    fixes_crashes = False

    def __init__(self, edits):
        self.edits, self.feedbacks = list(edits), []

    def propose(self, context) -> Proposal:
        description, old, new = self.edits.pop(0)
        notebook = nbformat.from_dict(context.notebook)
        cell = next(c for c in notebook.cells if old in c.source)
        cell.source = cell.source.replace(old, new)
        return Proposal(description, notebook, Usage())

    def feedback(self, proposal, status, val_bpb=None) -> None:
        self.feedbacks.append((proposal.description, status))


@pytest.fixture(scope="module", params=list(BUDGETS))
def budget_run(request, prepared_dir, tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp(request.param) / "project")
    edits = [("cheat: trains on twice its budget", AFTER_TRAINING, CHEAT)]
    if request.param == "flops":
        edits.insert(0, ("honest: higher head learning rate", *HONEST))
        edits.append(("runaway: trains until it is stopped", AFTER_TRAINING, RUNAWAY))
    proposer = EditingProposer(edits)
    config = LoopConfig(repo=repo, tag="budget", data_dir=str(prepared_dir), device="cpu", baseline_seeds=(0,),
                        timeout_s=600, fix_attempts=0, max_experiments=len(edits), gate=ONE_RUN_DECIDES,
                        budget_tolerance=TOLERANCE, **BUDGETS[request.param])
    with Loop(config, proposer=proposer, checks=Guard(static=False)) as loop:
        loop.run()
        folder, kept = loop.folder, loop.state.kept
        branch_head = loop.workspace.head()
    rows = {r.description.split(":")[0]: r for r in results.read_rows(folder / "results.tsv")}
    return dict(kind=request.param, rows=rows, proposer=proposer, kept=kept, head=branch_head)


def test_a_candidate_that_trains_on_twice_its_budget_is_over_budget_and_not_kept(budget_run):
    cheat = budget_run["rows"]["cheat"]
    assert cheat.status == "over-budget", (budget_run["kind"], cheat.failure, cheat.cpu_seconds)
    assert cheat.failure.startswith("over-budget: ")
    assert budget_run["kept"][:7] != cheat.commit and budget_run["head"][:7] != cheat.commit  # reverted
    assert ("cheat: trains on twice its budget", "over-budget") in budget_run["proposer"].feedbacks
    if budget_run["kind"] == "flops":  # priced from the scorer's forward FLOPs: twice the tokens, past 1.25 F
        tokens = 2 * BUDGET_STEPS * STEP_TOKENS
        assert "FLOPs (3 x " in cheat.failure and cheat.tokens_m == pytest.approx(tokens / 1e6, abs=1e-3)
    elif budget_run["kind"] == "tokens":
        assert f"tokens > 1.25 x the budget's {BUDGET_STEPS * STEP_TOKENS:,}" in cheat.failure
    else:  # a time budget: only the CPU seconds of the jail's tree show it, after the run or while it runs
        assert "compute seconds >" in cheat.failure or STOPPED in cheat.failure, cheat.failure


def test_a_run_past_any_allowance_is_stopped_while_it_runs(budget_run):
    """Under a FLOP budget the most any run may spend is the baseline's CPU seconds x 3 (the largest FLOP scale)
    x 1.3 (the slack): the runaway is stopped there, long before its wall-clock limit, and never scored."""
    if budget_run["kind"] != "flops":
        pytest.skip("the runaway runs under the FLOP budget only")
    runaway, baseline = budget_run["rows"]["runaway"], budget_run["rows"]["baseline (seed 0)"]
    assert runaway.status == "over-budget" and STOPPED in runaway.failure, runaway.failure
    assert runaway.val_bpb is None and runaway.forward_flops_per_token is None  # never scored
    ceiling = baseline.cpu_seconds * MAX_FLOP_SCALE * (1 + TOLERANCE.seconds)
    assert ceiling < runaway.cpu_seconds < ceiling + 20 and runaway.wall_seconds < 300
    assert budget_run["kept"][:7] != runaway.commit
    assert ("runaway: trains until it is stopped", "over-budget") in budget_run["proposer"].feedbacks


def test_rows_record_what_was_measured_and_an_honest_change_keeps_to_its_budget(budget_run):
    rows = {name: row for name, row in budget_run["rows"].items() if STOPPED not in row.failure}  # scored ones
    for row in rows.values():
        assert row.cpu_seconds > 1 and row.forward_flops_per_token > 0  # measured outside the kernel
        assert 0 < row.forward_us_per_token < 1e4  # the scorer's compute time per token of its evaluation
        # the harness's count; rows keep tokens in thousands
        assert row.flops == pytest.approx(row.tokens_m * 1e6 * TINY_FLOPS_PER_TOKEN, abs=500 * TINY_FLOPS_PER_TOKEN)
    assert budget_run["rows"]["cheat"].cpu_seconds > rows["baseline (seed 0)"].cpu_seconds
    if budget_run["kind"] == "flops":
        assert rows["honest"].status in ("keep", "discard"), rows["honest"].failure
