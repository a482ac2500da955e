"""The scorer, warm and jailed: the same model scores the same as the harness in-process, and a program that
leaks future tokens, holds pickled objects or is not a program at all gives a reason instead of a score.
One scorer process serves every test of the module (as one serves a loop)."""
import zipfile

import pytest
import torch
from torch import nn

from autoresearch_kernel.harness.data import load_prepared
from autoresearch_kernel.harness.evaluate import evaluate_bpb
from autoresearch_kernel.harness.finish import export_program, program_path
from autoresearch_kernel.integrity import jail
from autoresearch_kernel.integrity.scorer import Scorer


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


@pytest.fixture(scope="module")
def scorer(prepared_dir, tmp_path_factory):
    """One warm scorer in its jail (read-only: the data and the folder the programs are written to)."""
    programs = tmp_path_factory.mktemp("programs")
    programs.chmod(0o755)  # a root test run's jail runs as nobody: what it binds must be readable by others
    cage = jail.Jail(readonly=(prepared_dir, programs)) if jail.unavailable_reason() is None else None
    with Scorer(prepared_dir, "cpu", "cpu", cage, programs / "scorer.log") as warm:
        warm.programs = programs
        yield warm


@pytest.fixture
def tmp_path(scorer, request):
    """Each test's own folder inside the scorer's read-only view."""
    folder = scorer.programs / request.node.name.replace("[", "-").replace("]", "")
    folder.mkdir(mode=0o755)
    return folder


def exported(model, data, tmp_path):
    path, failure = export_program(model, program_path(tmp_path / "run.metrics.json"), data.profile.seq_len,
                                   torch.device("cpu"))
    assert failure is None and path == tmp_path / "run.program.pt2" and path.is_file()
    return path


def test_the_clean_process_gives_the_kernel_score(data, scorer, tmp_path):
    model = Bigram(data.profile.vocab_size)
    in_process = evaluate_bpb(model, data, "cpu").val_bpb
    clean = scorer.score(exported(model, data, tmp_path))
    assert clean.ok and abs(clean.val_bpb - in_process) < 1e-6 < 1e-4
    assert clean.seconds > 0
    # its evaluation's compute time per scored token: the CPU time of a pass over 65,536 tokens, below the
    # request's wall time
    assert 0 < clean.forward_us_per_token * data.profile.eval_tokens / 1e6 < clean.seconds


def test_a_costlier_program_measures_more_compute_per_token(data, scorer, tmp_path):
    """The figure the budget scales a FLOP budget's seconds with (integrity/budget.flop_scale) follows the
    work: a model with a wide hidden layer takes longer per token than the bigram."""
    small = scorer.score(exported(Bigram(data.profile.vocab_size), data, tmp_path))
    (tmp_path / "wide").mkdir(mode=0o755)
    wide = nn.Sequential(nn.Embedding(data.profile.vocab_size, 16), nn.Linear(16, 1024), nn.Linear(1024, 1024),
                         nn.Linear(1024, data.profile.vocab_size))
    large = scorer.score(exported(wide, data, tmp_path / "wide"))
    assert small.ok and large.ok
    assert large.forward_us_per_token > 2 * small.forward_us_per_token
    assert large.forward_flops_per_token > 10 * small.forward_flops_per_token


def test_a_program_exported_under_bf16_autocast_scores_alike_under_it(data, scorer, tmp_path):
    # What harness.finish does on CUDA (the GPU is not here; CPU autocast takes the same path): an exported
    # graph keeps the dtypes it was traced with, so export and clean score share the evaluation's autocast.
    model = Bigram(data.profile.vocab_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        path = exported(model, data, tmp_path)
        in_process = evaluate_bpb(model, data, "cpu").val_bpb
    clean = scorer.score(path, bf16=True)
    assert clean.ok, clean.failure
    assert abs(clean.val_bpb - in_process) < 2e-3


def test_a_program_that_sees_future_tokens_fails_the_probe(data, scorer, tmp_path):
    clean = scorer.score(exported(Bigram(data.profile.vocab_size, peek=True), data, tmp_path))
    assert not clean.ok and clean.val_bpb is None and "causality check failed" in clean.failure


class ProbeAware(Bigram):
    """Leaks only when its rows do not share a prefix: the in-kernel probe's three rows always do."""

    def forward(self, idx):
        honest = self.head(self.embed(idx))
        leaky = honest + 5 * nn.functional.one_hot(torch.roll(idx, -1, dims=1), honest.size(-1))
        shared = (idx[:, 1:9] == idx[:1, 1:9]).all()
        return torch.where(shared, honest, leaky)


def test_a_program_that_recognises_the_probe_is_still_caught(data, scorer, tmp_path):
    model = ProbeAware(data.profile.vocab_size)
    evaluate_bpb(model, data, "cpu")  # fools the in-kernel probe
    clean = scorer.score(exported(model, data, tmp_path))
    assert not clean.ok and "causality check failed in the scorer" in clean.failure


def test_a_program_holding_pickled_objects_is_refused_before_loading(data, scorer, tmp_path):
    path = exported(Bigram(data.profile.vocab_size), data, tmp_path)
    with zipfile.ZipFile(path, "a") as archive:  # what a sandbox with file access could plant
        archive.writestr("run.program/data/constants/custom_obj_0", b"cos\nsystem\n(S'true'\ntR.")
    clean = scorer.score(path)
    assert not clean.ok and "Python object" in clean.failure


@pytest.mark.parametrize("content", [b"not a zip archive"])
def test_a_broken_program_file_gives_a_reason(scorer, tmp_path, content):
    path = tmp_path / "run.program.pt2"
    path.write_bytes(content)
    clean = scorer.score(path)
    assert not clean.ok and clean.failure


def test_changed_prepared_data_fails_the_scorer(data, prepared_dir, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(prepared_dir, copy)
    with open(copy / "cpu" / "val_rows.npy", "ab") as handle:
        handle.write(b"0")
    with Scorer(copy, "cpu", "cpu") as fresh:
        clean = fresh.score(exported(Bigram(data.profile.vocab_size), data, tmp_path))
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


def test_one_warm_process_serves_every_request(data, scorer, tmp_path):
    first = scorer.score(exported(Bigram(data.profile.vocab_size), data, tmp_path))
    pid = scorer._process.pid
    second = scorer.score(tmp_path / "run.program.pt2")
    assert first.ok and second.ok and first.val_bpb == second.val_bpb and scorer._process.pid == pid


@pytest.mark.parametrize(("device", "expected"), [("cpu", "cpu"), ("cuda:1", "cuda:1"), ("mps", "mps")])
def test_the_scorer_measures_where_the_experiment_trained(device, expected):
    from autoresearch_kernel.execution.scoring import scoring_device

    assert scoring_device(device) == expected
    assert scoring_device("auto") == ("cuda" if torch.cuda.is_available() else
                                      "mps" if torch.backends.mps.is_available() else "cpu")
