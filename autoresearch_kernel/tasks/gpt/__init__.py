"""The bundled GPT task: the reference's workload, val_bpb of a small GPT trained on the prepared corpus.

Its sandbox is notebooks/train_template.ipynb, its preparation `autoresearch prepare` (the training split is
all the experiment's jail holds, the validation split only the scorer's), its artifact the model exported
with torch.export, its scorer integrity/scorer.py (val_bpb on the validation split and a causality check),
its budget the profile's training seconds (or `--budget-tokens`), its noise the profile's measured default.
"""
from autoresearch_kernel.workspace.notebook import SANDBOX
from autoresearch_kernel.tasks import Budget, Metric, Task

TASK = Task(
    name="gpt",
    metric=Metric("val_bpb", lower_is_better=True, unit="bits per byte"),
    sandbox=SANDBOX,
    artifact="program",
    scorer="autoresearch_kernel.integrity.scorer:score_program",
    budget=Budget("seconds", 0.0),  # 0: the profile's (300 s gpu, 45 s cpu)
    noise_sd=None,  # the profile's measured default (gate.PROFILE_NOISE_SD)
    baseline_seeds=3,
)
