"""What the jail's resource limits cost: one baseline run of the shipped template in the jail, as the loop runs it.

One process, one run (cpu profile, a token budget, seed 0: the same work and the same val_bpb every time), its
figures printed. Time it with the limits and without by pairing two checkouts (this one, and one before the
limits) under farm-bench, which alternates them and takes the ratio pair by pair:

    farm-bench -n 5 --timeout 1800 -- env PYTHONPATH=. .venv/bin/python bench/bench_limits.py \\
        --vs "env PYTHONPATH=/path/to/checkout-before .venv/bin/python bench/bench_limits.py"

The jail binds the package it was imported from, so PYTHONPATH chooses which jail (and which limits) runs.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from autoresearch_kernel.execution.runner import run_notebook
from autoresearch_kernel.harness.data import training_files
from autoresearch_kernel.harness.parameters import ExperimentParameters
from autoresearch_kernel.harness.prepare import default_data_dir, prepare
from autoresearch_kernel.harness.profiles import get_profile
from autoresearch_kernel.integrity import jail

TEMPLATE = Path(__file__).resolve().parents[1] / "notebooks" / "train_template.ipynb"
STEP_TOKENS = 8 * 256  # the cpu profile's tokens per optimizer step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps of the token budget")
    parser.add_argument("--data-dir", default=None, help="prepared data (default: the harness's, prepared if absent)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not all(path.exists() for path in training_files(data_dir, "cpu")):
        prepare(source="embedded", profile="cpu", data_dir=data_dir, progress=False)
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as folder:
        out = Path(folder) / "run"
        out.mkdir()
        output = out / "run.ipynb"
        parameters = ExperimentParameters(profile="cpu", data_dir=str(data_dir), device="cpu", seed=0,
                                          budget_seconds=0.0, budget_tokens=args.steps * STEP_TOKENS,
                                          metrics_path=str(output.with_suffix(".metrics.json")), evaluate=False)
        cell_jail = jail.Jail(readonly=(TEMPLATE, *training_files(data_dir, "cpu")), writable=(out,))
        started = time.monotonic()
        result = run_notebook(TEMPLATE, output, parameters.for_papermill(), timeout_s=1200, cwd=out,
                              device="cpu", jail=cell_jail)
        wall = time.monotonic() - started
    metrics = result.metrics or {}
    print(f"status {result.status} ({result.failure or 'ok'}); profile {get_profile('cpu').name}")
    print(f"wall {wall:.2f} s, training {metrics.get('training_seconds', float('nan')):.2f} s, "
          f"tokens {metrics.get('total_tokens_M', float('nan'))} M, final loss {metrics.get('final_loss')}")
    usage = getattr(result, "usage", None)
    if usage is not None:
        print(f"jail usage: {usage.cpu_seconds} CPU s, peak memory {usage.peak_memory_bytes} bytes")


if __name__ == "__main__":
    main()
