"""The scorer: the only source of the metric. It measures a trained model outside the experiment's jail.

The experiment's kernel runs candidate code, so nothing it computes or writes can be believed: it may patch
torch or the harness in its own memory, print any summary, write any metrics.json. What it hands over is
the trained model as a `torch.export` program (a graph of torch operators plus its weights, written by
`harness.finish`). The scorer loads that program in a process of its own, in a jail of its own (read-only
system, package, prepared data and experiment folders; nothing writable; no network), and runs the
validation split, which the experiment's jail does not contain, blind (integrity/blind.py: shuffled rows with
copies spliced in, which check causality and row independence in calls the model cannot tell from scored
ones). The program is checked first: only tensors and the serialized graph, no pickled objects, and a pure
function of its input (no buffer or input written, no in-place operator), so no call can see another.

It stays warm, one per loop: torch is imported and the data verified and loaded once, and each request
costs only the program's load and the evaluation. The loop talks to it over a pipe, one JSON line each way:

    parent:  Scorer(data_dir, profile, device, jail).score(program, bf16) -> Score
    child:   python -I -X pycache_prefix=<cache> -c <start> --data-dir D --profile P --device X
             reads {"program": path, "bf16": bool}, answers {"val_bpb": x, "failure": null, "seconds": s,
             "forward_flops_per_token": f, "forward_us_per_token": u}

It also measures what the program's forward pass costs, for the loop's verification of the budget
(integrity/budget.py): its FLOPs per token (harness/flops.py, on a row of the profile's length), which price
the tokens trained with it, and the compute microseconds per scored token of its blind evaluation (CPU time
of this process on a CPU, wall time on a GPU), which say how fast this machine runs a model of that shape.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from autoresearch_kernel.integrity import bytecode
from autoresearch_kernel.integrity.environment import experiment_env, package_root
from autoresearch_kernel.integrity.jail import Jail

START_TIMEOUT_S = 300.0  # torch's import and the data's verification, on a slow disk
TIMEOUT_S = 900.0  # one program's evaluation: the gpu profile's evaluation on a CPU is the slow case
LOG_TAIL_LINES = 5


@dataclass(frozen=True)
class Score:
    """What the scorer measured, or why it could not."""

    val_bpb: float | None
    seconds: float  # the request's wall time in the parent (load and evaluation)
    failure: str | None = None
    forward_flops_per_token: float | None = None  # the program's forward pass, counted here
    forward_us_per_token: float | None = None  # compute microseconds per scored token of its evaluation

    @property
    def ok(self) -> bool:
        return self.failure is None


class Scorer:
    """A warm scoring process. Not thread-safe: one request at a time (the loop scores in order)."""

    def __init__(self, data_dir: str | Path | None, profile: str, device: str = "cpu", jail: Jail | None = None,
                 log_path: Path | None = None, timeout_s: float = TIMEOUT_S):
        self.data_dir, self.profile, self.device = data_dir, profile, device
        self.jail, self.log_path, self.timeout_s = jail, log_path, timeout_s
        self._process: subprocess.Popen | None = None
        self._confinement = None  # the jail's limits in force (integrity/limits.py), while it runs
        self._answers: queue.Queue = queue.Queue()
        self._scratch: tempfile.TemporaryDirectory | None = None

    def score(self, program: Path, bf16: bool = False) -> Score:
        """Score the exported `program`; never raises for a bad program (the failure says why)."""
        started = time.monotonic()
        try:
            self._ensure_started()
            request = json.dumps({"program": os.path.abspath(program), "bf16": bool(bf16)})  # not resolved
            self._process.stdin.write(request + "\n")
            self._process.stdin.flush()
            answer = self._answer(self.timeout_s, f"scoring ran past {self.timeout_s:.0f} s")
        except (OSError, RuntimeError) as error:
            self.close()  # a dead or stuck scorer is started afresh for the next request
            return Score(None, time.monotonic() - started, f"scorer: {error}")
        return Score(answer.get("val_bpb"), time.monotonic() - started, answer.get("failure"),
                     answer.get("forward_flops_per_token"), answer.get("forward_us_per_token"))

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()
            for stream in (process.stdin, process.stdout):
                stream.close()
        if self._confinement is not None:
            self._confinement.close()
            self._confinement = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the child process --------------------------------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self.close()
        self._scratch = tempfile.TemporaryDirectory(prefix="scorer-")
        jail, pycache = bytecode.with_bytecode(self.jail, os.path.join(self._scratch.name, "pycache"))
        start = f"import sys; sys.path.insert(0, {str(package_root())!r}); " \
                "from autoresearch_kernel.integrity.scorer import main; sys.exit(main())"
        command = [sys.executable, "-I", "-X", f"pycache_prefix={pycache}", "-c", start,
                   "--data-dir", str(self.data_dir or ""), "--profile", self.profile,
                   # cuda:N is pinned through CUDA_VISIBLE_DEVICES below, so the child sees it as cuda
                   "--device", "cuda" if self.device.startswith("cuda") else self.device]
        options = {}
        if jail is not None:
            command = jail.command(command)
            self._confinement = jail.confine()
            options = self._confinement.popen_options()
        cuda = self.device.startswith("cuda") or self.device == "cpu"
        env = experiment_env(self.device if cuda else None, home=self._scratch.name if not self.jail else None)
        env["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # torch.export.load unpickles nothing but tensors
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                             text=True, env=env, cwd=self._scratch.name, start_new_session=True,
                                             **options)
        finally:
            if self.log_path:
                log.close()
        self._answers = queue.Queue()
        threading.Thread(target=_read_lines, args=(self._process.stdout, self._answers), daemon=True).start()
        ready = self._answer(START_TIMEOUT_S, f"the scorer did not start within {START_TIMEOUT_S:.0f} s")
        if ready.get("failure"):
            raise RuntimeError(ready["failure"])

    def _answer(self, timeout_s: float, late: str) -> dict:
        try:
            line = self._answers.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(late) from None
        if line is None:
            code = self._process.wait()
            limit = self._confinement.exceeded() if self._confinement else None
            raise RuntimeError(f"the scoring process ended (exit {code}{', ' + limit if limit else ''})"
                               f"{self._log_tail()}")
        return json.loads(line)

    def _log_tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        from autoresearch_kernel.integrity import untrusted

        text = untrusted.read_text(self.log_path, untrusted.LOG_TAIL_BYTES, tail=True)
        lines = [untrusted.clean(line, 300) for line in text.strip().splitlines()[-LOG_TAIL_LINES:]]
        return ": " + " | ".join(lines) if lines else ""


def _read_lines(stream, answers: queue.Queue) -> None:
    """The child's answers, line by line, then None at its end (a reader thread, so waits can time out)."""
    for line in stream:
        if line.startswith("{"):
            answers.put(line)
    answers.put(None)


# ---- the child ----------------------------------------------------------------------------------------

# Where torch.export's archive keeps pickled Python objects (torchbind and opaque constants).
PICKLED_OBJECT_PREFIXES = ("CUSTOM_OBJ_FILENAME_PREFIX", "OPAQUE_OBJ_FILENAME_PREFIX")


PROGRAM_BYTES = 16 * 1024**3  # an exported model larger than this is refused


def read_program(path: Path):
    """The program file in memory, opened as untrusted: the experiment wrote its folder, so the name may be a
    link or a FIFO planted there; no link is followed and only a regular file is read (untrusted.py)."""
    from autoresearch_kernel.integrity import untrusted

    return untrusted.load(path, PROGRAM_BYTES)


def check_archive(program) -> None:
    """Refuse a program file that holds pickled Python objects other than tensors (torchbind or opaque
    constants): only tensors and the serialized graph may come from the experiment's side."""
    from torch.export.pt2_archive import constants

    # Older torch releases (2.11) name only the first kind; every name present is refused.
    prefixes = tuple(getattr(constants, name) for name in PICKLED_OBJECT_PREFIXES if hasattr(constants, name))
    with zipfile.ZipFile(program) as archive:
        for name in archive.namelist():
            leaf = name.rsplit("/", 1)[-1]
            if leaf.startswith(prefixes):
                raise ValueError(f"the exported program holds a Python object ({leaf}), not only tensors")


class Measure(NamedTuple):
    """What scoring one program measured."""

    val_bpb: float
    forward_flops_per_token: float
    forward_us_per_token: float  # compute microseconds per scored token of the blind evaluation


def score_program(program, data, device: str, bf16: bool) -> Measure:
    """Load the program (a file object, see `read_program`), refuse one that keeps state or writes into its
    input, score it blind (integrity/blind.py) on the loaded, verified data, and count its forward pass."""
    import contextlib

    import torch

    from autoresearch_kernel.harness.flops import forward_flops_per_token
    from autoresearch_kernel.integrity.blind import blind_bpb

    check_archive(program)
    program.seek(0)
    exported = torch.export.load(program)
    check_pure(exported)
    target = torch.device(device)
    model = program_module(exported.module().to(target))
    precision = torch.autocast(target.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with precision:
        started = compute_clock(target)
        value = blind_bpb(model, data, target)
        seconds = compute_clock(target) - started
        flops = forward_flops_per_token(model, data.profile.seq_len, target)
    return Measure(value, flops, 1e6 * seconds / data.profile.eval_tokens)


def compute_clock(device) -> float:
    """Seconds of compute so far, as the budget counts a run's: this process's CPU time (all its threads) on a
    CPU, where wall time would count the other processes sharing the cores; wall time on a GPU, whose work the
    CPU time does not see."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


GRAPH_NODE_KINDS = ("placeholder", "get_attr", "call_function", "output")  # what torch.export writes


def check_pure(exported) -> None:
    """Refuse a program whose output could depend on anything but its input: one that writes into its buffers
    (state carried from call to call, e.g. a counter of calls) or into its input (the scorer's tensors), as its
    graph signature declares, or whose graph holds an in-place operator (a hand-written graph need not
    declare it)."""
    import torch

    signature = exported.graph_signature
    if signature.buffers_to_mutate:
        names = ", ".join(sorted(signature.buffers_to_mutate.values())[:3])
        raise ValueError(f"the exported program writes into its buffers ({names}): a model that keeps state "
                         "from call to call is not scored; compute everything from the input")
    if signature.user_inputs_to_mutate:
        raise ValueError("the exported program writes into its input tensor: it is not scored; "
                         "leave the input as it is")
    for module in exported.graph_module.modules():
        for node in getattr(module, "graph", torch.fx.Graph()).nodes:
            if node.op not in GRAPH_NODE_KINDS:
                raise ValueError(f"the exported program's graph calls {node.op} {node.target}: only operators "
                                 "are scored")
            schema = getattr(node.target, "_schema", None)
            if node.op == "call_function" and schema is not None and schema.is_mutable:
                raise ValueError(f"the exported program's graph holds an in-place operator ({node.target}): "
                                 "it is not scored; use out-of-place operations")


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


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:400]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoresearch scorer", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    def answer(**fields) -> None:
        print(json.dumps(fields), flush=True)

    try:
        from autoresearch_kernel.harness.data import load_prepared

        data = load_prepared(args.data_dir or None, args.profile)
    except Exception as error:  # the loop says why scoring is impossible, then stops
        answer(failure=f"the scorer cannot load the prepared data: {_failure(error)}")
        return 0
    answer(ready=True)
    for line in sys.stdin:
        started = time.monotonic()
        try:
            request = json.loads(line)
            measure = score_program(read_program(Path(request["program"])), data, args.device,
                                    bool(request.get("bf16")))
            answer(val_bpb=measure.val_bpb, failure=None, seconds=round(time.monotonic() - started, 3),
                   forward_flops_per_token=measure.forward_flops_per_token,
                   forward_us_per_token=round(measure.forward_us_per_token, 4))
        except Exception as error:  # the reason goes to the experiment's row
            answer(val_bpb=None, failure=_failure(error), seconds=round(time.monotonic() - started, 3))
    return 0
