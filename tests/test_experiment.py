"""harness.experiment: the `run` object's budget, clock, token count and divergence check, in-process."""
import json
import math

import pytest
import torch

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.harness.experiment import TrainingFailed, pick_device, smoothed_curve, start
from autoresearch_kernel.harness.profiles import get_profile


def _start(prepared_dir, tmp_path, **budget):
    return start(profile="cpu", data_dir=str(prepared_dir), device="cpu", seed=0, metrics_path=tmp_path / "metrics.json", **budget)


def test_budget_defaults_to_the_profile_and_tokens_take_precedence(prepared_dir, tmp_path):
    assert _start(prepared_dir, tmp_path).budget_seconds == get_profile("cpu").budget_seconds
    run = _start(prepared_dir, tmp_path, budget_seconds=7.0, budget_tokens=1000)
    assert (run.budget_seconds, run.budget_tokens) == (None, 1000)
    assert _start(prepared_dir, tmp_path, budget_seconds=7.0).budget_seconds == 7.0


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
