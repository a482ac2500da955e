"""A run's small files on disk: what the loop is doing, what it was in the middle of, and who runs it.

Everything here lives in `runs/<tag>/`, next to results.tsv, so that another process (the dashboard, a
second terminal, the loop itself after a kill) can read and steer a run without importing the loop:

- `state.json`: the experiments in flight (committed, maybe partly run, rows not yet written; one per lane
  at most, plus those waiting for a lane) and a pending crash fix. results.tsv stays the source of truth for finished experiments; this file only says what was
  under way, so that a resume neither loses nor repeats a row.
- `status.json`: the live phase (proposing / running / ...), rewritten at every change; `read_status`.
- `loop.lock`: an flock held by the process that runs the loop; the kernel drops it when that process
  dies, even by SIGKILL, so a dead loop never blocks a resume. `is_running` tests it.
- `stop` / `abort`: files that ask the running loop to stop after this experiment / abort it now
  (`request_stop`, `request_abort`); the loop removes them when it exits.

Files are replaced atomically (written aside, fsynced, renamed), so a reader never sees half of one.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch_kernel.errors import WorkspaceError
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.workspace.runfolder import RunFolder

# The files' names, for readers that glob or list a run folder (RunFolder spells them).
STATE, STATUS, LOCK, STOP, ABORT = RunFolder.state, RunFolder.status, RunFolder.lock, RunFolder.stop, RunFolder.abort

PHASES = ("starting", "idle", "proposing", "checking", "running", "evaluating", "paused", "stopped", "error")


@dataclass
class Pending:
    """An experiment in flight: committed, its runs so far, its rows not yet in results.tsv."""

    numbers: list[int]  # experiment numbers reserved for its runs (the first, then confirmations)
    kind: str  # baseline | candidate | fix | rebase
    commit: str  # full hash of the candidate commit
    parent: str  # full hash of the kept commit it was built on
    description: str
    usage: dict = field(default_factory=dict)  # proposers.Usage as a dict
    runs: list[dict] = field(default_factory=list)  # finished runs as Row dicts, status not final yet
    interrupts: int = 0  # how often a resume found it unfinished
    started: int = 0  # runs started on a lane; more than `runs`: one was cut short (a resume counts it)
    fixes_left: int = 0  # fix proposals it gets if it crashes
    seed: int | None = None  # a baseline seed's run: the seed (candidates take theirs from the run's index)
    rebase_of: int | None = None  # a rebase: the number of the stale candidate whose change it re-applies
    queued_at: float = 0.0  # epoch seconds its next run became runnable
    proposer: str = ""  # who proposed it (the hybrid's llm or optuna; else the loop's proposer)
    retries: int = 0  # runs of it run again after a machine fault (a timeout on a busy machine)

    def owes_run(self) -> bool:
        """A number is reserved for a run that has not finished (the first, a confirmation, a re-run)."""
        return len(self.runs) < len(self.numbers)


@dataclass
class FixRequest:
    """A fresh idea crashed: the next proposal is asked to fix it, with the failure excerpt."""

    commit: str  # the crashed commit (kept under its discarded ref)
    description: str
    failure: str
    attempts_left: int
    parent: str = ""  # the best the crashed commit was built on: a fix is re-applied from it onto the best of then


@dataclass
class State:
    kept: str = ""  # full hash of the last kept commit ("" before the baseline)
    flights: list[Pending] = field(default_factory=list)  # in the order they were committed
    fix: FixRequest | None = None

    def flight_of(self, number: int) -> Pending | None:
        return next((f for f in self.flights if number in f.numbers), None)


@dataclass
class LoopStatus:
    """What the loop is doing now, as the dashboard shows it."""

    tag: str
    phase: str = "starting"
    pid: int = 0
    experiment: int | None = None  # number of the run in progress
    kind: str = ""  # baseline | candidate | confirm | fix | rebase
    description: str = ""
    message: str = ""  # one line: the last thing worth saying (a pause's reason, an error)
    phase_since: float = 0.0  # epoch seconds when this phase began
    started_at: float = 0.0  # epoch seconds when this loop process started
    budget_seconds: float = 0.0  # training budget per experiment (0: profile default)
    budget_tokens: int = 0
    timeout_s: float = 0.0  # the wall-clock limit of one run
    budget_flops: float = 0.0
    proposals: int = 0  # proposals made by this loop process (invalid ones included)
    best: float | None = None
    noise_std: float | None = None
    margin: float | None = None
    lanes: list[dict] = field(default_factory=list)  # per lane: LaneStatus as a dict (what runs where)
    updated_at: float = 0.0


@dataclass
class LaneStatus:
    """One lane as the dashboard shows it: its device, and the run on it (number None: idle)."""

    lane: int  # 1-based
    device: str
    node: str = ""
    experiment: int | None = None
    kind: str = ""
    description: str = ""
    started_at: float = 0.0  # epoch seconds
    timeout_s: float = 0.0


def write_json(path: Path, payload: dict) -> None:
    """Replace `path` with the JSON payload, all or nothing."""
    # a name of its own per call (not per process): two threads that write one file at once each rename theirs
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_state(folder: Path) -> State:
    """The state a loop left in `folder`; a fresh State when there is none.

    An unreadable file (a disk that filled up, a hand edit) raises WorkspaceError rather than being
    guessed at: it may have held an experiment in flight. Without it a resume is still safe, because
    results.tsv holds every finished experiment and the loop rebuilds the last kept commit from it.
    """
    path = RunFolder(folder).state
    if not path.exists():
        return State()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        # a state.json of a version without lanes held one experiment in flight, as "pending"
        flights = data.get("flights", [data["pending"]] if data.get("pending") else [])
        fix = FixRequest(**data["fix"]) if data.get("fix") else None
        return State(kept=data.get("kept", ""), flights=[Pending(**f) for f in flights], fix=fix)
    except (ValueError, TypeError, AttributeError) as error:    # not JSON, or not the shape of a State
        raise WorkspaceError(
            f"{path} is unreadable ({type(error).__name__}: {error}); results.tsv still holds every finished "
            f"experiment: move it aside (mv {path} {path}.bad) and resume, the loop rebuilds the last kept "
            "commit from results.tsv (an experiment that was in flight is dropped, a pending fix is not asked for)"
        ) from None


def save_state(folder: Path, state: State) -> None:
    write_json(RunFolder(folder).state, dataclasses.asdict(state))


def pending_rows(pending: Pending) -> list[Row]:
    return [Row(**run) for run in pending.runs]


def write_status(folder: Path, status: LoopStatus) -> None:
    status.updated_at = time.time()
    write_json(RunFolder(folder).status, dataclasses.asdict(status))


def read_status(repo: str | os.PathLike, tag: str) -> LoopStatus | None:
    """The last status the run's loop wrote, or None when it never started.

    A status whose loop is no longer running reads as phase "stopped" (unless it ended in "error").
    """
    path = RunFolder.of(repo, tag).status
    try:
        status = LoopStatus(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if status.phase not in ("stopped", "error") and not is_running(repo, tag):
        status.phase = "stopped"
    return status


class TagLock:
    """One loop per run tag, across threads and processes: an flock on runs/<tag>/loop.lock."""

    def __init__(self, folder: Path):
        self.path = RunFolder(folder).lock
        self._fd: int | None = None

    def acquire(self, tag: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise WorkspaceError(
                f"run tag {tag!r} is already running (pid {holder}): attach to it, or stop it first "
                f"(touch {RunFolder(self.path.parent).stop})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_running(repo: str | os.PathLike, tag: str) -> bool:
    """True while some process (this one included) holds the run's loop lock."""
    path = RunFolder.of(repo, tag).lock
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def request_stop(repo: str | os.PathLike, tag: str) -> None:
    """Ask the run's loop (in any process) to stop after the experiment in progress."""
    RunFolder.of(repo, tag).stop.touch()


def request_abort(repo: str | os.PathLike, tag: str) -> None:
    """Ask the run's loop (in any process) to kill the experiment in progress now and stop."""
    RunFolder.of(repo, tag).abort.touch()
