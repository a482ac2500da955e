"""What one scoring request costs in the scorer's child, without its process and jail: the shipped template's
model (cpu profile, trained two steps), exported as harness.finish exports it, loaded, checked and scored by
`integrity.scorer.score_program` on the prepared data; the median of a few requests (wall and CPU time: on a
loaded machine the CPU time is the steadier figure), and the val_bpb. Then what a scorer's start costs (a loop
starts one; a task's file scorer one per experiment): the process's start and its first request, jailed where
bubblewrap runs, with an empty bytecode cache (as before integrity/bytecode.py) and with the trusted one.

Run: .venv/bin/python bench/bench_scorer.py [--repeats 5] [--data-dir D]   (about a minute on 2 cores)
The same script run against an older checkout (PYTHONPATH=<it>) gives the figure before a change.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_sandbox import trained_template_model

from autoresearch_kernel.harness.data import load_prepared
from autoresearch_kernel.harness.finish import export_program
from autoresearch_kernel.harness.prepare import prepare
from autoresearch_kernel.integrity import bytecode, jail
from autoresearch_kernel.integrity.scorer import Scorer, read_program, score_program


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None, help="prepared data (default: prepared afresh)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="bench-scorer-") as scratch:
        folder = Path(scratch)
        data_dir = args.data_dir or folder / "data"
        if args.data_dir is None:
            prepare(profile="cpu", data_dir=data_dir, progress=False)
        data = load_prepared(data_dir, "cpu")
        model, _ = trained_template_model(data_dir, folder)
        program, failure = export_program(model, folder / "bench.program.pt2", data.profile.seq_len,
                                          torch.device("cpu"))
        assert failure is None, failure
        walls, cpus, value = [], [], None
        for _ in range(args.repeats):
            started, cpu = time.perf_counter(), time.process_time()
            value = score_program(read_program(program), data, "cpu", False).val_bpb
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
        print(f"score_program over {args.repeats} requests: wall median {statistics.median(walls):.2f} s "
              f"(min {min(walls):.2f}), CPU time median {statistics.median(cpus):.2f} s (min {min(cpus):.2f}); "
              f"val_bpb {value:.6f}")
        folder.chmod(0o755)  # a root run's jail runs as nobody: the program and the data must be readable
        scorer_jail = jail.Jail(readonly=(folder,)) if jail.unavailable_reason() is None else None
        trusted = bytecode.scorer_cache
        for name, cache in (("an empty bytecode cache", lambda: None), ("the trusted bytecode cache", trusted)):
            bytecode.scorer_cache = cache  # what the scorer's start reads
            cache()  # filled before the clock starts: once per machine
            started = time.perf_counter()
            with Scorer(data_dir, "cpu", "cpu", scorer_jail) as scorer:
                scorer._ensure_started()
                ready = time.perf_counter() - started
                first = scorer.score(program)
            print(f"scorer start with {name} ({'jailed' if scorer_jail else 'not jailed'}): ready after {ready:.2f} s, "
                  f"first request {first.seconds:.2f} s, {ready + first.seconds:.2f} s in all")
        bytecode.scorer_cache = trusted


if __name__ == "__main__":
    main()
