"""The scorer of a task whose experiment hands over a file: the task's function, run in a jail of its own.

The experiment wrote its artifact (coordinates, predictions, ...) into its own folder; nothing it computed is
believed. A fresh process, jailed (read-only: the artifact's folder, the task's public and private data, the
scorer's own file; nothing writable; no network), loads the task's `score(artifact, data)` and `checks`, and
answers one JSON line: {"value": x, "failure": null} or {"value": null, "failure": "why"}. Each check returns
None or a reason; a reason fails the run (it cannot be kept). The parent gives up after `timeout_s`.

    parent:  FileScorer(task, public, private, jail).score(artifact) -> TaskScore
    child:   python -I -c <start> --spec JSON --artifact PATH --public DIR --private DIR   (tasks/scoring.py)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from autoresearch_kernel.integrity.bytecode import with_bytecode
from autoresearch_kernel.integrity.environment import experiment_env, package_root
from autoresearch_kernel.integrity.jail import Jail
from autoresearch_kernel.tasks import Task
from autoresearch_kernel.tasks.functions import file_of

TIMEOUT_S = 300.0


@dataclass(frozen=True)
class TaskScore:
    """What the task's scorer measured, or why it could not."""

    value: float | None
    seconds: float
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class FileScorer:
    """Scores one artifact per call, each in a fresh jailed process (a task's scorer is cheap to start)."""

    def __init__(self, task: Task, public: Path, private: Path, jail: bool, log_path: Path | None = None,
                 timeout_s: float = TIMEOUT_S):
        self.task, self.public, self.private = task, Path(public), Path(private)
        self.jailed, self.log_path, self.timeout_s = jail, log_path, timeout_s

    def score(self, artifact: Path) -> TaskScore:
        started = time.monotonic()
        artifact = Path(artifact).resolve()
        if not artifact.is_file():
            return TaskScore(None, 0.0, f"the experiment wrote no {self.task.artifact_name}")
        spec = json.dumps({"scorer": self.task.scorer, "checks": list(self.task.checks), "folder": self.task.folder})
        start = f"import sys; sys.path.insert(0, {str(package_root())!r}); " \
                "from autoresearch_kernel.tasks.scoring import main; sys.exit(main())"
        with tempfile.TemporaryDirectory(prefix="task-scorer-") as scratch:
            jail, pycache = with_bytecode(Jail(readonly=self._readable(artifact)) if self.jailed else None,
                                          os.path.join(scratch, "pycache"))
            command = [sys.executable, "-I", "-X", f"pycache_prefix={pycache}", "-c", start, "--spec", spec,
                       "--artifact", str(artifact), "--public", str(self.public), "--private", str(self.private)]
            if jail is not None:
                command = jail.command(command)
            env = experiment_env("cpu", home=scratch if not self.jailed else None)
            log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
            try:
                done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env, cwd=scratch,
                                      timeout=self.timeout_s, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                return TaskScore(None, time.monotonic() - started, f"scoring ran past {self.timeout_s:.0f} s")
            finally:
                if self.log_path:
                    log.close()
        seconds = time.monotonic() - started
        answers = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not answers:
            return TaskScore(None, seconds, f"the task's scorer ended without an answer (exit {done.returncode})")
        answer = json.loads(answers[-1])
        return TaskScore(answer.get("value"), seconds, answer.get("failure"))

    def _readable(self, artifact: Path) -> tuple[Path, ...]:
        """What the scorer's jail binds read-only: the artifact's folder, the task's data, its own files."""
        files = [file_of(spec, self.task.folder) for spec in (self.task.scorer, *self.task.checks)]
        paths = [artifact.parent, self.public, self.private, *(path.parent for path in files if path)]
        return tuple(dict.fromkeys(path for path in paths if path.exists()))
