"""The bundled circle-packing task: 26 circles in the unit square, maximise the sum of their radii.

A workload with a known optimum (the best published packing sums to about 2.635) that runs on a CPU in
seconds, so that the loop, the proposers and the gate can be exercised and compared quickly. The sandbox
(`sandbox.ipynb`, committed on the run branch as notebooks/circle_packing.ipynb) optimises centres and radii
with plain numpy for a budget of gradient steps and writes the packing (`packing.json`); the scorer
(`scorer.py`, in a jail of its own) verifies the geometry exactly and returns the sum, or a failure.
Deterministic for a seed and a budget, so its noise is 0: one baseline seed, any gain above the minimum
margin is kept.
"""
from pathlib import Path

from autoresearch_kernel.tasks import Budget, Metric, Task

HERE = Path(__file__).resolve().parent
CIRCLES = 26
BEST_KNOWN = 2.635  # the best published sum of radii for 26 circles (AlphaEvolve reports 2.635)

TASK = Task(
    name="circle-packing",
    metric=Metric("sum_radii", lower_is_better=False, unit="sum of radii"),
    sandbox="notebooks/circle_packing.ipynb",
    artifact="file",
    artifact_name="packing.json",
    scorer="autoresearch_kernel.tasks.circle_packing.scorer:score",
    budget=Budget("evaluations", 4000),  # gradient steps of the optimiser, all restarts together
    noise_sd=0.0,
    baseline_seeds=1,
    source=str(HERE / "sandbox.ipynb"),
    program=str(HERE / "program.md"),
)
