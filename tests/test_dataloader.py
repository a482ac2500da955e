"""The dataloader: BOS-first rows, best-fit packing without padding or lost tokens, determinism, devices."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from autoresearch_kernel.harness.data import load_prepared
from autoresearch_kernel.harness.dataloader import RowPacker, Split, pack_rows, stored_order, train_batches

BOS = 0


def synthetic_split(lengths: list[int]) -> Split:
    """Document i is BOS then distinct ids 1000*(i+1) + 0..n-1, so every token names its document and place."""
    docs = [np.array([BOS, *range(1000 * (i + 1), 1000 * (i + 1) + n)], dtype=np.uint32) for i, n in enumerate(lengths)]
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(d) for d in docs])
    return Split(np.concatenate(docs), offsets)


def segments(row: np.ndarray) -> list[np.ndarray]:
    starts = np.flatnonzero(row == BOS)
    return [row[a + 1 : b] for a, b in zip(starts, [*starts[1:], len(row)])]


def test_packing_is_best_fit_without_padding_and_loses_no_token():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(1, 60, size=200))
    split = synthetic_split(lengths)
    rows = pack_rows(split, BOS, num_rows=10_000, row_len=33)
    assert 0 < len(rows) < 10_000  # the finite order ran out
    assert (rows[:, 0] == BOS).all()  # every row starts with BOS
    served = []
    for row in rows:
        pieces = segments(row)
        assert all(len(segment) > 0 for segment in pieces[:-1])  # a lone BOS only as a row's last token
        for segment in pieces:
            if len(segment) == 0:
                continue
            doc = segment // 1000
            assert (doc == doc[0]).all() and (np.diff(segment) == 1).all()  # one document, in order
            served.extend(segment.tolist())
    expected = [1000 * (i + 1) + k for i, n in enumerate(lengths) for k in range(n)]
    assert len(set(served)) == len(served) and set(served) <= set(expected)  # nothing served twice or invented
    assert len(served) >= len(expected) - 33  # only the last, unfinished row's tokens are missing


def test_best_fit_prefers_the_longest_document_that_fits():
    split = synthetic_split([3, 10, 6, 2])  # pieces of 4, 11, 7, 3 tokens with BOS
    packer = RowPacker(split, stored_order(4), BOS, np.random.default_rng(0))
    row = np.zeros(11, dtype=np.uint32)
    packer.fill(row)
    assert row.tolist() == [BOS, *range(2000, 2010)]  # the 11-token document fills the row exactly
    packer.fill(row)
    assert [len(s) for s in segments(row)] == [6, 3]  # the 7-token one, then the 4 that fits exactly (not the 3)


def test_crops_when_nothing_fits_and_keeps_the_rest():
    split = synthetic_split([30])
    packer = RowPacker(split, stored_order(1), BOS, np.random.default_rng(0))
    row = np.zeros(8, dtype=np.uint32)
    packer.fill(row)
    assert row.tolist() == [BOS, *range(1000, 1007)]  # cropped to fill the row
    packer.fill(row)
    assert row.tolist() == [BOS, *range(1007, 1014)]  # its rest comes back with a BOS in front


def test_train_batches_shapes_targets_and_determinism(prepared_dir):
    prepared = load_prepared(prepared_dir, "cpu")
    batches = train_batches(prepared, batch_size=4, seed=7)
    x, y, epoch = next(batches)
    assert x.shape == y.shape == (4, prepared.profile.seq_len) and x.dtype == y.dtype == torch.long
    assert x.is_contiguous() and y.is_contiguous()
    assert (x[:, 0] == prepared.tokenizer.bos_id).all()
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert epoch == 1
    assert int(x.max()) < prepared.profile.vocab_size
    again = train_batches(prepared, batch_size=4, seed=7)
    other = train_batches(prepared, batch_size=4, seed=8)
    first = [next(again) for _ in range(3)]
    assert torch.equal(first[0][0], x)
    assert not torch.equal(next(other)[0], x)
    short = next(train_batches(prepared, batch_size=2, seq_len=16, seed=7))
    assert short[0].shape == (2, 16)


def test_epochs_advance_and_training_never_serves_validation_rows(prepared_dir):
    prepared = load_prepared(prepared_dir, "cpu")
    val = {tuple(row[:32]) for row in prepared._validation_rows()}
    batches = train_batches(prepared, batch_size=64, seed=0)
    rows_per_epoch = prepared.train.num_tokens // (64 * 257) + 1
    epochs = set()
    for _ in range(3 * rows_per_epoch):
        x, _, epoch = next(batches)
        epochs.add(epoch)
        assert not any(tuple(row[:32]) in val for row in x.numpy())
    assert max(epochs) >= 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_batches_land_on_the_gpu(prepared_dir):
    prepared = load_prepared(prepared_dir, "cpu")
    x, y, _ = next(train_batches(prepared, batch_size=4, device="cuda", seed=1))
    cpu_x, cpu_y, _ = next(train_batches(prepared, batch_size=4, device="cpu", seed=1))
    assert x.device.type == "cuda" and torch.equal(x.cpu(), cpu_x) and torch.equal(y.cpu(), cpu_y)


@pytest.mark.skipif(not torch.backends.mps.is_available(), reason="needs Apple MPS")
def test_mps_batches_land_on_the_gpu(prepared_dir):
    prepared = load_prepared(prepared_dir, "cpu")
    x, _, _ = next(train_batches(prepared, batch_size=4, device="mps", seed=1))
    assert x.device.type == "mps"
