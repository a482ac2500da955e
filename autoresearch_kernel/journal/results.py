"""results.tsv: one row per executed notebook, appended atomically, loaded as a pandas DataFrame.

The first five columns are the reference's, in its formats (7-char commit, val_bpb to 6 decimals, memory in
GB to 1 decimal, keep/discard/crash, a one-line description; crash rows carry 0.000000 and 0.0), so its
analysis code reads our files. Our extra columns follow (see `COLUMNS`).

A kill must never leave half a row: each append is one `os.write` of whole lines on an `O_APPEND`
descriptor followed by `fsync`, and a reader ignores a final line without its newline (the next writer
truncates it away before appending). Writers take turns under an advisory lock (`flock`), so a torn tail is
only ever a killed writer's, never a row another writer is still writing. The file lives under `runs/<tag>/`, which git ignores, so a `git reset`
in the loop's worktree can never erase history.

Invalid proposals (no commit, no experiment) go to a sibling file of the same shape, `invalid.tsv`, so that
results.tsv keeps the reference's three statuses, and two of ours: "noop", a candidate whose result is
identical to its parent's on the same seed (nothing was measured; reverted like a discard), and "stale", a
candidate that beat the best after the best had moved on from its parent (lanes; see settle.py).
invalid.tsv's statuses are "invalid" (a reply that does not apply) and "duplicate" (a candidate that would
run code already run, memory.py, or running now; its val_bpb is the earlier experiment's, its failure names
that experiment).
"""
from __future__ import annotations

import dataclasses
import fcntl
import io
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from autoresearch_kernel.text import one_line

# noop: identical to its parent's run, nothing measured. stale: it beat the best, but the best had moved on
# from its parent while it ran (lanes); its change was re-applied onto the new best (a "rebase") or did not apply
STATUSES = ("keep", "discard", "crash", "noop", "stale",
            # over-budget: it trained past its budget, as the loop measured it outside the kernel (integrity/budget.py)
            "over-budget",
            # suspect: a val_bpb below the profile's floor (a leak or a cheat); never kept, reverted, told
            "suspect")
NOT_RUN = ("invalid", "duplicate")  # invalid.tsv's statuses: proposals that produced no experiment
KINDS = ("baseline", "candidate", "confirm", "fix", "rebase", "pair")  # pair: the best's run on a seed it lacked


@dataclass(frozen=True)
class Row:
    """One executed notebook (or, in invalid.tsv, one proposal that could not be applied)."""

    # the reference's five columns
    commit: str  # 7-char hash of the committed notebook ("" for an invalid proposal)
    val_bpb: float | None  # None for a crash: written as 0.000000
    memory_gb: float | None  # peak memory; None for a crash: written as 0.0
    status: str  # keep | discard | crash | noop | stale (invalid in invalid.tsv)
    description: str
    # ours
    experiment: int = 0  # row number within the run, 1-based, never reused
    kind: str = "candidate"  # baseline | candidate | confirm | fix
    parent: str = ""  # 7-char hash of the kept commit the candidate was built on
    seed: int = 0
    wall_seconds: float = 0.0  # the whole notebook, kernel start to finish
    training_seconds: float = 0.0
    tokens_m: float = 0.0  # training tokens in millions
    margin: float = 0.0  # the gate's margin the candidate had to beat
    best: float | None = None  # the gate's best val_bpb after this row
    noise_std: float | None = None  # the noise sd the gate decided with: the upper bound of the pooled estimate
    prompt_tokens: int = 0  # LLM usage of the proposal that produced this row
    completion_tokens: int = 0
    cost_usd: float | None = None  # None where no prices are configured
    notebook: str = ""  # executed notebook, relative to the run folder
    failure: str = ""  # one line: why it crashed or was not kept
    finished_at: str = ""  # local ISO time the row was written
    sandbox: str = ""  # bwrap: the experiment ran in the jail; none: unsandboxed (--no-sandbox, or no bwrap)
    proposer: str = ""  # who proposed it: mutate | llm | agent (a coding agent through `autoresearch step`)
    lane: int = 0  # the lane it ran on, 1-based (0: never ran)
    device: str = ""  # the device it was given: cpu | cuda:N | ...
    node: str = ""  # the machine it ran on (this host's name, or a Ray node's address)
    queued_at: str = ""  # local ISO times: committed (runnable), started on its lane
    started_at: str = ""
    # the FLOP budget and its verification outside the kernel (harness/flops.py, integrity/budget.py)
    flops: float | None = None  # training FLOPs the harness counted in the kernel (informative)
    forward_flops_per_token: float | None = None  # the exported program's, counted by the scorer
    cpu_seconds: float | None = None  # CPU time of the run's whole process tree, measured by the loop
    # the paired gate (issue 20): this run against the best's run on the same seed
    pair_experiment: int = 0  # the experiment number of the best's run on this seed it was paired with (0: none)
    paired_gain: float | None = None  # improvement(that run, this run): positive when this run is better
    # the task (tasks/): the `val_bpb` column holds the task's metric, kept under the reference's name so that
    # its tools read our files; these say which metric it is, which way is better, and who measured it
    metric: str = ""  # the metric's name ("" in files written before tasks: val_bpb)
    direction: str = ""  # lower | higher is better ("" in older files: lower)
    scored: str = ""  # outside: by a scorer in a jail of its own | kernel: reported by the experiment itself
    # how fast this machine runs the exported program: the scorer's compute microseconds per scored token (CPU
    # time on a CPU, wall time on a GPU); under a FLOP budget it scales the run's allowed compute seconds
    forward_us_per_token: float | None = None


COLUMNS = tuple(field.name for field in dataclasses.fields(Row))
MEASURED = ("flops", "forward_flops_per_token", "cpu_seconds", "forward_us_per_token")  # numbers that may be unknown (empty cells)
REFERENCE_COLUMNS = COLUMNS[:5]
# results.tsv is read by people in spreadsheets: these names match the reference's style.
HEADER = "\t".join(COLUMNS) + "\n"


def _fmt(value: object, digits: int | None = None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and digits is not None:
        return f"{value:.{digits}f}" if math.isfinite(value) else ""
    return str(value)


def format_row(row: Row) -> str:
    """The row as one TSV line, in the reference's formats for its five columns."""
    crashed = row.status == "crash" or row.val_bpb is None
    cells = [
        row.commit[:7],
        "0.000000" if crashed else f"{row.val_bpb:.6f}",
        "0.0" if crashed or row.memory_gb is None else f"{row.memory_gb:.1f}",
        row.status,
        one_line(row.description, 200),
        str(row.experiment),
        row.kind,
        row.parent[:7],
        str(row.seed),
        _fmt(float(row.wall_seconds), 1),
        _fmt(float(row.training_seconds), 1),
        _fmt(float(row.tokens_m), 3),
        _fmt(float(row.margin), 6),
        _fmt(row.best, 6),
        _fmt(row.noise_std, 6),
        str(int(row.prompt_tokens)),
        str(int(row.completion_tokens)),
        _fmt(row.cost_usd, 6),
        one_line(row.notebook),
        one_line(row.failure),
        row.finished_at or time.strftime("%Y-%m-%dT%H:%M:%S"),
        row.sandbox,
        row.proposer,
        str(int(row.lane)),
        row.device,
        row.node,
        row.queued_at,
        row.started_at,
        _fmt(row.flops, 0),
        _fmt(row.forward_flops_per_token, 1),
        _fmt(row.cpu_seconds, 2),
        str(int(row.pair_experiment)),
        _fmt(row.paired_gain, 6),
        row.metric,
        row.direction,
        row.scored,
        _fmt(row.forward_us_per_token, 4),
    ]
    return "\t".join(cells) + "\n"


def console_line(row: Row) -> str:
    """One line per experiment for a terminal: number, commit, the metric's value, status, description."""
    value = f"{row.val_bpb:.6f}" if row.val_bpb is not None and row.status != "crash" else "-".center(8)
    # a baseline seed is written "keep" (the reference's statuses) but decides nothing: it reads "baseline"
    status = "baseline" if row.kind == "baseline" and row.status != "crash" else row.status
    kind = "" if row.kind in ("candidate", "baseline") else f"[{row.kind}] "
    why = f"  ({one_line(row.failure, 100)})" if row.status in ("crash", "suspect") and row.failure else ""
    return (f"{row.experiment:>4}  {row.commit[:7] or '-------'}  {value}  {status:<8}  {kind}"
            f"{one_line(row.description, 120)}{why}")


def _repair_torn_tail(path: Path) -> None:
    """Cut a final line that lost its newline to a kill, so the next append starts on a fresh line."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)
            handle.flush()
            os.fsync(handle.fileno())


def ensure_file(path: str | os.PathLike) -> Path:
    """Create the file with its header only, all or nothing.

    The header is written to a temporary file and hard-linked into place: a kill leaves either no file or
    a whole header, and of two writers racing to create it the second cannot replace the first's rows.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = _temporary_beside(path, HEADER)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    else:
        _upgrade_header(path)
    return path


def _temporary_beside(path: Path, text: str) -> Path:
    """A new file next to `path` holding `text`, under a name no other process or thread can pick."""
    descriptor, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(name)


def _upgrade_header(path: Path) -> None:
    """A file written by an older version has fewer columns (ours are only ever added at the end): give it
    today's header, so that new rows line up; its old rows read with the new columns empty.

    Under the file's lock, as appends are: a row appended between the read and the replace would be lost."""
    with open(path, encoding="utf-8") as handle:
        if handle.readline() == HEADER:
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the handle closes
        handle.seek(0)
        text = handle.read()
        header = text[: text.find("\n") + 1]
        if header == HEADER or not HEADER.startswith(header.rstrip("\n") + "\t"):
            return
        os.replace(_temporary_beside(path, HEADER + text[len(header):]), path)


def append(path: str | os.PathLike, *rows: Row) -> None:
    """Append whole rows: one write of all their lines on an O_APPEND descriptor, under the file's lock, then
    fsync."""
    if not rows:
        return
    for row in rows:
        if row.status not in STATUSES + NOT_RUN:
            raise ValueError(f"unknown status {row.status!r}: use one of {STATUSES + NOT_RUN}")
    path = ensure_file(path)
    data = "".join(format_row(row) for row in rows).encode("utf-8")
    descriptor = _locked_for_append(path)
    try:
        _repair_torn_tail(path)
        written = os.write(descriptor, data)
        if written != len(data):  # a full disk: do not leave a partial row behind
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _locked_for_append(path: Path) -> int:
    """An O_APPEND descriptor of the file as it is now, under its lock.

    Writers take turns (lanes, a dashboard, an agent's step): one that read another's row half-written would
    take it for a torn tail and cut it off. The lock goes with the descriptor, even on a kill. A header
    upgrade replaces the file: a writer that waited on the old one opens the new one instead of appending
    to a file nobody will read again."""
    while True:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        if os.fstat(descriptor).st_ino == os.stat(path).st_ino:
            return descriptor
        os.close(descriptor)


def _complete_text(path: Path) -> str:
    """The file's text without a torn final line."""
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return text


def load(path: str | os.PathLike) -> pd.DataFrame:
    """results.tsv as a DataFrame; also reads the reference project's five-column file.

    Crash rows keep the file's 0.000000 in `val_bpb`; filter on `status` to leave them out. An
    `experiment` column (1, 2, ...) is added where the file has none, so charts have an x axis.
    """
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    return _frame(_complete_text(path))


def _frame(text: str) -> pd.DataFrame:
    frame = pd.read_csv(
        io.StringIO(text),
        sep="\t",
        dtype={"commit": str, "parent": str, "description": str, "failure": str, "notebook": str, "node": str,
               "metric": str, "direction": str, "scored": str},
        keep_default_na=False,
        na_values={name: [""] for name in ("val_bpb", "best", "noise_std", "cost_usd", *MEASURED, "paired_gain")},
    )
    frame["val_bpb"] = pd.to_numeric(frame["val_bpb"], errors="coerce")
    frame["memory_gb"] = pd.to_numeric(frame["memory_gb"], errors="coerce")
    if "experiment" not in frame.columns:
        frame.insert(5, "experiment", range(1, len(frame) + 1))
    return frame


def read_rows(path: str | os.PathLike) -> list[Row]:
    """The rows as `Row` objects (the loop's view when resuming); crash values come back as None."""
    return _rows(load(path))


def as_written(rows: list[Row]) -> list[Row]:
    """The rows as results.tsv keeps them (6 decimals, one-line texts): what `read_rows` gives back after a
    resume, so that a decision made from the rows in memory is the one a resumed loop would make."""
    return _rows(_frame(HEADER + "".join(format_row(row) for row in rows))) if rows else []


def _rows(frame: pd.DataFrame) -> list[Row]:
    rows = []
    for record in frame.to_dict("records"):
        values = {name: record[name] for name in COLUMNS if name in record}
        for name in ("val_bpb", "memory_gb", "best", "noise_std", "cost_usd", *MEASURED, "paired_gain"):
            if name not in values:
                continue
            value = values.get(name)
            values[name] = None if value is None or value == "" or pd.isna(value) else float(value)
        # a crash, a proposal that ran nothing and points at no value, or a run stopped over its budget before
        # it was scored, is written 0.000000: no value
        crashed = values["status"] == "crash" or (values["status"] in NOT_RUN + ("over-budget",)
                                                  and not values["val_bpb"])
        if crashed:
            values["val_bpb"] = values["memory_gb"] = None
        for name in ("experiment", "seed", "prompt_tokens", "completion_tokens", "lane", "pair_experiment"):
            if name in values:
                values[name] = int(values[name] or 0)
        for name in ("wall_seconds", "training_seconds", "tokens_m", "margin"):
            if name in values:
                values[name] = float(values[name] or 0.0)
        for name in ("commit", "parent", "description", "failure", "notebook", "kind", "finished_at", "sandbox",
                     "proposer", "device", "node", "queued_at", "started_at", "metric", "direction", "scored"):
            if name in values:
                values[name] = str(values[name])
        rows.append(Row(**values))
    return rows
