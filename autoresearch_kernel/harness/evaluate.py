"""evaluate_bpb(): the fixed metric, validation bits per byte, computed by the harness from logits.

val_bpb = sum of per-token cross-entropy (nats) over target tokens that stand for bytes
          / (ln 2 x the UTF-8 bytes of those targets)
on the fixed evaluation rows built at prepare time (profile.eval_tokens targets; the caller's batch size
only changes how many rows go through the model at once, not the result). Special-token targets count
0 bytes and their loss is left out. Unlike the reference, the model is only asked for logits: the loss is
computed here, with torch functions bound when this module was imported (before any sandbox code ran),
so editing or monkeypatching the model's loss code cannot change the score. Before scoring, a causality
probe checks that changing the tokens after position t leaves the predictions at t unchanged.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from autoresearch_kernel.errors import EvaluationError

# Bound at import: later rebinding of these names in torch does not reach the metric.
_cross_entropy = torch.nn.functional.cross_entropy
_log_softmax = torch.nn.functional.log_softmax
_no_grad = torch.no_grad
_from_numpy = torch.from_numpy
_isfinite = torch.isfinite
_aminmax = torch.aminmax

PROBE_ROWS = 3  # probe rows: the original plus perturbations after two cut points
PROBE_ATOL = 1e-2  # nats: float noise in a causal prefix (bf16 kernels included) stays far below; real leaks move it by >0.1
PROBE_SEED = 1234


@dataclass(frozen=True)
class EvalResult:
    val_bpb: float
    nats: float  # summed cross-entropy over scored targets
    bytes: int  # summed UTF-8 bytes of those targets
    tokens: int  # targets seen (including special-token targets, which count 0)
    seconds: float


def evaluate_bpb(model: torch.nn.Module, prepared, device: str | torch.device = "cpu", batch_size: int | None = None) -> EvalResult:
    """Score `model` (forward(idx[B,T]) -> logits[B,T,V]) on the prepared evaluation rows."""
    started = time.perf_counter()
    device = torch.device(device)
    rows = prepared._validation_rows()
    token_bytes = _from_numpy(prepared.token_bytes.astype(np.int64)).to(device)
    vocab = prepared.profile.vocab_size
    batch_size = batch_size or prepared.profile.eval_batch_size
    was_training = model.training
    model.eval()
    try:
        with _no_grad():
            check_causality(model, rows[0], vocab, device)
            total_nats = 0.0
            total_bytes = 0
            for start in range(0, len(rows), batch_size):
                batch = np.asarray(rows[start : start + batch_size], dtype=np.int64)
                # two tensors of their own: a model that writes into its input cannot reach the targets
                inputs = _from_numpy(batch[:, :-1].copy()).to(device)
                targets = _from_numpy(batch[:, 1:].copy()).to(device)
                nats, scored_bytes = target_nats(checked_logits(model, inputs, vocab), targets, token_bytes)
                total_nats += float(nats.sum())
                total_bytes += scored_bytes
    finally:
        model.train(was_training)
    return EvalResult(
        val_bpb=bits_per_byte(total_nats, total_bytes),
        nats=total_nats,
        bytes=total_bytes,
        tokens=len(rows) * (rows.shape[1] - 1),
        seconds=time.perf_counter() - started,
    )


def bits_per_byte(total_nats: float, total_bytes: int) -> float:
    """val_bpb from the summed nats and bytes; EvaluationError when there is nothing to score or it diverged."""
    if total_bytes == 0:
        raise EvaluationError("the evaluation rows hold no byte-carrying targets; prepare the data again")
    if not math.isfinite(total_nats):
        raise EvaluationError("the validation loss is not finite (NaN or inf): the model diverged or its logits overflow")
    return total_nats / (math.log(2) * total_bytes)


def target_nats(logits: torch.Tensor, targets: torch.Tensor, token_bytes: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Per row, the summed cross-entropy (float64 nats) of the targets that stand for bytes, and the UTF-8
    bytes of those targets over the whole batch: what val_bpb adds up."""
    vocab = logits.size(-1)
    nats = _cross_entropy(logits.reshape(-1, vocab).float(), targets.reshape(-1), reduction="none")
    weights = token_bytes[targets.reshape(-1)]
    per_row = (nats * (weights > 0)).double().reshape(targets.shape).sum(dim=1)
    return per_row, int(weights.sum())


def checked_logits(model: torch.nn.Module, inputs: torch.Tensor, vocab: int) -> torch.Tensor:
    output = model(inputs)
    if not isinstance(output, torch.Tensor):
        raise EvaluationError(
            f"model(idx) returned {type(output).__name__}; it must return only the logits tensor [B, T, {vocab}]"
        )
    expected = (*inputs.shape, vocab)
    if tuple(output.shape) != expected:
        raise EvaluationError(f"model(idx) returned logits of shape {tuple(output.shape)}, expected {expected} [B, T, vocab]")
    if not _all_finite(output):
        raise EvaluationError("model(idx) returned non-finite logits (NaN or inf): the model diverged")
    return output


def _all_finite(tensor: torch.Tensor) -> bool:
    """No NaN and no inf in `tensor`. Its least and greatest values tell (a NaN makes both NaN): one reduction
    that keeps nothing, where isfinite(...).all() first writes a mask as large as the logits (60 ms a batch of
    16 x 256 x 4096 against 2 ms, on 2 cores)."""
    if not tensor.is_floating_point():
        return True  # integers and booleans hold no NaN or inf
    low, high = _aminmax(tensor)
    return bool(_isfinite(low)) and bool(_isfinite(high))


def check_causality(model: torch.nn.Module, row: np.ndarray, vocab: int, device: torch.device) -> None:
    """Raise EvaluationError when predictions at t depend on tokens after t (a leaky mask or a peek).

    One forward pass of PROBE_ROWS rows: the original and copies whose tokens after a cut point are
    replaced by random ones; log-probabilities at and before each cut must match the original's.
    """
    inputs = _from_numpy(np.asarray(row[:-1], dtype=np.int64)).to(device)
    length = inputs.numel()
    generator = torch.Generator().manual_seed(PROBE_SEED)
    cuts = [length // 2, max(0, length // 8)]
    probe = inputs.repeat(PROBE_ROWS, 1)
    for k, cut in enumerate(cuts[: PROBE_ROWS - 1], start=1):
        if cut + 1 < length:
            replacement = torch.randint(0, vocab - 4, (length - cut - 1,), generator=generator).to(device)
            probe[k, cut + 1 :] = replacement
    logp = _log_softmax(checked_logits(model, probe, vocab).float(), dim=-1)
    for k, cut in enumerate(cuts[: PROBE_ROWS - 1], start=1):
        drift = float((logp[k, : cut + 1] - logp[0, : cut + 1]).abs().max())
        if drift > PROBE_ATOL:
            raise EvaluationError(
                f"causality check failed: changing tokens after position {cut} changed the predictions at or "
                f"before it by {drift:.3g} nats; the model sees future tokens (check the attention mask)"
            )
