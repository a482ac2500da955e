"""The fixed harness: the part of the workbench the agent never edits.

Data sources and prepare (one time), the tokenizer, the training dataloader and the val_bpb metric.
"""
from autoresearch_kernel.harness.data import Prepared, load_prepared
from autoresearch_kernel.harness.dataloader import train_batches
from autoresearch_kernel.harness.evaluate import EvalResult, evaluate_bpb
from autoresearch_kernel.harness.prepare import default_data_dir, prepare
from autoresearch_kernel.harness.profiles import PROFILES, Profile, get_profile

# The sandbox notebook's API: `run = harness.start(...)` in its set-up cell, `harness.finish(run, model)`
# in its last cell, and the `run` object (an Experiment) in between.
from autoresearch_kernel.harness.experiment import Experiment, TrainingFailed, start
from autoresearch_kernel.harness.finish import finish
