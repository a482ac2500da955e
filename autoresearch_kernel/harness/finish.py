"""The notebook's last cell: checkpoint, exported program, val_bpb, metrics.json, summary and loss curve.

`finish(run, model)` saves the trained weights before anything can go wrong in evaluation (a crash in
evaluation must not lose the training) and exports the model as a `torch.export` program. Then:

- run by hand (`run.evaluate`): it scores the model with the harness's own `evaluate_bpb`, writes
  metrics.json atomically and prints the reference's summary block, line for line, so that tools that grep
  `val_bpb:` or `peak_vram_mb:` work on our logs too;
- run by the loop: this kernel runs candidate code and measures nothing. It writes the training figures
  (informative only) and leaves the program to the loop's scorer (integrity/scorer.py), which measures it
  outside the jail and appends the summary to the executed notebook.
"""
from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path

import torch
from torch import nn

from autoresearch_kernel.harness.evaluate import evaluate_bpb
from autoresearch_kernel.harness.experiment import Experiment, smoothed_curve
from autoresearch_kernel.harness.metrics import STATUS_OK, Metrics, write_metrics

# Dense bf16 tensor-core peak of common accelerators, FLOP/s, from the vendors' datasheets (the figures
# "with sparsity" halved). Matched against torch.cuda.get_device_name() in this order: the first entry
# whose every word appears in the name wins, so the specific variants come before the generic ones.
# A device that matches none has an unknown peak, and its MFU is reported as unknown, not guessed.
PEAK_BF16_FLOPS = (
    (("H100", "NVL"), 835e12),
    (("H100", "PCIe"), 756e12),
    (("H100",), 989.5e12),  # SXM (and the GH200's H100)
    (("H200",), 989.5e12),
    (("H800",), 989.5e12),
    (("B200",), 2250e12),
    (("A100",), 312e12),
    (("A800",), 312e12),
    (("L40S",), 362e12),
    (("L40",), 181e12),
    (("L4",), 121e12),
    (("A10G",), 125e12),  # NVIDIA publishes no separate figure for AWS's A10 variant: the A10's
    (("A10",), 125e12),
    (("A6000",), 155e12),  # RTX A6000
    (("RTX", "4090"), 165e12),  # GeForce rates with fp32 accumulation, the way PyTorch multiplies
    (("RTX", "3090"), 71e12),
    (("MI300X",), 1307e12),
)

SUMMARY_NAMES = (
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "depth",
)


def finish(run: Experiment, model: nn.Module) -> None:
    """Checkpoint, evaluate, record and summarise the run (the record is in `run.metrics_path`)."""
    run.stop_counting()  # a run that ended before its first tick
    base = unwrap(model)
    checkpoint = save_checkpoint(base, checkpoint_path(run.metrics_path))
    # The program is what the loop's scorer measures: nothing else this kernel writes is believed.
    # Traced under the evaluation's precision: an exported graph keeps the dtypes it was traced with, so the
    # clean process, which scores it under the same autocast, computes exactly what this kernel computes.
    with evaluation_precision(run.device):
        program, export_failure = export_program(base, program_path(run.metrics_path), run.profile.seq_len,
                                                 run.device)
    val_bpb = None
    if run.evaluate:
        try:
            val_bpb = round(evaluate(run, model), 6)
        except BaseException as error:
            run.record_failure(f"evaluation failed: {type(error).__name__}: {error}".splitlines()[0])
            raise

    num_params = sum(p.numel() for p in base.parameters())
    depth = getattr(base, "depth", None)
    metrics = run.metrics(
        status=STATUS_OK,
        val_bpb=val_bpb,
        peak_vram_mb=round(peak_memory_mb(run.device), 1),
        mfu_percent=mfu_percent(run, base),
        num_params_M=round(num_params / 1e6, 3),
        depth=int(depth) if depth is not None else None,
        checkpoint=str(checkpoint),
        program=str(program) if program else None,
        export_failure=export_failure,
    )
    write_metrics(run.metrics_path, metrics)
    show_loss_curve(run)
    if run.evaluate:
        print(summary(metrics), flush=True)
    else:
        print(f"trained {run.num_steps} steps; the loop's scorer measures val_bpb outside this kernel", flush=True)


def evaluate(run: Experiment, model: nn.Module) -> float:
    """val_bpb through the harness's evaluate_bpb, under `evaluation_precision`."""
    with evaluation_precision(run.device):
        result = evaluate_bpb(model, run.data, run.device)
    print(f"evaluation: {result.tokens:,} tokens in {result.seconds:.1f} s", flush=True)
    return result.val_bpb


def evaluation_precision(device: torch.device):
    """bf16 autocast on CUDA, as the reference evaluates; full precision elsewhere. The clean re-score uses
    the same (integrity/scorer.py), so both processes run the exported program alike."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a torch.compile wrapper, so checkpoints carry plain parameter names."""
    return getattr(model, "_orig_mod", model)


def checkpoint_path(metrics_path: Path) -> Path:
    """Next to the metrics: `metrics.json` -> `checkpoint.pt`, `run7.metrics.json` -> `run7.checkpoint.pt`."""
    stem = metrics_path.name.removesuffix(".json").removesuffix("metrics")
    return metrics_path.with_name(f"{stem}checkpoint.pt")


def program_path(metrics_path: Path) -> Path:
    """Next to the metrics: `run7.metrics.json` -> `run7.program.pt2` (the loop derives it the same way)."""
    stem = Path(metrics_path).name.removesuffix(".json").removesuffix("metrics")
    return Path(metrics_path).with_name(f"{stem}program.pt2")


def export_program(model: nn.Module, path: Path, seq_len: int, device: torch.device) -> tuple[Path | None, str | None]:
    """torch.export of the eager model (batch dimension dynamic, sequence length the profile's), saved with
    torch.export.save; returns (path, None), or (None, why) when the model cannot be exported."""
    was_training = model.training
    model.eval()
    try:
        example = torch.zeros(2, seq_len, dtype=torch.long, device=device)
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        with torch.no_grad():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".tmp-{path.name}")  # torch.export.save wants a name ending in .pt2
        torch.export.save(program, temporary)
        temporary.replace(path)
        return path, None
    except Exception as error:  # any failure is recorded, not raised: the run still gets its score
        reason = f"{type(error).__name__}: {error}".strip().splitlines()[0][:300]
        print(f"export: the model could not be exported for the clean re-score ({reason})", flush=True)
        return None, reason
    finally:
        model.train(was_training)


def save_checkpoint(model: nn.Module, path: Path) -> Path:
    """The model's state_dict on the CPU: plain tensors, loadable with `torch.load(..., weights_only=True)`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu") for name, tensor in model.state_dict().items()}
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(state, temporary)
    temporary.replace(path)
    return path


def peak_memory_mb(device: torch.device) -> float:
    """CUDA's peak allocated memory on a GPU; elsewhere the peak resident set of this process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def device_peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak from the table, or None when it is not a listed GPU."""
    if device.type != "cuda":
        return None
    return peak_flops(torch.cuda.get_device_name(device))


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak of the GPU called `device_name` (as CUDA names it), or None when it is not listed."""
    for words, flops in PEAK_BF16_FLOPS:
        if all(word in device_name for word in words):
            return flops
    return None


def flops_per_token(model: nn.Module) -> float:
    """`model.flops_per_token` when the model states it; else 6 x the parameters outside embeddings."""
    stated = getattr(model, "flops_per_token", None)
    if stated is not None:
        return float(stated() if callable(stated) else stated)
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return 6.0 * sum(p.numel() for p in model.parameters() if id(p) not in embedded)


def mfu_percent(run: Experiment, model: nn.Module) -> float | None:
    """Model FLOPs utilisation of the timed steps against the detected device's peak; None if unknown."""
    peak = device_peak_flops(run.device)
    rate = run.tokens_per_second()
    if peak is None or rate is None:
        return None
    return round(100 * flops_per_token(model) * rate / peak, 2)


def summary(metrics: Metrics) -> str:
    """The reference's block: `---`, then one `name: value` line per figure, values aligned in column 19."""
    formats = {
        "val_bpb": "{:.6f}",
        "training_seconds": "{:.1f}",
        "total_seconds": "{:.1f}",
        "peak_vram_mb": "{:.1f}",
        "mfu_percent": "{:.2f}",
        "total_tokens_M": "{:.1f}",
        "num_steps": "{}",
        "num_params_M": "{:.1f}",
        "depth": "{}",
    }
    lines = ["---"]
    for name in SUMMARY_NAMES:
        value = getattr(metrics, name)
        text = "unknown" if value is None else formats[name].format(value)
        lines.append(f"{name + ':':<18}{text}")
    return "\n".join(lines)


def show_loss_curve(run: Experiment) -> None:
    """Training loss per step, inline in the executed notebook (nothing is shown outside a notebook)."""
    if not run.losses or not _in_notebook():
        return
    import matplotlib.pyplot as plt
    from IPython.display import display

    figure, axes = plt.subplots(figsize=(7, 3.2))
    steps = range(len(run.losses))
    axes.plot(steps, run.losses, color="tab:blue", linewidth=0.8, alpha=0.4, label="loss")
    axes.plot(steps, smoothed_curve(run.losses), color="tab:blue", linewidth=1.6, label="smoothed")
    finite = [loss for loss in run.losses if math.isfinite(loss)]
    if finite:
        axes.set_ylim(min(finite) - 0.1, min(max(finite), finite[0]) + 0.1)
    axes.set_xlabel("step")
    axes.set_ylabel("training loss (nats)")
    axes.set_title(f"{run.profile.name} profile, {run.device.type}, seed {run.seed}")
    axes.legend(loc="upper right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    display(figure)
    plt.close(figure)


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"
