"""The clean-process re-score: the same model scores the same in a fresh interpreter, and a program that
leaks future tokens, holds pickled objects or is not a program at all gives a reason instead of a score."""
import zipfile

import pytest
import torch
from torch import nn

from autoresearch_kernel import rescore
from autoresearch_kernel.harness.data import load_prepared
from autoresearch_kernel.harness.evaluate import evaluate_bpb
from autoresearch_kernel.harness.report import export_program, program_path


class Bigram(nn.Module):
    """Causal by construction: the logits at t depend on token t only (unless it peeks)."""

    def __init__(self, vocab, peek=False):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head, self.peek = nn.Embedding(vocab, 16), nn.Linear(16, vocab), peek

    def forward(self, idx):
        logits = self.head(self.embed(idx))
        if self.peek:  # the next token's logit raised: a leak the causality probe must see
            logits = logits + 5 * nn.functional.one_hot(torch.roll(idx, -1, dims=1), logits.size(-1))
        return logits


@pytest.fixture(scope="module")
def data(prepared_dir):
    return load_prepared(prepared_dir, "cpu")


def exported(model, data, tmp_path):
    path, failure = export_program(model, program_path(tmp_path / "run.metrics.json"), data.profile.seq_len,
                                   torch.device("cpu"))
    assert failure is None and path == tmp_path / "run.program.pt2" and path.is_file()
    return path


def test_the_clean_process_gives_the_kernel_score(data, prepared_dir, tmp_path):
    model = Bigram(data.profile.vocab_size)
    in_process = evaluate_bpb(model, data, "cpu").val_bpb
    clean = rescore.rescore(exported(model, data, tmp_path), prepared_dir, "cpu")
    assert clean.ok and abs(clean.val_bpb - in_process) < 1e-6 < rescore.TOLERANCE_FP32
    assert clean.seconds > 0


def test_a_program_exported_under_bf16_autocast_scores_alike_under_it(data, prepared_dir, tmp_path):
    # What harness.finish does on CUDA (the GPU is not here; CPU autocast takes the same path): an exported
    # graph keeps the dtypes it was traced with, so export and clean score share the evaluation's autocast.
    model = Bigram(data.profile.vocab_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        path = exported(model, data, tmp_path)
        in_process = evaluate_bpb(model, data, "cpu").val_bpb
    clean = rescore.rescore(path, prepared_dir, "cpu", "cpu", bf16=True)
    assert clean.ok, clean.failure
    assert abs(clean.val_bpb - in_process) < rescore.TOLERANCE_BF16


def test_a_program_that_sees_future_tokens_fails_the_probe(data, prepared_dir, tmp_path):
    clean = rescore.rescore(exported(Bigram(data.profile.vocab_size, peek=True), data, tmp_path), prepared_dir, "cpu")
    assert not clean.ok and clean.val_bpb is None and "causality check failed" in clean.failure


class ProbeAware(Bigram):
    """Leaks only when its rows do not share a prefix: the in-kernel probe's three rows always do."""

    def forward(self, idx):
        honest = self.head(self.embed(idx))
        leaky = honest + 5 * nn.functional.one_hot(torch.roll(idx, -1, dims=1), honest.size(-1))
        shared = (idx[:, 1:9] == idx[:1, 1:9]).all()
        return torch.where(shared, honest, leaky)


def test_a_program_that_recognises_the_probe_is_still_caught(data, prepared_dir, tmp_path):
    model = ProbeAware(data.profile.vocab_size)
    evaluate_bpb(model, data, "cpu")  # fools the in-kernel probe
    clean = rescore.rescore(exported(model, data, tmp_path), prepared_dir, "cpu")
    assert not clean.ok and "causality check failed in the clean re-score" in clean.failure


def test_a_program_holding_pickled_objects_is_refused_before_loading(data, prepared_dir, tmp_path):
    path = exported(Bigram(data.profile.vocab_size), data, tmp_path)
    with zipfile.ZipFile(path, "a") as archive:  # what a sandbox with file access could plant
        archive.writestr("run.program/data/constants/custom_obj_0", b"cos\nsystem\n(S'true'\ntR.")
    clean = rescore.rescore(path, prepared_dir, "cpu")
    assert not clean.ok and "Python object" in clean.failure


@pytest.mark.parametrize("content", [b"not a zip archive"])
def test_a_broken_program_file_gives_a_reason(prepared_dir, tmp_path, content):
    path = tmp_path / "run.program.pt2"
    path.write_bytes(content)
    clean = rescore.rescore(path, prepared_dir, "cpu")
    assert not clean.ok and clean.failure


def test_changed_prepared_data_fails_the_clean_process(data, prepared_dir, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(prepared_dir, copy)
    with open(copy / "cpu" / "val_rows.npy", "ab") as handle:
        handle.write(b"0")
    clean = rescore.rescore(exported(Bigram(data.profile.vocab_size), data, tmp_path), copy, "cpu")
    assert not clean.ok and "hash mismatch" in clean.failure


def test_a_model_that_cannot_be_exported_says_why(data, tmp_path):
    class Branchy(Bigram):
        def forward(self, idx):
            if idx.sum() > 0:  # data-dependent Python control flow: no graph can hold it
                return super().forward(idx)
            return super().forward(idx) * 2

    path, failure = export_program(Branchy(data.profile.vocab_size), tmp_path / "x.program.pt2",
                                   data.profile.seq_len, torch.device("cpu"))
    assert path is None and failure and not (tmp_path / "x.program.pt2").exists()
