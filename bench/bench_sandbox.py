"""What the sandbox costs, on this machine: the jail around an experiment, and the scorer outside it.

- experiment wall time, jailed and not: the shipped template (cpu profile, a token budget) run by the runner
  exactly as the loop runs it (EVALUATE=False, the kernel exports the model), alternating the two, medians
- the scorer: the same trained model scored by the warm, jailed scorer (first request: start-up included;
  then warm requests), against the harness's evaluation of the eager model in this process (what the kernel
  used to compute), with the two values side by side
- per candidate: the static pre-filter (notebook validation, harness-cell shape, code rules)
- per experiment: the package-source and prepared-data verification

Run: .venv/bin/python bench/bench_sandbox.py [--repeats 3] [--device cuda]   (about three minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from autoresearch_kernel.harness.data import training_files
from autoresearch_kernel.harness.evaluate import evaluate_bpb
from autoresearch_kernel.harness.finish import evaluation_precision, export_program
from autoresearch_kernel.harness.parameters import ExperimentParameters
from autoresearch_kernel.harness.prepare import prepare
from autoresearch_kernel.integrity import jail
from autoresearch_kernel.integrity.scorer import Scorer

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "notebooks" / "train_template.ipynb"
STEP_TOKENS = 8 * 256  # the cpu profile's tokens per optimizer step


def trained_template_model(data_dir: Path, folder: Path, device: str = "cpu"):
    """The template's cells run here (parameters overridden, a two-step token budget): (model, run)."""
    notebook = json.loads(TEMPLATE.read_text())  # plain JSON: the GPU machine may lack Jupyter packages
    code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    namespace: dict = {}
    exec(code[0], namespace)
    namespace.update(DATA_DIR=str(data_dir), DEVICE=device, BUDGET_TOKENS=2 * STEP_TOKENS,
                     METRICS_PATH=str(folder / "bench.metrics.json"))
    for source in code[1:-1]:
        exec(source, namespace)
    return namespace["model"], namespace["run"]


def timed(function, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def experiment_wall_times(data_dir: Path, scratch: Path, repeats: int, steps: int) -> None:
    from autoresearch_kernel.execution.runner import run_notebook

    walls: dict[bool, list[float]] = {False: [], True: []}
    for index in range(repeats):
        for jailed in (False, True):  # alternating, so drift in the machine's load hits both alike
            folder = scratch / f"run-{index}-{int(jailed)}"
            folder.mkdir()
            output = folder / "experiment.ipynb"
            parameters = ExperimentParameters(data_dir=str(data_dir), device="cpu", budget_tokens=steps * STEP_TOKENS,
                                              metrics_path=str(output.with_suffix(".metrics.json")), evaluate=False)
            cage = jail.Jail(readonly=(TEMPLATE, *training_files(data_dir, "cpu")), writable=(folder,)) if jailed else None
            result = run_notebook(TEMPLATE, output, parameters.for_papermill(), timeout_s=600, cwd=folder, jail=cage)
            assert result.ok, result.failure
            walls[jailed].append(result.wall_seconds)
    plain, jailed = statistics.median(walls[False]), statistics.median(walls[True])
    print(f"experiment wall time, {steps} training steps (median of {repeats}):")
    print(f"  without the jail:                          {plain:6.2f} s  {sorted(round(w, 2) for w in walls[False])}")
    print(f"  in the jail:                               {jailed:6.2f} s  {sorted(round(w, 2) for w in walls[True])}")
    print(f"  the jail's cost per experiment:            {jailed - plain:+6.2f} s ({100 * (jailed / plain - 1):+.1f}%)")


def scorer_figures(data_dir: Path, scratch: Path, repeats: int, device: str) -> None:
    model, run = trained_template_model(data_dir, scratch, device)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    programs = scratch / "programs"
    programs.mkdir()
    with evaluation_precision(run.device):
        export_s, (program, failure) = timed(
            lambda: export_program(model, programs / "bench.program.pt2", run.profile.seq_len, run.device), repeats)
    assert failure is None, failure
    cage = jail.Jail(readonly=(data_dir / "cpu", programs), gpu=device.startswith("cuda"))
    bf16 = device.startswith("cuda")
    kernel_times, scorer_times = [], []
    with Scorer(data_dir, "cpu", device, cage if jail.unavailable_reason() is None else None) as scorer:
        first = scorer.score(program, bf16)
        assert first.ok, first.failure
        for _ in range(repeats):  # alternating, so drift in the machine's load hits both alike
            with evaluation_precision(run.device):
                kernel_s, kernel = timed(lambda: evaluate_bpb(model, run.data, run.device), 1)
            warm_s, warm = timed(lambda: scorer.score(program, bf16), 1)
            kernel_times.append(kernel_s)
            scorer_times.append(warm_s)
    kernel_s, warm_s = statistics.median(kernel_times), statistics.median(scorer_times)
    print(f"model: template cpu baseline on {device}, {params:.1f}M parameters, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; program file {program.stat().st_size / 2**20:.1f} MB")
    print(f"export (torch.export + save, every run):     {export_s:6.2f} s")
    print(f"in-kernel evaluation (eager, what it was):   {kernel_s:6.2f} s  val_bpb {kernel.val_bpb:.6f}")
    print(f"scorer, first request (start-up included):   {first.seconds:6.2f} s")
    print(f"scorer, warm (load + evaluate + causality):  {warm_s:6.2f} s  val_bpb {warm.val_bpb:.6f} "
          f"(|diff| {abs(warm.val_bpb - kernel.val_bpb):.1e})")
    print(f"scorer / in-kernel evaluation:               {warm_s / kernel_s:6.2f}x")


def static_figures(data_dir: Path, repeats: int) -> None:
    import nbformat

    from autoresearch_kernel.integrity.shape import check_structure, contract_cells
    from autoresearch_kernel.integrity.static import check_cells
    from autoresearch_kernel.loop.guard import Guard
    from autoresearch_kernel.workspace.notebook import is_contract

    notebook = nbformat.read(TEMPLATE, as_version=4)
    agent = [(i, c.source) for i, c in enumerate(notebook.cells) if c.cell_type == "code" and not is_contract(c)]
    context = [c.source for c in contract_cells(notebook)]

    def static_checks():
        nbformat.validate(notebook)
        assert check_structure(notebook, notebook) is None
        assert check_cells(agent, context) == []

    static_s, _ = timed(static_checks, 5 * repeats)
    print(f"static pre-filter per candidate:             {static_s * 1000:6.1f} ms")
    guard = Guard()
    guard.snapshot(str(data_dir), "cpu", strict=True)
    verify_s, _ = timed(lambda: (guard.verify_sources(), guard.verify_data()), 5 * repeats)
    print(f"source + data verification per experiment:   {verify_s * 1000:6.1f} ms (cpu profile data)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="training steps of each timed experiment")
    parser.add_argument("--device", default="cpu", help="cpu | cuda: where the model trains and is scored")
    args = parser.parse_args()
    if jail.unavailable_reason():
        print(f"no jail on this machine: {jail.unavailable_reason()}")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data_dir = scratch / "data"
        prepare(source="embedded", profile="cpu", data_dir=data_dir, progress=False)
        scorer_figures(data_dir, scratch, args.repeats, args.device)
        if args.device == "cpu":
            if jail.unavailable_reason() is None:
                experiment_wall_times(data_dir, scratch, args.repeats, args.steps)
            static_figures(data_dir, args.repeats)


if __name__ == "__main__":
    main()
