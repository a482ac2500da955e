"""evaluate_bpb: the exact formula by hand, batch-size independence, the causality probe, bad models."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from autoresearch_kernel.errors import EvaluationError
from autoresearch_kernel.harness.data import Prepared, load_prepared
from autoresearch_kernel.harness.evaluate import evaluate_bpb


class Bigram(torch.nn.Module):
    """Causal by construction: the logits at t depend on the token at t only."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=generator))
        self.modes_seen: list[bool] = []

    def forward(self, idx):
        self.modes_seen.append(self.training)
        return self.table[idx]


class PeeksAhead(Bigram):
    """Predicts from the next token: a leak that would score a miraculous val_bpb."""

    def forward(self, idx):
        return self.table[torch.roll(idx, -1, dims=1)]


def tiny_prepared(prepared: Prepared, rows: np.ndarray, tmp_path) -> Prepared:
    """The real tokenizer and settings with our own evaluation rows."""
    path = tmp_path / "rows.npy"
    np.save(path, rows)
    profile = dataclasses.replace(prepared.profile, seq_len=rows.shape[1] - 1)
    return dataclasses.replace(prepared, profile=profile, _val_rows_path=path)


def test_matches_a_hand_computation_with_multibyte_and_special_tokens(prepared_dir, tmp_path):
    prepared = load_prepared(prepared_dir, "cpu")
    tokenizer = prepared.tokenizer
    bos, special = tokenizer.bos_id, tokenizer.bos_id + 2
    ids = [bos, *tokenizer.encode("Naïve — 語"), special, *tokenizer.encode(" end.")]
    rows = np.array([ids, ids[::-1]], dtype=np.uint16)  # two rows: special targets in both
    model = Bigram(prepared.profile.vocab_size, seed=3)
    result = evaluate_bpb(model, tiny_prepared(prepared, rows, tmp_path), batch_size=1)

    table = model.table.detach().double()
    nats = 0.0
    total_bytes = 0
    for row in rows:
        for inp, target in zip(row[:-1], row[1:]):
            raw = tokenizer.token_text(int(target))  # the target token's own bytes; b"" for specials
            if raw:
                logits = table[int(inp)]
                nats += float(torch.logsumexp(logits, 0) - logits[int(target)])
                total_bytes += len(raw)
    assert any(len(tokenizer.token_text(int(t))) == 1 and tokenizer.token_text(int(t))[0] >= 0x80 for t in rows[:, 1:].ravel())
    assert any(int(t) == special for t in rows[:, 1:].ravel())  # a special target, excluded
    assert result.bytes == total_bytes
    assert result.val_bpb == pytest.approx(nats / (math.log(2) * total_bytes), rel=1e-6)
    assert result.tokens == rows.size - len(rows)


def test_independent_of_batch_size_and_restores_training_mode(prepared_dir, tmp_path):
    full = load_prepared(prepared_dir, "cpu")
    prepared = tiny_prepared(full, np.asarray(full._validation_rows()[:24]), tmp_path)  # 24 of the real rows
    model = Bigram(prepared.profile.vocab_size)
    model.train()
    small = evaluate_bpb(model, prepared, batch_size=3)
    assert model.training and model.modes_seen and not any(model.modes_seen)
    model.eval()
    large = evaluate_bpb(model, prepared, batch_size=64)
    assert not model.training
    assert small.val_bpb == pytest.approx(large.val_bpb, rel=1e-9)
    assert small.tokens == large.tokens == 24 * prepared.profile.seq_len
    assert 2.0 < small.val_bpb < 6.0  # random logits: about log2(4096) bits per 4-byte token, and then some


def test_the_loss_cannot_be_patched_from_outside(prepared_dir, monkeypatch, tmp_path):
    full = load_prepared(prepared_dir, "cpu")
    prepared = tiny_prepared(full, np.asarray(full._validation_rows()[:8]), tmp_path)
    model = Bigram(prepared.profile.vocab_size)
    honest = evaluate_bpb(model, prepared).val_bpb
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: torch.zeros(1))
    monkeypatch.setattr(torch.nn.functional, "log_softmax", lambda x, *a, **k: torch.zeros_like(x))
    assert evaluate_bpb(model, prepared).val_bpb == honest


def test_full_evaluation_scores_the_profiles_fixed_token_count(prepared_dir):
    prepared = load_prepared(prepared_dir, "cpu")
    result = evaluate_bpb(Bigram(prepared.profile.vocab_size), prepared)
    assert result.tokens == prepared.profile.eval_tokens
    assert result.bytes > 3 * prepared.profile.eval_tokens  # ~4 bytes per English token


def test_a_model_that_peeks_ahead_fails_the_causality_probe(prepared_dir):
    prepared = load_prepared(prepared_dir, "cpu")
    with pytest.raises(EvaluationError, match="causality check failed.*sees future tokens"):
        evaluate_bpb(PeeksAhead(prepared.profile.vocab_size), prepared)


def one_logit(idx, value):
    """Finite logits but for one, somewhere in the middle of the batch."""
    logits = torch.zeros(*idx.shape, 4096)
    logits[idx.size(0) // 2, idx.size(1) // 3, 1234] = value
    return logits


class Wrong(torch.nn.Module):
    def __init__(self, make):
        super().__init__()
        self.make = make

    def forward(self, idx):
        return self.make(idx)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda idx: torch.zeros(*idx.shape, 100), r"shape \(.*100\), expected"),
        (lambda idx: (torch.zeros(*idx.shape, 4096), None), "returned tuple"),
        (lambda idx: torch.full((*idx.shape, 4096), float("nan")), "non-finite"),
        (lambda idx: one_logit(idx, float("nan")), "non-finite"),  # one value among millions
        (lambda idx: one_logit(idx, float("inf")), "non-finite"),
        (lambda idx: one_logit(idx, float("-inf")).bfloat16(), "non-finite"),
    ],
)
def test_bad_outputs_are_refused_with_a_reason(prepared_dir, make, message):
    prepared = load_prepared(prepared_dir, "cpu")
    with pytest.raises(EvaluationError, match=message):
        evaluate_bpb(Wrong(make), prepared)


class CausalAttention(torch.nn.Module):
    """One attention layer through scaled_dot_product_attention (flash/efficient kernels on CUDA)."""

    def __init__(self, vocab: int, width: int = 128, causal: bool = True):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.head = torch.nn.Linear(width, vocab)
        self.causal = causal

    def forward(self, idx):
        hidden = self.embed(idx)
        q, k, v = self.qkv(hidden).view(*idx.shape, 3, 2, -1).permute(2, 0, 3, 1, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.head(hidden + out.transpose(1, 2).reshape(hidden.shape)).float()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_causal_attention_passes_the_probe_on_cuda_and_a_missing_mask_fails(prepared_dir):
    prepared = load_prepared(prepared_dir, "cpu")
    vocab = prepared.profile.vocab_size
    torch.manual_seed(0)
    for causal in (True, False):
        model = CausalAttention(vocab, causal=causal).cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if causal:
                result = evaluate_bpb(model, prepared, device="cuda")
                cpu = evaluate_bpb(model.float().cpu(), prepared, device="cpu")
                assert result.val_bpb == pytest.approx(cpu.val_bpb, rel=2e-2)  # bf16 vs fp32
            else:
                with pytest.raises(EvaluationError, match="causality check failed"):
                    evaluate_bpb(model, prepared, device="cuda")
