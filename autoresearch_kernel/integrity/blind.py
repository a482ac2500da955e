"""The scorer's evaluation: val_bpb measured so that the model cannot tell a check from a scored row.

The harness's `evaluate_bpb` scores the rows in stored order and probes causality in a call of its own (one
fixed row, random ids): a program that can tell that call apart could behave for it alone, and a program
that reads the other rows of its batch is not caught at all. Here every call the model sees is a full batch
of real evaluation rows, in an order drawn afresh for each request:

- the rows are shuffled, and copies of random rows are spliced in at random places, each copy in another
  batch than its original (so it has other batch-mates); the batches are all of the profile's size;
- most copies are cut at a random point and continued with another row's tokens (real text); the rest are
  exact copies;
- only the originals count towards val_bpb. At and before its cut, each copy's log-probabilities of its
  original's targets, and its whole distribution at the cut, must equal its original's: a model that sees
  future tokens fails the spliced copies; one that reads other rows of its batch fails every copy.

The scorer refuses programs that write into buffers or inputs, so nothing is carried from call to call:
which rows are copies is knowable only from the rows of one batch, where a copy's prefix is a real row's and
its continuation real text, and its original sits in some other batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from autoresearch_kernel.errors import EvaluationError
from autoresearch_kernel.harness.evaluate import PROBE_ATOL, bits_per_byte, checked_logits, target_nats

CHECK_ROWS = 16  # copies spliced in at least; more to fill the last batch
EXACT_EVERY = 4  # one copy in four is exact (no splice): it checks row independence over the whole row
SWAP_TRIES = 10_000  # random swaps that move a copy out of its original's batch (a few suffice)


@dataclass(frozen=True)
class Plan:
    """One request's order. Slot i of the stream holds source order[i]: an original row when < num_rows,
    else copy order[i] - num_rows."""

    order: np.ndarray
    checked: np.ndarray  # [K] the original row of each copy
    cuts: np.ndarray  # [K] the last position a copy shares with its original (seq_len - 1: exact)
    donors: np.ndarray  # [K] the row whose tokens continue a copy after its cut


def check_count(num_rows: int, batch_size: int) -> int:
    """CHECK_ROWS, or more so that the originals and the copies fill whole batches (when the rows fill one)."""
    if num_rows < batch_size:
        return CHECK_ROWS
    return CHECK_ROWS + (-(num_rows + CHECK_ROWS)) % batch_size


def make_plan(num_rows: int, seq_len: int, batch_size: int, rng: np.random.Generator) -> Plan:
    count = check_count(num_rows, batch_size)
    checked = rng.choice(num_rows, size=count, replace=count > num_rows)
    cuts = rng.integers(1, max(seq_len - 1, 2), size=count)
    cuts[rng.permutation(count) < max(1, count // EXACT_EVERY)] = seq_len - 1
    donors = (checked + rng.integers(1, max(num_rows, 2), size=count)) % max(num_rows, 1)
    return Plan(_separated(num_rows, checked, batch_size, rng), checked, cuts, donors)


def _separated(num_rows: int, checked: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A random order of originals and copies in which no copy shares a batch with its original."""
    total = num_rows + len(checked)
    order = rng.permutation(total)
    if total <= batch_size:
        return order
    for _ in range(SWAP_TRIES):
        slot = np.empty(total, dtype=np.int64)
        slot[order] = np.arange(total)
        batch = slot // batch_size
        bad = np.flatnonzero(batch[num_rows:] == batch[checked])
        if bad.size == 0:
            break
        other = rng.integers(total)
        here = slot[num_rows + bad[0]]
        order[here], order[other] = order[other], order[here]
    return order


def blind_bpb(model, data, device: torch.device, rng: np.random.Generator | None = None) -> float:
    """val_bpb of `model` over the prepared evaluation rows, with the checks above; EvaluationError when a check
    fails. `rng`: unseeded by default, so that no order is knowable in advance."""
    rows = data._validation_rows()
    num_rows, seq_len = rows.shape[0], rows.shape[1] - 1
    vocab, batch_size = data.profile.vocab_size, data.profile.eval_batch_size
    plan = make_plan(num_rows, seq_len, batch_size, rng or np.random.default_rng())
    token_bytes = torch.from_numpy(data.token_bytes.astype(np.int64)).to(device)
    seen = _Seen(plan, rows, vocab)
    row_nats = np.zeros(num_rows)  # summed in row order at the end: the same figure whatever the shuffle
    total_bytes = 0
    with torch.no_grad():
        for start in range(0, len(plan.order), batch_size):
            sources = plan.order[start : start + batch_size]
            inputs = torch.from_numpy(_inputs(plan, rows, sources)).to(device)  # its own storage
            logits = checked_logits(model, inputs, vocab)
            original = np.flatnonzero(sources < num_rows)
            targets = torch.from_numpy(np.asarray(rows[sources[original], 1:], dtype=np.int64)).to(device)
            scored = logits if len(original) == len(sources) else logits[original]  # no copy when all count
            nats, scored_bytes = target_nats(scored, targets, token_bytes)
            row_nats[sources[original]] = nats.cpu().numpy()
            total_bytes += scored_bytes
            seen.record(sources, logits)
    seen.verify()
    return bits_per_byte(float(row_nats.sum()), total_bytes)


def _inputs(plan: Plan, rows, sources: np.ndarray) -> np.ndarray:
    num_rows, seq_len = rows.shape[0], rows.shape[1] - 1
    inputs = np.empty((len(sources), seq_len), dtype=np.int64)
    original = sources < num_rows
    inputs[original] = rows[sources[original], :-1]
    for i in np.flatnonzero(~original):
        k = sources[i] - num_rows
        cut = plan.cuts[k]
        inputs[i, : cut + 1] = rows[plan.checked[k], : cut + 1]
        inputs[i, cut + 1 :] = rows[plan.donors[k], cut + 1 : seq_len]
    return inputs


class _Seen:
    """What the checks compare: for each copy and its original, the log-probabilities of the original's targets
    at every position, and the whole distribution at the cut (on the CPU, in float64)."""

    def __init__(self, plan: Plan, rows, vocab: int):
        self.plan, self.num_rows = plan, rows.shape[0]
        count, seq_len = len(plan.checked), rows.shape[1] - 1
        self.targets = torch.from_numpy(np.asarray(rows[plan.checked, 1:], dtype=np.int64))
        self.copies_of: dict[int, list[int]] = {}
        for k, row in enumerate(plan.checked):
            self.copies_of.setdefault(int(row), []).append(k)
        self.along = torch.zeros(2, count, seq_len, dtype=torch.float64)  # [original | copy, k, position]
        self.at_cut = torch.zeros(2, count, vocab, dtype=torch.float64)

    def record(self, sources: np.ndarray, logits: torch.Tensor) -> None:
        for i, source in enumerate(sources):
            source = int(source)
            pairs = [(0, k) for k in self.copies_of.get(source, ())] if source < self.num_rows else \
                [(1, source - self.num_rows)]
            if not pairs:
                continue
            logp = torch.log_softmax(logits[i].float(), dim=-1).cpu().double()
            for side, k in pairs:
                self.along[side, k] = logp.gather(-1, self.targets[k][:, None])[:, 0]
                self.at_cut[side, k] = logp[self.plan.cuts[k]]

    def verify(self) -> None:
        """EvaluationError naming the worst copy: exact copies first (they tell row dependence from a peek)."""
        seq_len = self.along.size(-1)
        exact = self.plan.cuts == seq_len - 1
        for kinds in (exact, ~exact):
            worst, drift = None, 0.0
            for k in np.flatnonzero(kinds):
                cut = int(self.plan.cuts[k])
                moved = max(float((self.along[0, k, : cut + 1] - self.along[1, k, : cut + 1]).abs().max()),
                            float((self.at_cut[0, k] - self.at_cut[1, k]).abs().max()))
                if moved > drift:
                    worst, drift = k, moved
            if worst is not None and drift > PROBE_ATOL:
                raise EvaluationError(_message(bool(exact[worst]), int(self.plan.cuts[worst]), drift))


def _message(exact: bool, cut: int, drift: float) -> str:
    if exact:
        return (f"row independence check failed in the scorer: the same row scored in another batch changed its "
                f"predictions by {drift:.3g} nats; the model reads other rows of its batch")
    return (f"causality check failed in the scorer: continuing a row with other text after position {cut} changed "
            f"its earlier predictions by {drift:.3g} nats; the model sees future tokens")
