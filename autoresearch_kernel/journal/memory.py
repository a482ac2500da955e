"""The idea memory across runs: every experiment of every run tag of the repository, and the novelty check.

Each row of every `runs/<tag>/results.tsv` is remembered as an `Entry`: its tag, number, kind, commit and
parent, description, status, val_bpb, its gain over the best before it, the proposer, and its normalised
change (change.py: the constants it moved, from what to what, and hashes of its code that ignore comments and
layout), read from the commits in git (the run branch, or `refs/autoresearch/<tag>/discarded/<n>`).

Where: `runs/memory.sqlite` (`memory_path`), through the standard library's sqlite3: no new dependency, and
transactions, so a kill never leaves half an entry. It is a cache of what is on disk, nothing more: a missing
file is rebuilt from every results.tsv and git, a tag whose results.tsv changed since it was read is brought
up to date (`Memory.open`, `Memory.remember`), and a corrupt file is moved aside and rebuilt. The same code
builds an entry live and on a rebuild, so a deleted memory comes back identical.

Novelty (`Memory.duplicate_of`): a candidate that runs the same code as an experiment already run (any tag,
any status) under the same yardstick (the profile, data and budget a tag's results are measured with) is a
duplicate. That covers the same constants moved to the same values, and the same edit, from the same parent.
The loop records it in invalid.tsv pointing at the earlier experiment instead of running it again.

`digest` is the memory in a few lines for a prompt or `autoresearch status` (digest.py writes them).
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import git
import nbformat

from autoresearch_kernel import tasks
from autoresearch_kernel.errors import IdeaMemoryError, WorkspaceError
from autoresearch_kernel.journal import results
from autoresearch_kernel.journal.change import Change, change_of, notebook_hash
from autoresearch_kernel.journal.digest import DIGEST_CHARS, digest_of
from autoresearch_kernel.journal.records import IDEAS, is_machine_fault
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.tasks import DEFAULT
from autoresearch_kernel.workspace.runfolder import RUNS, RunFolder
from autoresearch_kernel.workspace.worktree import _read_sandbox

MEMORY_FILE = "memory.sqlite"  # in runs/, next to the run folders (ignored by git, as they are)
# Bumped when an entry's meaning changes; the Python version is part of it because `ast.unparse` (the
# normalised code) may spell things differently in another one. Either way the file is rebuilt.
SCHEMA = 2  # 2: machine faults are entries of status "fault"
MEASURED_WITH = ("profile", "data_dir", "budget_seconds", "budget_tokens", "budget_flops")  # settings.YARDSTICK, per run
BUSY_SECONDS = 60.0  # another loop of the repository may hold the write lock while it rebuilds
CACHED_NOTEBOOKS = 256  # commits read from git and kept (parents repeat: the kept commit is everyone's)
def memory_path(repo: str | os.PathLike) -> Path:
    """`<repo>/runs/memory.sqlite`: one memory for every run tag of the repository."""
    return Path(repo) / RUNS / MEMORY_FILE


@dataclass(frozen=True)
class Entry:
    """One experiment (one row of a results.tsv) as the memory keeps it."""

    tag: str
    experiment: int
    kind: str  # baseline | candidate | confirm | fix
    commit: str  # 7 characters, as results.tsv has it
    parent: str
    description: str
    status: str  # keep | discard | crash | noop | fault (a crash that was the machine's: never a duplicate)
    val_bpb: float | None
    gain: float | None  # the best before it minus its val_bpb (> 0: better); None for a crash or a baseline
    proposer: str
    seed: int
    yardstick: str  # what its run was measured with (MEASURED_WITH of the tag's config.json); "" unknown
    constants: tuple[tuple[str, str | None, str | None], ...]  # change.Change's fields, flattened
    cells: tuple[int, ...]
    diff: str
    notebook: str  # "" when the commit could not be read
    tuning: bool
    finished_at: str

    def pointer(self) -> str:
        """`t #12 (abc1234, discard, 1.732100)`: which experiment, and how it went."""
        value = "-" if self.val_bpb is None else f"{self.val_bpb:.6f}"
        status = "baseline" if self.kind == "baseline" else self.status
        return f"{self.tag} #{self.experiment} ({self.commit}, {status}, {value})"


COLUMNS = tuple(f.name for f in fields(Entry))
JSON_COLUMNS = ("constants", "cells")


@dataclass(frozen=True)
class Duplicate:
    """A candidate that would run code already run: the earlier experiment and what the proposer is told."""

    earlier: Entry
    value: float | None  # the gate's value of the earlier commit: the mean of its measured runs
    same_parent: bool

    @property
    def failure(self) -> str:
        """invalid.tsv's failure text: `duplicate of t #12 (abc1234, discard, 1.732100): ...`."""
        moved = ", ".join(f"{name} {old} -> {new}" for name, old, new in self.earlier.constants)
        why = (f"the same change{f' ({moved})' if moved else ''} from the same parent {self.earlier.parent}"
               if self.same_parent else "it runs the same code (comments and layout aside)")
        return f"duplicate of {self.earlier.pointer()}: {why}; propose something not tried yet"


class Memory:
    """The memory of one repository. `Memory.open(repo)` brings it up to date; `close()` when done."""

    def __init__(self, root: Path, connection: sqlite3.Connection, repo: git.Repo):
        self.root, self.path = root, memory_path(root)
        self.connection, self.repo = connection, repo
        self._notebooks: dict[str, nbformat.NotebookNode | None] = {}

    @classmethod
    def open(cls, repo_dir: str | os.PathLike) -> Memory:
        """The repository's memory, brought up to date with every run folder (built when missing)."""
        try:
            repo = git.Repo(repo_dir, search_parent_directories=True)
        except (git.NoSuchPathError, git.InvalidGitRepositoryError):
            raise WorkspaceError(f"{repo_dir} is not a git repository: pass the project's folder") from None
        root = Path(repo.working_tree_dir)
        memory = cls(root, _connect(memory_path(root)), repo)
        try:
            memory._guarded(memory._prepare)
            memory._guarded(memory.sync)
        except BaseException:
            memory.close()
            raise
        return memory

    def close(self) -> None:
        self.connection.close()
        self.repo.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- keeping up with the disk ------------------------------------------------------------------------
    def sync(self) -> None:
        """Every tag with a results.tsv brought up to date; tags whose folder is gone forgotten."""
        tags = sorted(path.parent.name for path in (self.root / RUNS).glob(f"*/{RunFolder.results}"))
        for tag in tags:
            self._sync_tag(tag)
        gone = {tag for (tag,) in self.connection.execute("SELECT tag FROM sources")} - set(tags)
        if gone:
            with self._transaction():
                for tag in gone:
                    self.connection.execute("DELETE FROM experiments WHERE tag = ?", (tag,))
                    self.connection.execute("DELETE FROM sources WHERE tag = ?", (tag,))

    def remember(self, tag: str, rows: list[Row] | None = None) -> int:
        """Bring the tag's entries up to date with its results.tsv (the rows just written); returns how
        many were added. `rows`: the tag's rows as written, handed on by the loop that wrote them (the file
        is then not parsed again); None reads them from the file."""
        return self._guarded(lambda: self._sync_tag(tag, rows))

    def _sync_tag(self, tag: str, given: list[Row] | None = None) -> int:
        """One transaction: the file is read and its new rows stored under the write lock, so two loops of
        the repository cannot interleave a read and a write."""
        path = RunFolder.of(self.root, tag).results
        if self._read_as(tag, path):  # the common case, without taking the write lock
            return 0
        with self._transaction():
            if self._read_as(tag, path):  # another process brought it up to date meanwhile
                return 0
            stat = path.stat()
            seen = (stat.st_size, stat.st_mtime_ns)
            rows = list(given) if given is not None else results.read_rows(path)
            stored = {n for (n,) in self.connection.execute("SELECT experiment FROM experiments WHERE tag = ?", (tag,))}
            numbers = {row.experiment for row in rows}
            for gone in stored - numbers:  # a results.tsv edited by hand: the memory follows the file
                self.connection.execute("DELETE FROM experiments WHERE tag = ? AND experiment = ?", (tag, gone))
            settings = _settings(RunFolder.of(self.root, tag))
            yardstick = _yardstick(settings)
            task = tasks.of_settings(settings, self.root)
            added = [self._entry(tag, rows, index, yardstick, settings.get("profile"), task)
                     for index, row in enumerate(rows) if row.experiment not in stored]
            self.connection.executemany(
                f"INSERT OR REPLACE INTO experiments VALUES ({', '.join('?' * len(COLUMNS))})",
                [_to_record(entry) for entry in added])
            self.connection.execute("INSERT OR REPLACE INTO sources VALUES (?, ?, ?)", (tag, *seen))
            return len(added)

    def _read_as(self, tag: str, path: Path) -> bool:
        """True when the tag's results.tsv is as it was when last read (or gone: `sync` forgets it)."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return True
        seen = self.connection.execute("SELECT size, mtime_ns FROM sources WHERE tag = ?", (tag,)).fetchone()
        return seen == (stat.st_size, stat.st_mtime_ns)

    def _entry(self, tag: str, rows: list[Row], index: int, yardstick: str, profile: str | None, task) -> Entry:
        row = rows[index]
        child = self._notebook(row.commit, task.sandbox)
        parent = self._notebook(row.parent, task.sandbox) if row.parent and row.parent != row.commit else child
        change = change_of(parent, child, profile) if child is not None else Change()
        before = _best_before(rows, index)
        gain = task.metric.improvement(before, row.val_bpb) if before is not None and row.val_bpb is not None else None
        status = "fault" if is_machine_fault(row) else row.status  # the machine's crash: says nothing of the code
        return Entry(tag, row.experiment, row.kind, row.commit, row.parent, row.description, status,
                     row.val_bpb, None if gain is None else round(gain, 6), row.proposer, row.seed, yardstick,
                     change.constants, change.cells, change.diff, change.notebook, change.tuning, row.finished_at)

    def _notebook(self, commit: str, sandbox: str) -> nbformat.NotebookNode | None:
        """The sandbox as committed, or None when git no longer has the commit (its refs were removed)."""
        if commit not in self._notebooks:
            if len(self._notebooks) >= CACHED_NOTEBOOKS:
                self._notebooks.pop(next(iter(self._notebooks)))
            try:
                self._notebooks[commit] = _read_sandbox(self.repo, commit, sandbox) if commit else None
            except (git.BadName, ValueError, KeyError, UnicodeDecodeError):  # NotJSONError is a ValueError
                self._notebooks[commit] = None
        return self._notebooks[commit]

    # -- reading -------------------------------------------------------------------------------------------
    def entries(self, tag: str | None = None) -> list[Entry]:
        """Every entry (of one tag, when given), oldest first within a tag, tags in name order."""
        where, values = ("WHERE tag = ?", (tag,)) if tag else ("", ())
        cursor = self.connection.execute(f"SELECT * FROM experiments {where} ORDER BY tag, experiment", values)
        return [_from_record(record) for record in cursor]

    def duplicate_of(self, tag: str, parent: str, notebook: nbformat.NotebookNode) -> Duplicate | None:
        """The earlier experiment whose code the candidate (built on the kept commit `parent`) would run again,
        measured as this tag measures; None for a new idea. Baselines and confirmations are never asked."""
        self.remember(tag)
        yardstick = _yardstick(_settings(RunFolder.of(self.root, tag)))
        if not yardstick:
            return None  # a run without its settings cannot say what it measures with
        # the same parent first: its pointer says "the same change", which is what the proposer did
        record = self.connection.execute(
            "SELECT * FROM experiments WHERE notebook = ? AND yardstick = ? AND kind != 'confirm' AND status != 'fault' "
            "ORDER BY parent = ? DESC, finished_at, tag, experiment LIMIT 1",
            (notebook_hash(notebook), yardstick, parent[:7])).fetchone()
        if record is None:
            return None
        earlier = _from_record(record)
        [(value,)] = self.connection.execute(  # the gate's value: the mean of the commit's runs (confirmations too)
            'SELECT AVG(val_bpb) FROM experiments WHERE tag = ? AND "commit" = ?', (earlier.tag, earlier.commit))
        return Duplicate(earlier, value, earlier.parent == parent[:7])

    def digest(self, limit: int = DIGEST_CHARS) -> str:
        """The ideas of every run in a few lines (at most `limit` characters); "" before the first idea."""
        return digest_of([e for e in self.entries() if e.kind in IDEAS], limit)

    # -- the file ------------------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """The tables, or a fresh start when the file was written by another schema or Python."""
        version = f"{SCHEMA}/python{'.'.join(map(str, sys.version_info[:2]))}"
        with self._transaction():
            self.connection.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            found = self.connection.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
            if found != (version,):
                self.connection.execute("DROP TABLE IF EXISTS experiments")
                self.connection.execute("DROP TABLE IF EXISTS sources")
                self.connection.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (version,))
            columns = ", ".join(f'"{name}" {"REAL" if name in ("val_bpb", "gain") else ""}' for name in COLUMNS)
            self.connection.execute(f"CREATE TABLE IF NOT EXISTS experiments ({columns}, "
                                    "PRIMARY KEY (tag, experiment))")
            self.connection.execute("CREATE INDEX IF NOT EXISTS by_notebook ON experiments (notebook, yardstick)")
            # what each tag's results.tsv looked like when it was last read: unchanged files are not read again
            self.connection.execute("CREATE TABLE IF NOT EXISTS sources (tag TEXT PRIMARY KEY, size INTEGER, "
                                    "mtime_ns INTEGER)")

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: an entry is written whole or not at all."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # the error on its way out says what happened
                self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    def _guarded(self, work):
        """Run `work`; a corrupt file is moved aside (kept for a look), rebuilt, and `work` run again."""
        try:
            return work()
        except sqlite3.DatabaseError as error:
            if not _corrupt(error):
                raise IdeaMemoryError(f"{self.path} cannot be used ({error}): stop the other loops of this "
                                      "repository, or delete the file (it is rebuilt from runs/)") from None
        self.connection.close()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            damaged = Path(f"{self.path}{suffix}")
            if damaged.exists():
                damaged.replace(Path(f"{aside}{suffix}"))
        self.connection = _connect(self.path)
        self._prepare()
        self.sync()
        return work()


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level None: our own BEGIN/COMMIT (the module's implicit transactions would not cover reads)
    connection = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")  # readers (status, the dashboard) never block a loop
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent on a kill; a power cut may lose the tail
    except sqlite3.DatabaseError:
        pass  # a corrupt file: the first query says so, and `_guarded` rebuilds it
    return connection


def _yardstick(settings: dict) -> str:
    """What a run's results are measured with, comparable across tags; "" when its settings are unknown. The
    task and its evaluations budget count only when they are not the GPT's defaults, so that the yardsticks of
    runs made before tasks existed still match."""
    if not settings:
        return ""
    task = [settings["task"], settings.get("budget_evaluations")] if settings.get("task", DEFAULT) != DEFAULT else []
    return json.dumps([settings.get(name) for name in MEASURED_WITH] + task)



def _corrupt(error: sqlite3.DatabaseError) -> bool:
    """Damage (rebuild it), not contention or a full disk (say so)."""
    text = str(error).lower()
    return type(error) is sqlite3.DatabaseError or "malformed" in text or "not a database" in text


def _settings(folder: RunFolder) -> dict:
    try:
        data = json.loads(folder.config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data.get("settings", data) if isinstance(data, dict) else {}


def _best_before(rows: list[Row], index: int) -> float | None:
    """The gate's best before the row's commit was run: the `best` of the last kept row of another commit."""
    commit = rows[index].commit
    for row in reversed(rows[:index]):
        if row.commit != commit and row.status == "keep" and row.best is not None:
            return row.best
    return None


def _to_record(entry: Entry) -> tuple:
    return tuple(json.dumps(value) if name in JSON_COLUMNS else value for name, value in zip(COLUMNS, astuple(entry)))


def _from_record(record: tuple) -> Entry:
    values = dict(zip(COLUMNS, record))
    values["constants"] = tuple(tuple(move) for move in json.loads(values["constants"]))
    values["cells"] = tuple(json.loads(values["cells"]))
    values["tuning"] = bool(values["tuning"])
    return Entry(**values)


def digest(repo: str | os.PathLike, limit: int = DIGEST_CHARS) -> str:
    """The repository's memory in a few lines (see `Memory.digest`)."""
    with Memory.open(repo) as memory:
        return memory.digest(limit)
