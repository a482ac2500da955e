"""Where a run's files live: `runs/<tag>/` and every file in it, spelled once.

The loop writes them, the dashboard, the report and the integrity checks read them, and a second process
finds them from the repository and the tag alone, so every module names them through `RunFolder`:

    runs/<tag>/results.tsv     one row per executed notebook (results.py)
               invalid.tsv     proposals that could not be applied (no commit, no experiment)
               config.json     the run's settings, the yardstick a resume must keep (settings.py)
               state.json      the experiment in flight (runstate.py)
               status.json     the live phase (runstate.py)
               loop.lock       held by the process that runs the loop (runstate.py)
               stop, abort     requests to the running loop (runstate.py)
               notebooks/      one folder per executed notebook: <n>-<commit>/
               candidates/     the committed notebook each experiment runs, <n>-<commit>.ipynb (read-only
                               in its jail; written from git by the loop, so lanes need no checkout)
               worktree/       the run branch's git worktree (workspace.py)
               integrity.log   what the integrity checks found; scorer.log: the scorer's own log
               progress.png    the report's chart
               dashboard-console.log   the loop's output, when the dashboard started the loop
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RUNS = "runs"  # per-run folders under the repository root, ignored by git


class _File:
    """A file of the run folder: its name on the class (`RunFolder.results`), its path on a folder."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, folder: RunFolder | None, owner=None):
        return self.name if folder is None else folder.path / self.name


@dataclass(frozen=True)
class RunFolder:
    """The folder of one run tag and the paths of its files. `RunFolder.of(repo, tag)` finds it."""

    path: Path

    results = _File("results.tsv")
    invalid = _File("invalid.tsv")
    config = _File("config.json")
    state = _File("state.json")
    status = _File("status.json")
    lock = _File("loop.lock")
    stop = _File("stop")
    abort = _File("abort")
    notebooks = _File("notebooks")
    candidates = _File("candidates")
    worktree = _File("worktree")
    integrity_log = _File("integrity.log")
    scorer_log = _File("scorer.log")
    progress = _File("progress.png")
    console_log = _File("dashboard-console.log")  # the loop's output, when the dashboard started it

    @classmethod
    def of(cls, repo: str | os.PathLike, tag: str) -> RunFolder:
        return cls(Path(repo) / RUNS / tag)

    def experiment(self, number: int, commit: str) -> Path:
        """The one folder an experiment may write: notebooks/<n>-<short commit>/."""
        return self.notebooks / f"{number:04d}-{commit[:7]}"

    def candidate(self, number: int, commit: str) -> Path:
        """The notebook experiment `number` executes: the commit's sandbox, outside its writable folder."""
        return self.candidates / f"{number:04d}-{commit[:7]}.ipynb"

    @property
    def kernel_slots(self) -> Path:
        """Where kernels started ahead wait for their experiment (execution/warm.py): kernels/<lane>-<n>/ is
        renamed to notebooks/<n>-<commit>/ when its run ends (notebooks/ holds only experiments' folders)."""
        return self.path / "kernels"
