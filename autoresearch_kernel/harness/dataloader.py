"""The training dataloader: endless (inputs[B,T], targets[B,T], epoch) batches from the training split.

Rows hold T + 1 tokens (inputs are the first T, targets the last T). Documents are stored with BOS in
front, so every row starts with BOS. Rows are packed best-fit from a buffer of about 1000 documents:
the longest piece that fits the row's remainder goes in, and no row is padded. When none fits, one
piece is cropped to fill the row exactly. Two departures from the reference, both for short rows on a
small corpus (the cpu profile: 256-token rows, ~900-token Bible chapters):
- the cropped-off rest is not thrown away: it returns to the buffer as a new piece with BOS in front
  (the reference's discard would train on chapter openings only and waste ~70% of the text);
- the piece to crop is drawn at random from the buffer (seeded), not the shortest: with the rest kept,
  "shortest" would feed one chapter's consecutive chunks to consecutive rows, in the same order for
  every seed, since a 1000-document buffer holds nearly the whole corpus.
Document order is a fresh permutation per epoch, drawn from the seed like the crops, so a seed gives
the same batches on every run and device.

The same packer, with documents in stored order, builds the fixed evaluation rows at prepare time.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

BUFFER_DOCS = 1000  # documents the best-fit packer chooses from
EVAL_PACK_SEED = 0  # the evaluation rows' packing seed of data prepared before it was drawn at prepare


@dataclass(frozen=True)
class Split:
    """One split's documents: tokens[offsets[i]:offsets[i+1]] is document i, starting with BOS."""

    tokens: np.ndarray  # uint16/uint32, often a read-only memory map
    offsets: np.ndarray  # int64, len = documents + 1

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])


class RowPacker:
    """Best-fit packing of documents into rows of `row_len` tokens; `fill(out)` writes one row."""

    def __init__(
        self,
        split: Split,
        order: Iterator[tuple[int, int]],
        bos_id: int,
        rng: np.random.Generator,
        buffer_docs: int = BUFFER_DOCS,
    ):
        self.tokens, self.offsets, self.bos_id = split.tokens, split.offsets, bos_id
        self.order = order  # yields (document index, epoch); StopIteration ends a finite packer
        self.rng = rng  # picks the piece to crop when none fits
        self.epoch = 0
        # The buffer as parallel arrays: where each piece starts and ends in `tokens`, and whether it
        # is a cropped rest that needs a BOS put back in front. `lengths` counts that BOS.
        self.starts = np.zeros(buffer_docs, dtype=np.int64)
        self.ends = np.zeros(buffer_docs, dtype=np.int64)
        self.needs_bos = np.zeros(buffer_docs, dtype=bool)
        self.lengths = np.zeros(buffer_docs, dtype=np.int64)
        self.count = 0
        self.exhausted = False

    def _refill(self) -> None:
        while self.count < len(self.starts) and not self.exhausted:
            try:
                doc, self.epoch = next(self.order)
            except StopIteration:
                self.exhausted = True
                return
            start, end = self.offsets[doc], self.offsets[doc + 1]
            if end - start < 2:  # a document of BOS alone carries nothing to predict
                continue
            i = self.count
            self.starts[i], self.ends[i], self.needs_bos[i], self.lengths[i] = start, end, False, end - start
            self.count += 1

    def _remove(self, i: int) -> None:
        last = self.count - 1
        for array in (self.starts, self.ends, self.needs_bos, self.lengths):
            array[i] = array[last]
        self.count = last

    def fill(self, out: np.ndarray) -> bool:
        """Write one packed row into `out`; False when a finite order ran out before the row was full."""
        pos, row_len = 0, len(out)
        while pos < row_len:
            self._refill()
            if self.count == 0:
                return False
            room = row_len - pos
            lengths = self.lengths[: self.count]
            fits = np.flatnonzero(lengths <= room)
            whole = fits.size > 0
            i = int(fits[np.argmax(lengths[fits])]) if whole else int(self.rng.integers(self.count))
            take = int(lengths[i]) if whole else room
            if self.needs_bos[i]:
                out[pos] = self.bos_id
                pos, take = pos + 1, take - 1
            start = int(self.starts[i])
            out[pos : pos + take] = self.tokens[start : start + take]
            pos += take
            if whole:
                self._remove(i)
            else:  # the cropped rest stays in the buffer, with a BOS to go in front of it
                self.starts[i] = start + take
                self.needs_bos[i] = True
                self.lengths[i] = self.ends[i] - self.starts[i] + 1
        return True


def shuffled_order(num_documents: int, seed: int) -> Iterator[tuple[int, int]]:
    """(document, epoch) forever: a fresh permutation of the documents per epoch, from the seed."""
    epoch = 0
    while True:
        epoch += 1
        for doc in np.random.default_rng([seed, epoch, 0]).permutation(num_documents):
            yield int(doc), epoch


def stored_order(num_documents: int) -> Iterator[tuple[int, int]]:
    """Each document once, in stored order (the evaluation rows)."""
    return ((doc, 1) for doc in range(num_documents))


def pack_rows(split: Split, bos_id: int, num_rows: int, row_len: int, seed: int = EVAL_PACK_SEED) -> np.ndarray:
    """`num_rows` rows packed from documents in stored order; fewer when the split runs out. `seed`: the
    crops' (prepare draws a secret one)."""
    rows = np.zeros((num_rows, row_len), dtype=split.tokens.dtype)
    packer = RowPacker(split, stored_order(split.num_documents), bos_id, np.random.default_rng(seed))
    for n in range(num_rows):
        if not packer.fill(rows[n]):
            return rows[:n]
    return rows


def train_batches(
    prepared,
    batch_size: int,
    seq_len: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    buffer_docs: int = BUFFER_DOCS,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Endless (inputs[B,T], targets[B,T], epoch) int64 batches on `device` from the training split.

    `prepared` is what data.load_prepared returns; T defaults to its profile's seq_len.
    """
    seq_len = seq_len or prepared.profile.seq_len
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    device = torch.device(device)
    split = prepared.train
    rng = np.random.default_rng([seed, 0, 1])  # crops; its own stream, apart from the document order
    packer = RowPacker(split, shuffled_order(split.num_documents, seed), prepared.tokenizer.bos_id, rng, buffer_docs)
    pin = device.type == "cuda"
    while True:
        # Fill a (pinned, on CUDA) host tensor in place through its numpy view: no extra copy.
        host = torch.empty((batch_size, seq_len + 1), dtype=torch.long, pin_memory=pin)
        rows = host.numpy()
        for row in rows:
            packer.fill(row)
        batch = host.to(device, non_blocking=pin) if device.type != "cpu" else host
        yield batch[:, :-1].contiguous(), batch[:, 1:].contiguous(), packer.epoch
