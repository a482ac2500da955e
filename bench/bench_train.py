"""Training figures of notebooks/train_template.ipynb, measured by running the notebook's own cells.

CPU (default):
  1. tokens/s of the notebook's training loop (harness batches, tick, LR schedule) against a plain PyTorch
     loop of the same model, optimizers and batch size fed from pre-built batches, alternating in one
     process; the ratio shows what the harness costs (goal: >= 1.0 within noise);
  2. val_bpb of the cpu baseline after its default budget, over 3 seeds (mean and spread).
GPU (--gpu): the gpu profile for a short budget; prints tokens/s, MFU, peak memory and the summary.

  python bench/bench_train.py [--data-dir DIR] [--seeds 3] [--steps 20] [--rounds 3]
  python bench/bench_train.py --gpu [--budget-seconds 60] [--data-dir DIR]

Without --data-dir the embedded corpus is prepared for the profile into a temporary folder first; for
--gpu its validation split is too small for the gpu profile's 20M evaluation tokens, so the bench then
evaluates on the first EMBEDDED_GPU_EVAL_TOKENS only (a throughput figure, not a comparable val_bpb).
The cells run in this process (json-read, exec'd in order), so no Jupyter kernel is needed.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autoresearch_kernel import harness  # noqa: E402
from autoresearch_kernel.harness.dataloader import train_batches  # noqa: E402

TEMPLATE = ROOT / "notebooks" / "train_template.ipynb"
OUT = Path(tempfile.mkdtemp(prefix="bench_train_out_"))  # metrics and checkpoints of the bench's runs
AGENT_CELLS = ("hyperparameters", "model", "optimizer", "training")
EMBEDDED_GPU_EVAL_TOKENS = 48 * 2048


def notebook_cells(path: Path = TEMPLATE) -> dict[str, str]:
    """The notebook's code cells by id."""
    notebook = json.loads(path.read_text())
    return {cell["id"]: "".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"}


def execute(cells: dict[str, str], run, ids=AGENT_CELLS, quiet: bool = True) -> dict:
    """Run the agent's cells against `run`, as the kernel would; returns their namespace."""
    namespace = {"run": run, "harness": harness}
    output = io.StringIO() if quiet else sys.stdout
    with contextlib.redirect_stdout(output):
        for cell_id in ids:
            exec(compile(cells[cell_id], f"<cell {cell_id}>", "exec"), namespace)
    return namespace


def start(profile, data_dir, seed=0, **budget):
    with contextlib.redirect_stdout(io.StringIO()):
        return harness.start(profile=profile, data_dir=data_dir, seed=seed, metrics_path=OUT / "metrics.json", **budget)


def notebook_loop_rate(cells, data_dir, steps) -> float:
    """Tokens/s of the notebook's training cell over `steps` steps (its warm-up step excluded)."""
    namespace = execute(cells, start("cpu", data_dir, budget_tokens=1), AGENT_CELLS[:3])
    run = start("cpu", data_dir, budget_tokens=(steps + 1) * namespace["TOTAL_BATCH_SIZE"])
    namespace["run"] = run
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(cells["training"], "<cell training>", "exec"), namespace)
    return run.tokens_per_second()


def plain_loop_rate(cells, data_dir, steps) -> float:
    """Tokens/s of a plain PyTorch loop: same model, optimizers and batch, batches built beforehand."""
    namespace = execute(cells, start("cpu", data_dir, budget_tokens=1), AGENT_CELLS[:3])
    model, optimizers = namespace["model"], namespace["optimizers"]
    batch_size, total = namespace["DEVICE_BATCH_SIZE"], namespace["TOTAL_BATCH_SIZE"]
    accumulation = total // (batch_size * namespace["SEQ_LEN"])
    source = train_batches(namespace["run"].data, batch_size, device="cpu")
    batches = [next(source)[:2] for _ in range((steps + 1) * accumulation)]
    started = None
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()  # the first step is warm-up, as on the harness's clock
        for x, y in batches[step * accumulation : (step + 1) * accumulation]:
            loss = model(x, y)
            (loss / accumulation).backward()
        for optimizer in optimizers:
            optimizer.step()
        model.zero_grad(set_to_none=True)
        loss.item()
    return steps * total / (time.perf_counter() - started)


def baseline(cells, data_dir, profile, seed, quiet=True, **budget):
    """One whole experiment (agent's cells, then harness.finish); returns its metrics.json and the run."""
    run = start(profile, data_dir, seed=seed, **budget)
    namespace = execute(cells, run, quiet=quiet)
    output = io.StringIO() if quiet else sys.stdout
    with contextlib.redirect_stdout(output):
        harness.finish(run, namespace["model"])
    return json.loads(run.metrics_path.read_text()), run


def prepared(profile, data_dir: str | None, scratch: Path):
    """(data_dir, profile): the given folder, or the embedded corpus prepared into `scratch`."""
    if data_dir:
        return data_dir, profile
    from autoresearch_kernel.harness.prepare import prepare

    if profile == "gpu":
        profile = dataclasses.replace(harness.get_profile("gpu"), eval_tokens=EMBEDDED_GPU_EVAL_TOKENS)
    print(f"preparing the embedded corpus for profile {harness.get_profile(profile).name} in {scratch} ...", flush=True)
    prepare(source="embedded", profile=profile, data_dir=scratch, progress=False)
    return str(scratch), profile


def cpu_bench(args, data_dir, profile) -> None:
    cells = notebook_cells()
    print(f"cpu: {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    notebook_rates, plain_rates = [], []
    for round_ in range(args.rounds):
        notebook_rates.append(notebook_loop_rate(cells, data_dir, args.steps))
        plain_rates.append(plain_loop_rate(cells, data_dir, args.steps))
        print(f"  round {round_ + 1}: notebook {notebook_rates[-1]:,.0f} tok/s, plain {plain_rates[-1]:,.0f} tok/s", flush=True)
    notebook_rate, plain_rate = statistics.median(notebook_rates), statistics.median(plain_rates)
    print(f"training loop: notebook {notebook_rate:,.0f} tok/s vs plain PyTorch {plain_rate:,.0f} tok/s "
          f"(median of {args.rounds}), ratio {notebook_rate / plain_rate:.3f}", flush=True)

    results = []
    for seed in range(args.seeds):
        metrics, _ = baseline(cells, data_dir, "cpu", seed, budget_seconds=args.budget_seconds)
        results.append(metrics)
        print(f"  seed {seed}: val_bpb {metrics['val_bpb']:.6f}, {metrics['num_steps']} steps, "
              f"{metrics['total_tokens_M']:.3f}M tokens, training {metrics['training_seconds']:.1f} s, "
              f"total {metrics['total_seconds']:.1f} s, peak RSS {metrics['peak_vram_mb']:.0f} MB", flush=True)
    values = [m["val_bpb"] for m in results]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    print(f"cpu baseline val_bpb: mean {statistics.mean(values):.4f}, stdev {spread:.4f}, "
          f"range {min(values):.4f}..{max(values):.4f} over {len(values)} seeds", flush=True)


def gpu_bench(args, data_dir, profile) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA GPU")
    print(f"gpu: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    cells = notebook_cells()
    started = time.perf_counter()
    metrics, run = baseline(cells, data_dir, profile, seed=0, quiet=False, budget_seconds=args.budget_seconds)
    print(f"gpu profile, {args.budget_seconds:.0f} s budget: {run.tokens_per_second():,.0f} tok/s over the timed "
          f"steps, MFU {metrics['mfu_percent']}%, peak memory {metrics['peak_vram_mb']:.0f} MB, val_bpb "
          f"{metrics['val_bpb']:.6f}, wall {time.perf_counter() - started:.0f} s", flush=True)
    print(f"export for the clean re-score: {metrics.get('export_failure') or 'ok, ' + str(metrics.get('program'))}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="the gpu profile on a CUDA GPU")
    parser.add_argument("--data-dir", default=None, help="prepared data (default: prepare into a temp folder)")
    parser.add_argument("--budget-seconds", type=float, default=None, help="training budget (cpu: 45, gpu: 60)")
    parser.add_argument("--seeds", type=int, default=3, help="cpu: seeds for the val_bpb spread")
    parser.add_argument("--steps", type=int, default=20, help="cpu: timed steps per throughput round")
    parser.add_argument("--rounds", type=int, default=3, help="cpu: alternating throughput rounds")
    args = parser.parse_args()
    profile = "gpu" if args.gpu else "cpu"
    if args.budget_seconds is None:
        args.budget_seconds = 60.0 if args.gpu else harness.get_profile("cpu").budget_seconds
    with tempfile.TemporaryDirectory(prefix="bench_train_") as scratch:
        data_dir, profile = prepared(profile, args.data_dir, Path(scratch))
        (gpu_bench if args.gpu else cpu_bench)(args, data_dir, profile)


if __name__ == "__main__":
    main()
