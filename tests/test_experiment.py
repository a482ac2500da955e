"""harness.experiment: the `run` object's budget, clock, token count and divergence check, in-process."""
import json
import math

import pytest
import torch

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.harness.experiment import TrainingFailed, pick_device, smoothed_curve, start
from autoresearch_kernel.harness.profiles import Budget, choose_budget, get_profile


def _start(prepared_dir, tmp_path, **budget):
    return start(profile="cpu", data_dir=str(prepared_dir), device="cpu", seed=0, metrics_path=tmp_path / "metrics.json", **budget)


def test_budget_defaults_to_the_profile_and_flops_then_tokens_take_precedence(prepared_dir, tmp_path):
    default = _start(prepared_dir, tmp_path)
    assert (default.budget_flops, default.budget_tokens, default.budget_seconds) == (1.25e12, None, None)
    run = _start(prepared_dir, tmp_path, budget_seconds=7.0, budget_tokens=1000)
    assert (run.budget_seconds, run.budget_tokens, run.budget_flops) == (None, 1000, None)
    assert _start(prepared_dir, tmp_path, budget_tokens=1000, budget_flops=5e9).budget_flops == 5e9
    assert _start(prepared_dir, tmp_path, budget_seconds=7.0).budget_seconds == 7.0
    # the gpu profile keeps the reference's time budget
    assert choose_budget("gpu") == Budget(seconds=300.0) and choose_budget("cpu").kind == "flops"


class Bigram(torch.nn.Module):
    """Embedding, `hidden` square layers, head: forward FLOPs per token 2 x width x (vocab + hidden x width)."""

    def __init__(self, vocab, width=8, hidden=0):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.hidden = torch.nn.ModuleList(torch.nn.Linear(width, width, bias=False) for _ in range(hidden))
        self.head = torch.nn.Linear(width, vocab, bias=False)

    def forward(self, idx, targets):
        x = self.embed(idx)
        for layer in self.hidden:
            x = layer(x)
        return torch.nn.functional.cross_entropy(self.head(x).flatten(0, 1), targets.flatten())


def _train(run, model, rows=2, seq_len=32):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = run.batches(rows, seq_len=seq_len)
    step = 0
    while not run.done():
        x, y, _ = next(batches)
        loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        run.tick(step, loss.detach())
        step += 1
    return step


def test_a_flop_budget_prices_every_token_at_the_first_steps_counted_flops(prepared_dir, tmp_path):
    vocab = get_profile("cpu").vocab_size
    per_token = 6 * 8 * vocab  # the head's matmul forward (2 x 8 x vocab) and backward (twice that)
    run = _start(prepared_dir, tmp_path, budget_flops=10 * 64 * per_token)  # ten steps of 2 x 32 tokens
    assert run.progress() == 0.0 and run.flops_used() is None
    steps = _train(run, Bigram(vocab))
    assert steps == 10 and run.tokens_served == 640 and run.flops_used() == 640 * per_token
    metrics = run.metrics(status="ok")
    assert (metrics.flops, metrics.flops_per_token, metrics.budget_flops) == (640 * per_token, per_token, 10 * 64 * per_token)


def test_a_deeper_model_gets_fewer_tokens_under_the_same_flop_budget(prepared_dir, tmp_path):
    vocab = get_profile("cpu").vocab_size
    budget = 40 * 64 * 6 * 8 * vocab
    shallow, deep = (_start(prepared_dir, tmp_path, budget_flops=budget) for _ in range(2))
    _train(shallow, Bigram(vocab))
    _train(deep, Bigram(vocab, hidden=64))  # 64 x 8 x 8 more per token: 1.125 x the shallow model's
    assert deep.tokens_served < shallow.tokens_served == 40 * 64
    assert deep.tokens_served == 36 * 64  # ceil(40 / 1.125) steps: the budget is spent at the first tick past it
    assert deep.flops_used() >= budget > deep.flops_used() - 64 * 6 * 8 * (vocab + 64 * 8)


def test_start_removes_a_stale_metrics_file(prepared_dir, tmp_path):
    (tmp_path / "metrics.json").write_text('{"status": "ok", "val_bpb": 0.1}')
    _start(prepared_dir, tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_batches_are_counted_and_spend_a_token_budget(prepared_dir, tmp_path):
    run = _start(prepared_dir, tmp_path, budget_tokens=3 * 4 * 32)
    batches = run.batches(4, seq_len=32)
    seen = 0
    while not run.done():
        x, y, epoch = next(batches)
        assert x.shape == y.shape == (4, 32) and x.device.type == "cpu"
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
        seen += 1
        assert run.progress() == pytest.approx(min(1.0, seen / 3))
    assert seen == 3 and run.tokens_served == 384


def test_same_seed_serves_the_same_batches(prepared_dir, tmp_path):
    first = next(_start(prepared_dir, tmp_path).batches(2))[0]
    again = next(_start(prepared_dir, tmp_path).batches(2))[0]
    assert torch.equal(first, again)


def test_longer_rows_than_the_profile_are_refused(prepared_dir, tmp_path):
    run = _start(prepared_dir, tmp_path)
    with pytest.raises(AutoresearchError, match="seq_len"):
        next(run.batches(1, seq_len=run.profile.seq_len + 1))


def test_warm_up_steps_are_left_off_the_clock(prepared_dir, tmp_path):
    run = _start(prepared_dir, tmp_path, budget_seconds=1000.0)
    batches = run.batches(2)
    next(batches)
    run.tick(0, torch.tensor(5.0))
    assert run.training_seconds == 0.0 and run.tokens_per_second() is None  # the first step is warm-up on CPU
    for step in (1, 2):
        next(batches)
        run.tick(step, 4.0)
    assert run.training_seconds > 0 and run.timed_tokens == 2 * 2 * run.profile.seq_len
    assert run.num_steps == 3 and run.losses == [5.0, 4.0, 4.0]
    assert 0 < run.progress() < 1 and not run.done()


@pytest.mark.parametrize("loss", [math.nan, math.inf, 250.0])
def test_divergence_records_a_failure_then_raises(prepared_dir, tmp_path, loss):
    run = _start(prepared_dir, tmp_path, budget_tokens=10_000)
    run.tick(0, 6.0)
    with pytest.raises(TrainingFailed, match="diverged"):
        run.tick(1, torch.tensor(loss))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "diverged" in record["failure"] and "step 1" in record["failure"]
    assert record["val_bpb"] is None and record["num_steps"] == 2 and record["budget_tokens"] == 10_000


def test_progress_line_names_step_loss_rate_and_budget_left(prepared_dir, tmp_path, capsys):
    run = _start(prepared_dir, tmp_path, budget_seconds=60.0)
    run.tick(0, 5.5)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("step 00000 | loss 5.5000 | warm-up |") and line.endswith("60s left")


def test_device_auto_and_missing_devices():
    assert pick_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(AutoresearchError, match="no CUDA"):
            pick_device("cuda")


def test_smoothed_curve_is_unbiased_from_the_first_value():
    assert smoothed_curve([4.0, 4.0, 4.0]) == pytest.approx([4.0, 4.0, 4.0])
    assert smoothed_curve([4.0, 2.0])[1] == pytest.approx((0.09 * 4 + 0.1 * 2) / 0.19)


@pytest.mark.slow  # two evaluations of the profile's 65,536 tokens
def test_the_same_seed_and_flop_budget_give_the_same_val_bpb_to_the_last_digit(prepared_dir, tmp_path):
    from autoresearch_kernel.harness.data import load_prepared
    from autoresearch_kernel.harness.evaluate import evaluate_bpb

    vocab = get_profile("cpu").vocab_size
    data = load_prepared(str(prepared_dir), "cpu")
    values = []
    for _ in range(2):
        run = _start(prepared_dir, tmp_path, budget_flops=12 * 64 * 6 * 8 * vocab)
        model = Bigram(vocab)  # initialised after start: seeded by it

        def logits(idx, model=model):
            return model.head(model.embed(idx))

        _train(run, model)
        scorer = torch.nn.Module()
        scorer.forward = logits
        values.append((evaluate_bpb(scorer, data).val_bpb, run.flops_used(), run.losses))
    assert values[0] == values[1] and values[0][1] == 12 * 64 * 6 * 8 * vocab
