"""Integrity figures on CPU: what the guard costs.

- per keep: exporting the trained model (torch.export + save, inside harness.finish; paid by every run)
  and the clean-process re-score (a fresh interpreter: import, load the program, evaluate_bpb with its
  causality probe), next to the kernel's own evaluation of the same model for scale
- per candidate: the static checks (notebook validation, harness-cell shape, code rules)
- per experiment: the harness-source and prepared-data verification

The model is the shipped sandbox's cpu baseline (notebooks/train_template.ipynb), trained for two steps
in this process. Run: .venv/bin/python bench/bench_rescore.py [--repeats 3]   (about a minute on 2 cores)
With --device cuda the same model trains on the GPU (torch.compile, bf16 autocast, flex attention) and the
export and the bf16 re-score are measured there; the static figures are CPU work and are left out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from autoresearch_kernel import rescore
from autoresearch_kernel.harness.evaluate import evaluate_bpb
from autoresearch_kernel.harness.finish import export_program
from autoresearch_kernel.harness.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "notebooks" / "train_template.ipynb"


def trained_template_model(data_dir: Path, folder: Path, device: str = "cpu"):
    """The template's cells run here (parameters overridden, a two-step token budget): (model, run)."""
    notebook = json.loads(TEMPLATE.read_text())  # plain JSON: the GPU machine has no Jupyter packages
    code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    namespace: dict = {}
    exec(code[0], namespace)
    namespace.update(DATA_DIR=str(data_dir), DEVICE=device, BUDGET_TOKENS=2 * 2048,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu | cuda: where the model trains and is re-scored")
    args = parser.parse_args()
    bf16 = args.device.startswith("cuda")  # the harness evaluates under bf16 autocast on CUDA
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        prepare(source="embedded", profile="cpu", data_dir=scratch / "data", progress=False)
        model, run = trained_template_model(scratch / "data", scratch, args.device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        program = scratch / "bench.program.pt2"
        export_s, (path, failure) = timed(lambda: export_program(model, program, run.profile.seq_len, run.device),
                                          args.repeats)
        assert failure is None, failure
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            kernel_eval_s, kernel = timed(lambda: evaluate_bpb(model, run.data, run.device), args.repeats)
        rescore_s, clean = timed(lambda: rescore.rescore(path, scratch / "data", "cpu", args.device, bf16),
                                 args.repeats)
        assert clean.ok, clean.failure
        print(f"model: template cpu baseline on {args.device}, {params:.1f}M parameters, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; program file {path.stat().st_size / 2**20:.1f} MB")
        print(f"export (torch.export + save, every run):      {export_s:6.2f} s")
        print(f"clean-process re-score (per keep):            {rescore_s:6.2f} s  "
              f"(val_bpb {clean.val_bpb:.6f}, kernel {kernel.val_bpb:.6f}, |diff| {abs(clean.val_bpb - kernel.val_bpb):.1e})")
        print(f"  of which the evaluation itself (in-process): {kernel_eval_s:6.2f} s")
        print(f"re-score overhead per keep (export + clean):  {export_s + rescore_s:6.2f} s")
        if args.device == "cpu":
            static_figures(scratch / "data", args.repeats)


def static_figures(data_dir: Path, repeats: int) -> None:
    import nbformat
    from autoresearch_kernel.guard import Guard, check_structure, contract_cells, is_contract

    from autoresearch_kernel import codecheck

    notebook = nbformat.read(TEMPLATE, as_version=4)
    agent = [(i, c.source) for i, c in enumerate(notebook.cells) if c.cell_type == "code" and not is_contract(c)]
    context = [c.source for c in contract_cells(notebook)]

    def static_checks():
        nbformat.validate(notebook)
        assert check_structure(notebook, notebook) is None
        assert codecheck.check_cells(agent, context) == []

    static_s, _ = timed(static_checks, 5 * repeats)
    print(f"static checks per candidate (all agent cells): {static_s * 1000:6.1f} ms")

    guard = Guard()
    guard.snapshot(str(data_dir), "cpu", strict=True)
    verify_s, _ = timed(lambda: (guard.restore_sources(), guard.verify_data()), 5 * repeats)
    print(f"source + data verification per experiment:   {verify_s * 1000:6.1f} ms (cpu profile data)")


if __name__ == "__main__":
    main()
