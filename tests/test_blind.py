"""The scorer's blind order (integrity/blind.py): every batch full, copies spliced in at random places and never
in their original's batch, a fresh order per request, and a model's figure the same whatever the order."""
import numpy as np
import pytest
import torch
from torch import nn

from autoresearch_kernel.errors import EvaluationError
from autoresearch_kernel.harness.data import load_prepared
from autoresearch_kernel.harness.evaluate import evaluate_bpb
from autoresearch_kernel.integrity.blind import CHECK_ROWS, EXACT_EVERY, blind_bpb, check_count, make_plan


@pytest.mark.parametrize(("rows", "batch"), [(256, 16), (10240, 32), (100, 7), (5, 16)])
def test_the_copies_fill_whole_batches_and_never_sit_with_their_original(rows, batch):
    plan = make_plan(rows, 256, batch, np.random.default_rng(rows))
    count = check_count(rows, batch)
    assert count >= CHECK_ROWS and len(plan.order) == rows + count and sorted(plan.order) == list(range(rows + count))
    if rows >= batch:  # a tiny split fills no batch: only the copies are there to check
        assert (rows + count) % batch == 0
        slot = np.argsort(plan.order)
        assert (slot[rows:] // batch != slot[plan.checked] // batch).all()
    assert (plan.cuts == 255).sum() == max(1, count // EXACT_EVERY) and (plan.cuts >= 1).all()
    assert (plan.donors != plan.checked).all()


def test_each_request_draws_another_order():
    first, second = (make_plan(256, 256, 16, np.random.default_rng()) for _ in range(2))
    assert not np.array_equal(first.order, second.order)


class Bigram(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Embedding(vocab, 8), nn.Linear(8, vocab)

    def forward(self, idx):
        return self.head(self.embed(idx))


class ReadsItsBatch(Bigram):
    """Adds a unigram cache of the other rows of its batch (tokens it may not see, future ones included)."""

    def forward(self, idx):
        counts = nn.functional.one_hot(idx, self.head.out_features).float()
        others = counts.sum(dim=(0, 1)) - counts.sum(dim=1)
        return super().forward(idx) + torch.log1p(others)[:, None, :]


@pytest.fixture(scope="module")
def small(prepared_dir, tmp_path_factory):
    """The prepared data cut to 32 evaluation rows (a fast test), through the same accessor."""
    data = load_prepared(prepared_dir, "cpu")
    rows = np.asarray(data._validation_rows()[:32])
    data._validation_rows = lambda: rows
    return data


@pytest.mark.slow
def test_an_honest_model_scores_as_the_harness_whatever_the_order(small):
    model = Bigram(small.profile.vocab_size)
    expected = evaluate_bpb(model, small).val_bpb
    figures = {blind_bpb(model, small, torch.device("cpu")) for _ in range(2)}
    assert len(figures) == 1 and abs(figures.pop() - expected) < 1e-9


@pytest.mark.slow
def test_a_model_reading_other_rows_of_its_batch_is_caught(small):
    model = ReadsItsBatch(small.profile.vocab_size)
    with pytest.raises(EvaluationError, match="row independence check failed in the scorer"):
        blind_bpb(model, small, torch.device("cpu"))
