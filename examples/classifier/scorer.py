"""The example task's scorer: the accuracy of the predictions the notebook wrote, on the held-out labels.

Runs outside the experiment, in a jail of its own; the labels are in `data.private`, which the experiment's
jail does not hold.
"""
import json
from pathlib import Path

import numpy as np


def accuracy(artifact: Path, data) -> float:
    predictions = np.asarray(json.loads(Path(artifact).read_text()), dtype=np.int64)
    labels = np.load(Path(data.private) / "test_y.npy")
    if predictions.shape != labels.shape:
        raise ValueError(f"expected {labels.shape[0]} predictions, got {predictions.shape}")
    return float((predictions == labels).mean())
