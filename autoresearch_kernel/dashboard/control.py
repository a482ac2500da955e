"""The dashboard's hold on the loop process: the command line it runs, starting it detached, stopping it.

No loop logic lives here. Start launches the command a terminal user types, `python -m autoresearch_kernel
loop ...`, as a child in a session of its own, so the loop survives the browser tab being closed and the
kernel being restarted. Stop and abort are requests the loop reads from its run folder (`runstate`); a live
loop is found through its per-tag lock, so a second kernel attaches to it instead of starting another.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from autoresearch_kernel import runstate, workspace
from autoresearch_kernel.errors import WorkspaceError

CONSOLE_LOG = "dashboard-console.log"  # the loop process's stdout and stderr, when the dashboard started it


@dataclass
class Settings:
    """One run's set-up, as the form holds it. The API key is not here: the loop reads it from the environment."""

    repo: str  # the project's git repository
    tag: str
    data_dir: str = ""  # "" means the loop's default
    proposer: str = "mutate"  # mutate | llm
    model: str = ""  # llm only
    base_url: str = ""  # llm only: any OpenAI-compatible endpoint
    budget_kind: str = "seconds"  # seconds | tokens: per experiment, as in the CLI
    budget: float = 0.0  # 0: the profile's default
    max_experiments: int = 0  # 0: until stopped

    def loop_argv(self, resume: bool) -> list[str]:
        """The CLI command that runs this loop (the same one a terminal user types)."""
        argv = [sys.executable, "-m", "autoresearch_kernel", "loop", "--tag", self.tag, "--repo", self.repo]
        argv += ["--proposer", self.proposer]
        if self.data_dir:
            argv += ["--data-dir", self.data_dir]
        if self.proposer == "llm" and self.model:
            argv += ["--model", self.model]
        if self.proposer == "llm" and self.base_url:
            argv += ["--base-url", self.base_url]
        if self.budget > 0:
            flag = "--budget-tokens" if self.budget_kind == "tokens" else "--budget-seconds"
            argv += [flag, str(int(self.budget)) if self.budget_kind == "tokens" else str(float(self.budget))]
        if self.max_experiments > 0:
            argv += ["--max-experiments", str(int(self.max_experiments))]
        if resume:
            argv += ["--resume"]
        return argv


@dataclass
class LoopControl:
    """Start, stop and abort one tag's loop; tell whether one is running. Knows no loop logic."""

    repo: str
    tag: str
    process: subprocess.Popen | None = None  # the loop this kernel started, while this kernel lives

    @property
    def folder(self) -> Path:
        return workspace.run_dir(self.repo, self.tag)

    def running(self) -> bool:
        """A loop holds the tag's lock, or the one just launched has not taken it yet."""
        launched = self.process is not None and self.process.poll() is None
        return launched or runstate.is_running(self.repo, self.tag)

    def start(self, settings: Settings) -> None:
        """Launch `python -m autoresearch_kernel loop ...` in a session of its own; resume an existing tag.

        A loop already running for the tag is never started twice: the dashboard attaches to it instead.
        """
        workspace.check_tag(settings.tag)
        if self.running():
            raise WorkspaceError(f"run tag {self.tag!r} is already running: attached to it")
        resume = workspace.tag_exists(self.repo, settings.tag)
        self.folder.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # the console log fills as the loop prints
        with open(self.folder / CONSOLE_LOG, "wb") as console:
            self.process = subprocess.Popen(
                settings.loop_argv(resume), cwd=self.repo, env=env, stdin=subprocess.DEVNULL,
                stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,  # not in the kernel's group: a kernel restart or interrupt spares it
            )

    def stop(self) -> None:
        runstate.request_stop(self.repo, self.tag)

    def abort(self) -> None:
        runstate.request_abort(self.repo, self.tag)

    def stop_requested(self) -> bool:
        return (self.folder / runstate.STOP).exists()

    def reap(self) -> None:
        """Collect the exit status of a launched loop that ended, so it leaves no zombie behind."""
        if self.process is not None and self.process.poll() is not None:
            self.process = None
