"""Shared fixtures. `prepared_dir`: the embedded corpus prepared once per test session (cpu profile)."""
from __future__ import annotations

from pathlib import Path

import pytest

from autoresearch_kernel.harness.prepare import prepare


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """The data_dir Path holding the embedded corpus prepared for profile "cpu" (about 1 s, once).

    Use it as `load_prepared(data_dir=prepared_dir, profile="cpu")` or pass `DATA_DIR=str(prepared_dir)`,
    `PROFILE="cpu"` to a notebook. Treat it as read-only: other tests share it.
    """
    data_dir = tmp_path_factory.mktemp("prepared")
    prepare(source="embedded", profile="cpu", data_dir=data_dir, progress=False)
    return data_dir
