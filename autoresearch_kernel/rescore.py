"""The clean-process re-score: the harness measures an exported model again, with no sandbox code around.

Inside the experiment's kernel the sandbox runs in the same process as the harness, so whatever it did
(patch torch, rewrite the harness's globals, fake metrics.json) could reach the score there. Before the
loop keeps a result it therefore scores the trained model once more in a fresh interpreter that runs no
line of the notebook: `harness.finish` exported the eager model with torch.export (a graph of torch
operators plus its weights), and this module loads that program and calls the harness's `evaluate_bpb`
(its causality probe included) on the verified prepared data, then checks causality once more on random
evaluation rows spliced with other real rows (a probe the model cannot recognise).

    parent (the loop):  rescore(program, data_dir, profile, device, bf16) -> Rescore
    child:              python -I -X pycache_prefix=<empty dir> -m autoresearch_kernel.rescore ...

The child runs isolated (`-I`: no PYTHON* variables, no user site, not the current folder on sys.path),
with a fresh bytecode cache (a planted .pyc cannot stand in for the harness's source), without the loop's
secrets, and with torch forced to load only tensors from the program file (`torch.export.load` would
otherwise unpickle arbitrary objects from a file the sandbox could have written).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from autoresearch_kernel.experiment_env import experiment_env

# How far the clean score may sit from the kernel's. The same program on the same device in fp32 matches
# to about 1e-6 bpb (measured: 0.0 on CPU); bf16 autocast on a GPU adds kernel-choice noise of the order of
# 1e-4. Both bounds stay well below the gate's margin (seed-to-seed noise, ~1e-3 to 1e-2 bpb), so a fake
# within the tolerance cannot buy a keep on its own.
TOLERANCE_FP32 = 1e-4
TOLERANCE_BF16 = 2e-3
TIMEOUT_S = 900.0
CAUSALITY_ROWS = 32  # evaluation rows the clean re-score splices to check causality (two passes over them)  # the evaluation of the gpu profile on a CPU is the slow case


@dataclass(frozen=True)
class Rescore:
    """What the clean process measured, or why it could not."""

    val_bpb: float | None
    seconds: float  # wall time of the whole clean process, start-up included
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def tolerance(bf16: bool) -> float:
    return TOLERANCE_BF16 if bf16 else TOLERANCE_FP32


def rescore(program: Path, data_dir: str | Path | None, profile: str, device: str = "cpu", bf16: bool = False,
            timeout_s: float = TIMEOUT_S) -> Rescore:
    """Score the exported `program` in a clean child process; never raises for a bad program."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="rescore-") as scratch:
        command = [sys.executable, "-I", "-X", f"pycache_prefix={scratch}", "-m", "autoresearch_kernel.rescore",
                   "--program", str(program), "--data-dir", str(data_dir or ""), "--profile", profile,
                   "--device", device] + (["--bf16"] if bf16 else [])
        env = experiment_env(device=device if device.startswith("cuda") or device == "cpu" else None)
        env["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env,
                                  cwd=scratch, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Rescore(None, time.monotonic() - started, f"the clean re-score ran past {timeout_s:.0f} s")
    seconds = time.monotonic() - started
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Rescore(None, seconds, f"the clean re-score process failed (exit {done.returncode}): {tail}")
    return Rescore(answer.get("val_bpb"), seconds, answer.get("failure"))


# Where torch.export's archive keeps pickled Python objects (torchbind and opaque constants).
PICKLED_OBJECT_PREFIXES = ("CUSTOM_OBJ_FILENAME_PREFIX", "OPAQUE_OBJ_FILENAME_PREFIX")


# ---- the child ----------------------------------------------------------------------------------------

def check_archive(program: Path) -> None:
    """Refuse a program file that holds pickled Python objects other than tensors (torchbind or opaque
    constants): only tensors and the serialized graph may come from the sandbox's side."""
    from torch.export.pt2_archive import constants

    # Older torch releases (2.11) name only the first kind; every name present is refused.
    prefixes = tuple(getattr(constants, name) for name in PICKLED_OBJECT_PREFIXES if hasattr(constants, name))
    with zipfile.ZipFile(program) as archive:
        for name in archive.namelist():
            leaf = name.rsplit("/", 1)[-1]
            if leaf.startswith(prefixes):
                raise ValueError(f"the exported program holds a Python object ({leaf}), not only tensors")


def score_program(program: Path, data_dir: str | None, profile: str, device: str, bf16: bool) -> float:
    """Load the program and score it with the harness (the child's work)."""
    import contextlib

    import torch

    from autoresearch_kernel.harness.data import load_prepared
    from autoresearch_kernel.harness.evaluate import evaluate_bpb

    data = load_prepared(data_dir or None, profile)
    check_archive(program)
    module = torch.export.load(str(program)).module()
    target = torch.device(device)
    model = program_module(module.to(target))
    precision = torch.autocast(target.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with precision:
        value = evaluate_bpb(model, data, target).val_bpb
        check_causality_on_rows(model, data, target)
    return value


def check_causality_on_rows(model, data, device, rows: int = CAUSALITY_ROWS) -> None:
    """A causality check the model cannot tell from evaluation: random evaluation rows, each cut at a random
    point and continued with another real row's tokens (real text, not random ids); the log-probabilities
    up to each cut must not move. The in-kernel probe uses one fixed row and random ids, which a model
    could learn to recognise (identical prefixes across its three rows) and behave for."""
    import numpy as np
    import torch

    from autoresearch_kernel.errors import EvaluationError
    from autoresearch_kernel.harness.evaluate import PROBE_ATOL

    generator = np.random.default_rng()  # unseeded: the rows checked are not knowable in advance
    every = data._validation_rows()
    chosen = np.sort(generator.choice(len(every), size=min(rows, len(every)), replace=False))
    batch = torch.from_numpy(np.asarray(every[chosen, :-1], dtype=np.int64))
    cuts = torch.from_numpy(generator.integers(1, batch.size(1) - 1, size=len(batch)))
    after = torch.arange(batch.size(1))[None, :] > cuts[:, None]
    spliced = torch.where(after, torch.roll(batch, 1, dims=0), batch)
    size = data.profile.eval_batch_size
    with torch.no_grad():
        for start in range(0, len(batch), size):
            part = slice(start, start + size)
            original = torch.log_softmax(model(batch[part].to(device)).float(), dim=-1)
            changed = torch.log_softmax(model(spliced[part].to(device)).float(), dim=-1)
            before = ~after[part].to(device)
            drift = float(((original - changed).abs().amax(dim=-1) * before).max())
            if drift > PROBE_ATOL:
                raise EvaluationError(f"causality check failed in the clean re-score: continuing rows with other "
                                      f"text changed earlier predictions by {drift:.3g} nats; the model sees future tokens")


def program_module(graph):
    """The exported graph as the module evaluate_bpb expects (an exported module refuses train()/eval())."""
    import torch

    class Program(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.graph = [graph]  # a list: not registered, so train()/eval() never reach the graph

        def forward(self, idx):
            return self.graph[0](idx)

        def train(self, mode: bool = True):
            self.training = mode
            return self

    return Program()




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autoresearch_kernel.rescore", description=__doc__.splitlines()[0])
    parser.add_argument("--program", required=True)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args(argv)
    try:
        value = score_program(Path(args.program), args.data_dir, args.profile, args.device, args.bf16)
        answer = {"val_bpb": value, "failure": None}
    except Exception as error:  # the reason goes to the loop's row
        answer = {"val_bpb": None, "failure": f"{type(error).__name__}: {error}".splitlines()[0][:400]}
    print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
