"""The example task's preparation: a synthetic two-class dataset, made by numpy with a fixed seed.

`prepare(public, private)` writes the training split and the unlabelled test inputs where the experiment can
read them (`public`), and the test labels where only the scorer can (`private`).
"""
from pathlib import Path

import numpy as np

FEATURES = 8


def make(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points whose class is a ring around the origin in the first two features; the rest is noise."""
    x = rng.normal(size=(count, FEATURES))
    radius = np.hypot(x[:, 0], x[:, 1]) + 0.3 * x[:, 2]
    return x, (radius > 1.2).astype(np.int64)


def prepare(public: Path, private: Path) -> None:
    rng = np.random.default_rng(0)
    train_x, train_y = make(600, rng)
    test_x, test_y = make(400, rng)
    np.savez(Path(public) / "train.npz", x=train_x, y=train_y)
    np.save(Path(public) / "test_x.npy", test_x)
    np.save(Path(private) / "test_y.npy", test_y)
