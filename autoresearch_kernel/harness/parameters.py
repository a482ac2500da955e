"""What each experiment is given: one definition for the template's parameters cell, `harness.start`, the
loop and run-once.

The notebook's parameters cell spells these fields in upper case (papermill overrides them by name), its
set-up cell passes them to `harness.start` under these names, and the loop and run-once build them here;
tests/test_parameters.py checks that the template and `harness.start` agree with this class.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ExperimentParameters:
    profile: str = "cpu"  # cpu | gpu: sizes of the prepared data and of the evaluation
    data_dir: str = ""  # prepared data folder; "" means the default
    device: str = "auto"  # auto picks cuda, then mps, then cpu
    seed: int = 0
    budget_seconds: float = 0.0  # > 0: wall-clock training seconds (warm-up excluded); all 0: the profile's
    budget_tokens: int = 0  # > 0: a fixed number of training tokens instead (deterministic)
    metrics_path: str = "metrics.json"
    evaluate: bool = True  # False in the loop: its scorer measures the model outside the kernel
    budget_flops: float = 0.0  # > 0: training FLOPs instead, as the harness counts them (deterministic)

    def for_papermill(self) -> dict:
        """The parameters cell's names and values, as papermill injects them."""
        return {field.name.upper(): getattr(self, field.name) for field in dataclasses.fields(self)}

    def replace(self, **changes) -> ExperimentParameters:
        return dataclasses.replace(self, **changes)
