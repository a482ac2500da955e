"""One training run inside the sandbox notebook: the `run` object that `harness.start` returns.

The notebook's set-up cell calls `start(...)` with its parameters. The returned `Experiment` is all the
agent's code may use: the device, the profile, the training batches (every token served is counted), the
budget (`done()`, `progress()`), and `tick(step, loss)` once per optimizer step, which keeps the training
clock, prints the live progress line, records the loss curve and stops a run whose loss is NaN or exploding.

The clock follows the reference: the first few steps (compile, allocator warm-up) are not timed, and only
the time between ticks after them counts as training time. A token budget ignores the clock altogether,
so that the same seed gives the same val_bpb on the same machine. A FLOP budget does too: the first step
(from the first batch served to the first tick) runs under a FLOP counter (flops.py), and every token served
is then priced at that step's FLOPs per token, so a larger model gets fewer tokens for the same budget.
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.harness.flops import StepCounter
from autoresearch_kernel.harness.metrics import STATUS_FAILED, Metrics, write_metrics
from autoresearch_kernel.harness.profiles import Budget

# Steps left off the training clock: on CUDA the first ones compile (the reference skips 10); elsewhere
# only the first step pays a one-time cost (lazy allocation, thread-pool start).
WARMUP_STEPS_CUDA = 10
WARMUP_STEPS_OTHER = 1

# A loss above this (or NaN/inf) means training has diverged: the reference's threshold.
EXPLODING_LOSS = 100.0

# The progress line is printed at most this often (it also goes to the runner's log, line by line).
PROGRESS_EVERY_SECONDS = 5.0

# Smoothing of the loss shown on the progress line (the curve keeps every raw value).
LOSS_EMA_BETA = 0.9


class TrainingFailed(AutoresearchError):
    """Training diverged (NaN or exploding loss); metrics.json already records the failure."""


@dataclass
class Experiment:
    """The run's state. The notebook uses the methods; the report reads the fields."""

    device: torch.device
    profile: object  # the harness's Profile (seq_len, vocab_size, ...)
    seed: int
    data: object  # the prepared data, as the harness loaded and verified it
    metrics_path: Path
    budget_seconds: float | None  # exactly one of the three budgets is set
    budget_tokens: int | None
    warmup_steps: int
    budget_flops: float | None = None  # training FLOPs, as the harness counts them (flops.StepCounter)
    count_flops: bool = True  # count the first step's FLOPs (always under a FLOP budget)
    evaluate: bool = True  # False: the loop's scorer measures the model outside this kernel
    started_at: float = field(default_factory=time.perf_counter)
    tokens_served: int = 0
    num_steps: int = 0
    training_seconds: float = 0.0
    timed_tokens: int = 0  # tokens of the timed steps, for tokens/s and MFU
    losses: list[float] = field(default_factory=list)
    _last_tick: float | None = None
    _tokens_at_last_tick: int = 0
    _last_print: float = -math.inf
    _flops: StepCounter = field(default_factory=StepCounter)

    # ---- what the agent's cells use -------------------------------------------------------------------

    def batches(self, batch_size: int, seq_len: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        """Endless `(inputs, targets, epoch)` batches of the training split on `self.device`, counted."""
        from autoresearch_kernel.harness.dataloader import train_batches

        seq_len = seq_len or self.profile.seq_len
        if seq_len > self.profile.seq_len:
            raise AutoresearchError(
                f"seq_len {seq_len} is longer than the profile's {self.profile.seq_len}: the evaluation "
                "scores sequences of the profile's length, so train on at most that"
            )
        for x, y, epoch in train_batches(self.data, batch_size, seq_len, self.device, seed=self.seed):
            if self.count_flops and self.num_steps == 0:
                self._flops.start()  # the first step is counted, from its first batch to the first tick
            self.tokens_served += x.numel()
            yield x, y, epoch

    def tick(self, step: int, loss: torch.Tensor | float) -> None:
        """Once per optimizer step: clock, loss curve, progress line, divergence check."""
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
        loss_value = float(loss)  # on a GPU this waits for the step to finish, so the clock is honest
        if self._flops.counting:
            # inside the warm-up, so never on the clock (WARMUP_STEPS_* >= 1); the counter slows this step
            self._flops.stop(self.tokens_served)
        now = time.perf_counter()
        self.num_steps += 1
        if self._last_tick is not None and self.num_steps > self.warmup_steps:
            self.training_seconds += now - self._last_tick
            self.timed_tokens += self.tokens_served - self._tokens_at_last_tick
        self._last_tick, self._tokens_at_last_tick = now, self.tokens_served
        self.losses.append(loss_value)

        if not math.isfinite(loss_value) or loss_value > EXPLODING_LOSS:
            reason = f"training diverged: loss {loss_value} at step {step}"
            self.record_failure(reason)
            raise TrainingFailed(f"{reason}; try a lower learning rate or a smaller change")

        if now - self._last_print >= PROGRESS_EVERY_SECONDS or self.done():
            self._last_print = now
            print(self.progress_line(step), flush=True)

    def done(self) -> bool:
        """True once the budget (training seconds, tokens or FLOPs) is spent."""
        return self.progress() >= 1.0

    def progress(self) -> float:
        """Fraction of the budget spent, 0..1: the clock for time-based learning-rate schedules."""
        if self.budget_flops is not None:
            return min(1.0, (self.flops_used() or 0) / self.budget_flops)
        if self.budget_tokens is not None:
            return min(1.0, self.tokens_served / self.budget_tokens)
        return min(1.0, self.training_seconds / self.budget_seconds)

    def flops_used(self) -> int | None:
        """Training FLOPs so far: the tokens served at the counted first step's FLOPs per token (None before
        that step, or when nothing is counted)."""
        return self._flops.flops_for(self.tokens_served)

    def stop_counting(self) -> None:
        """End a count still running (a run that ended before its first tick)."""
        self._flops.stop(self.tokens_served)

    # ---- what the report and the progress line use ----------------------------------------------------

    def smoothed_loss(self) -> float:
        """The latest loss, smoothed (NaN before the first step)."""
        return smoothed_curve(self.losses[-200:])[-1] if self.losses else math.nan

    def tokens_per_second(self) -> float | None:
        return self.timed_tokens / self.training_seconds if self.training_seconds > 0 else None

    def progress_line(self, step: int) -> str:
        rate = self.tokens_per_second()
        rate_text = f"{rate:,.0f} tok/s" if rate else "warm-up"
        if self.budget_flops is not None:
            left = f"{max(0.0, self.budget_flops - (self.flops_used() or 0)) / 1e12:.3f} TFLOP left"
        elif self.budget_tokens is not None:
            left = f"{max(0, self.budget_tokens - self.tokens_served) / 1e6:.2f}M tokens left"
        else:
            left = f"{max(0.0, self.budget_seconds - self.training_seconds):.0f}s left"
        return (
            f"step {step:05d} | loss {self.smoothed_loss():.4f} | {rate_text} | "
            f"{100 * self.progress():3.0f}% done, {left}"
        )

    def elapsed(self) -> float:
        """Seconds since `start`: the summary's total_seconds."""
        return time.perf_counter() - self.started_at

    def record_failure(self, reason: str) -> None:
        """Write a failed metrics.json now, so the loop learns why even if nothing else runs."""
        write_metrics(self.metrics_path, self.metrics(status=STATUS_FAILED, failure=reason))

    def metrics(self, status: str, failure: str | None = None, **measured) -> Metrics:
        """This run's metrics record; `measured` fills what only the report knows (val_bpb, memory, ...)."""
        fields = dict(
            status=status,
            failure=failure,
            val_bpb=None,
            training_seconds=round(self.training_seconds, 1),
            total_seconds=round(self.elapsed(), 1),
            peak_vram_mb=None,
            mfu_percent=None,
            total_tokens_M=round(self.tokens_served / 1e6, 3),
            num_steps=self.num_steps,
            num_params_M=None,
            depth=None,
            seed=self.seed,
            device=self.device.type,
            profile=self.profile.name,
            budget_seconds=self.budget_seconds,
            budget_tokens=self.budget_tokens,
            checkpoint=None,
            budget_flops=self.budget_flops,
            flops=self.flops_used(),
            flops_per_token=self._flops.per_token(),
        )
        fields.update(measured)
        return Metrics(**fields)


def smoothed_curve(values: list[float], beta: float = LOSS_EMA_BETA) -> list[float]:
    """Exponential moving average of `values` with its start-up bias removed (as the reference shows loss)."""
    curve, ema = [], 0.0
    for i, value in enumerate(values):
        ema = beta * ema + (1 - beta) * value
        curve.append(ema / (1 - beta ** (i + 1)))
    return curve


def start(
    profile: str = "cpu",
    data_dir: str | os.PathLike | None = "",
    device: str = "auto",
    seed: int = 0,
    budget_seconds: float = 0.0,
    budget_tokens: int = 0,
    metrics_path: str | os.PathLike = "metrics.json",
    evaluate: bool = True,
    budget_flops: float = 0.0,
) -> Experiment:
    """Set up one experiment from the notebook's parameters: seed, device, verified data, budget.

    `evaluate=False` (the loop's experiments): only the training split is loaded, and `finish` exports the
    model for the loop's scorer instead of measuring it here.
    """
    from autoresearch_kernel.harness.data import load_prepared
    from autoresearch_kernel.harness.profiles import choose_budget, get_profile

    metrics_path = Path(metrics_path)
    # A metrics file from an earlier run at this path must never pass for this run's.
    metrics_path.unlink(missing_ok=True)
    chosen = pick_device(device)
    seed_everything(seed)
    profile_obj = get_profile(profile)
    data = load_prepared(data_dir or None, profile_obj, validation=bool(evaluate))
    budget = choose_budget(profile_obj, budget_seconds, budget_tokens, budget_flops)
    seconds, tokens, flops = budget.seconds, budget.tokens, budget.flops
    run = Experiment(
        device=chosen,
        profile=profile_obj,
        seed=int(seed),
        data=data,
        metrics_path=metrics_path,
        budget_seconds=seconds,
        budget_tokens=tokens,
        warmup_steps=WARMUP_STEPS_CUDA if chosen.type == "cuda" else WARMUP_STEPS_OTHER,
        evaluate=bool(evaluate),
        budget_flops=flops,
        # On CUDA the reference's time budget runs untouched (no counter around its compiled first step).
        count_flops=flops is not None or chosen.type != "cuda",
    )
    print(describe(run), flush=True)
    return run


def pick_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AutoresearchError("DEVICE is 'cuda' but torch sees no CUDA GPU: use DEVICE = 'auto' or 'cpu'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AutoresearchError("DEVICE is 'mps' but this torch has no MPS backend: use 'auto' or 'cpu'")
    return device


def seed_everything(seed: int) -> None:
    """Seed every generator the sandbox might draw from: Python's, NumPy's and torch's (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def describe(run: Experiment) -> str:
    budget = Budget(run.budget_seconds, run.budget_tokens, run.budget_flops).describe()
    device = run.device.type
    if device == "cuda":
        device = f"cuda ({torch.cuda.get_device_name(run.device)})"
    elif device == "cpu":
        device = f"cpu ({torch.get_num_threads()} threads)"
    return f"experiment: profile {run.profile.name}, device {device}, seed {run.seed}, budget {budget}, python {sys.version.split()[0]}, torch {torch.__version__}"
