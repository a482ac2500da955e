"""harness.finish: checkpoint before evaluation, metrics.json, the reference's summary block, MFU table."""
import json

import pytest
import torch
from torch import nn

from autoresearch_kernel.harness.experiment import start
from autoresearch_kernel.harness.finish import checkpoint_path, finish, flops_per_token, peak_flops, summary
from autoresearch_kernel.harness.metrics import Metrics


class Bigram(nn.Module):
    """The smallest honest language model: next-token logits from the current token."""

    def __init__(self, vocab):
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)
        self.depth = 1

    def forward(self, idx):
        return self.table(idx)


def _trained_run(prepared_dir, tmp_path, steps=3):
    run = start(profile="cpu", data_dir=str(prepared_dir), device="cpu", seed=0, budget_tokens=10**6, metrics_path=tmp_path / "run1.metrics.json")
    model = Bigram(run.profile.vocab_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    batches = run.batches(8)
    for step in range(steps):
        x, y, _ = next(batches)
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        run.tick(step, loss)
    return run, model


def test_finish_saves_the_checkpoint_then_writes_metrics_and_the_summary(prepared_dir, tmp_path, capsys):
    run, model = _trained_run(prepared_dir, tmp_path)
    finish(run, model)
    record = json.loads((tmp_path / "run1.metrics.json").read_text())
    assert record["status"] == "ok" and record["failure"] is None
    assert 0 < record["val_bpb"] < 20
    assert record["num_steps"] == 3 and record["total_tokens_M"] == pytest.approx(3 * 8 * 256 / 1e6, abs=1e-3)
    assert record["depth"] == 1 and record["num_params_M"] == pytest.approx(4096**2 / 1e6, abs=1e-3)
    assert record["mfu_percent"] is None and record["peak_vram_mb"] > 0  # CPU: unknown peak; RSS
    assert (record["seed"], record["device"], record["profile"], record["budget_tokens"]) == (0, "cpu", "cpu", 10**6)
    assert record["checkpoint"] == str(tmp_path / "run1.checkpoint.pt")
    state = torch.load(record["checkpoint"], weights_only=True)
    assert torch.equal(state["table.weight"], model.table.weight)
    out = capsys.readouterr().out
    assert f"\n---\nval_bpb:          {record['val_bpb']:.6f}\n" in out
    assert "\nmfu_percent:      unknown\n" in out and out.rstrip().endswith("depth:            1")


def test_an_evaluation_crash_keeps_the_checkpoint_and_records_why(prepared_dir, tmp_path):
    run, model = _trained_run(prepared_dir, tmp_path, steps=1)
    model.forward = lambda idx: model.table(idx)[..., :10]  # wrong logits shape: the harness refuses it
    with pytest.raises(Exception, match="shape"):
        finish(run, model)
    record = json.loads((tmp_path / "run1.metrics.json").read_text())
    assert record["status"] == "failed" and record["failure"].startswith("evaluation failed: EvaluationError")
    assert (tmp_path / "run1.checkpoint.pt").is_file()


def test_summary_matches_the_reference_block_line_for_line():
    metrics = Metrics(
        status="ok", failure=None, val_bpb=0.9979, training_seconds=300.1, total_seconds=325.9,
        peak_vram_mb=45060.2, mfu_percent=39.8, total_tokens_M=499.6, num_steps=953, num_params_M=50.3,
        depth=8, seed=0, device="cuda", profile="gpu", budget_seconds=300.0, budget_tokens=None, checkpoint=None,
    )
    assert summary(metrics) == (
        "---\n"
        "val_bpb:          0.997900\n"
        "training_seconds: 300.1\n"
        "total_seconds:    325.9\n"
        "peak_vram_mb:     45060.2\n"
        "mfu_percent:      39.80\n"
        "total_tokens_M:   499.6\n"
        "num_steps:        953\n"
        "num_params_M:     50.3\n"
        "depth:            8"
    )


@pytest.mark.parametrize(
    "name, flops",
    [
        ("NVIDIA H100 80GB HBM3", 989.5e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989.5e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA A10G", 125e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("NVIDIA GeForce RTX 3090", 71e12),
        ("Tesla T4", None),  # unlisted: MFU is reported as unknown, never against an H100
    ],
)
def test_peak_flops_table(name, flops):
    assert peak_flops(name) == flops


def test_checkpoint_sits_next_to_the_metrics(tmp_path):
    assert checkpoint_path(tmp_path / "metrics.json") == tmp_path / "checkpoint.pt"
    assert checkpoint_path(tmp_path / "exp7.metrics.json") == tmp_path / "exp7.checkpoint.pt"


def test_flops_per_token_prefers_the_models_own_count():
    model = Bigram(16)
    assert flops_per_token(model) == 0  # only an embedding: nothing counted by the 6N estimate
    model.flops_per_token = lambda: 123.0
    assert flops_per_token(model) == 123.0
