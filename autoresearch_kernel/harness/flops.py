"""FLOPs counted from the operators that really run (`torch.utils.flop_counter.FlopCounterMode`), not from a
formula the sandbox could edit.

- `StepCounter`: the harness counts one whole optimizer step of the candidate's training (forward, backward
  and optimizer, every micro-batch) from the first batch served to the first `tick`; its FLOPs per token
  then price every later token served, which is what a FLOP budget spends (`Experiment.flops_used`).
- `forward_flops_per_token`: the scorer's count over an exported program's forward pass, outside the jail
  (integrity/scorer.py), which the loop's budget verification uses (integrity/budget.py).

The counter adds Python work to every operator, so the counted step is slower: it is the first step, which
the training clock never times (the warm-up), so a time budget is not charged for it.
"""
from __future__ import annotations

import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

# FlopCounterMode tracks modules through global hooks, which torch.compile warns about; harmless here.
warnings.filterwarnings("ignore", message=r"Using `torch.compile\(module\)` when there are global hooks")


class StepCounter:
    """Counts the FLOPs of one step: `start()` at the first batch served, `stop(tokens)` at the first tick."""

    def __init__(self) -> None:
        self._mode: FlopCounterMode | None = None
        self.flops: int | None = None  # FLOPs of the counted step, once stopped
        self.tokens: int | None = None  # tokens that step was served

    @property
    def counting(self) -> bool:
        return self._mode is not None

    def start(self) -> None:
        """Begin counting (once per run: later calls do nothing)."""
        if self._mode is None and self.flops is None:
            self._mode = FlopCounterMode(display=False)
            self._mode.__enter__()

    def stop(self, tokens: int) -> None:
        """End the count; the step was served `tokens` tokens."""
        if self._mode is None:
            return
        mode, self._mode = self._mode, None
        mode.__exit__(None, None, None)
        self.flops, self.tokens = int(mode.get_total_flops()), int(tokens)

    def flops_for(self, tokens: int) -> int | None:
        """FLOPs of `tokens` tokens at the counted step's rate (exact integer arithmetic: deterministic);
        None before a step was counted."""
        if self.flops is None or not self.tokens:
            return None
        return int(tokens) * self.flops // self.tokens

    def per_token(self) -> float | None:
        return self.flops / self.tokens if self.flops is not None and self.tokens else None


def forward_flops_per_token(model, seq_len: int, device: torch.device | str = "cpu", rows: int = 1) -> float:
    """FLOPs of one forward pass of `model` on `rows` rows of `seq_len` tokens, per token (no gradients)."""
    batch = torch.zeros(rows, seq_len, dtype=torch.long, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(batch)
    return counter.get_total_flops() / (rows * seq_len)
