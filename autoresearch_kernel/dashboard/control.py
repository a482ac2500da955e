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

from autoresearch_kernel import workspace
from autoresearch_kernel.errors import WorkspaceError
from autoresearch_kernel.journal import runstate
from autoresearch_kernel.loop import settings
from autoresearch_kernel.workspace.runfolder import RunFolder

CONSOLE_LOG = RunFolder.console_log  # the loop process's stdout and stderr, when the dashboard started it
# The form offers what the command line offers (one table: settings.OPTIONS), every proposer included.
PROPOSERS = settings.BY_NAME["proposer"].choices
SAMPLERS = settings.BY_NAME["sampler"].choices
USES_LLM = ("llm", "hybrid")  # the proposers that call a model: the model and endpoint fields apply
USES_OPTUNA = ("optuna", "hybrid")  # the proposers that run an Optuna study: the sampler applies


@dataclass
class Settings:
    """One run's set-up, as the form holds it. The API key is not here: the loop reads it from the environment.

    The command line is built from the loop's option table (`settings.OPTIONS`), so a form field that the CLI
    does not know fails at once instead of drifting.
    """

    repo: str  # the project's git repository
    tag: str
    data_dir: str = ""  # "" means the loop's default
    profile: str = "cpu"  # cpu | gpu: as the data was prepared
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    proposer: str = "mutate"  # mutate | llm | optuna | hybrid (settings.PROPOSERS)
    model: str = ""  # llm and hybrid only
    base_url: str = ""  # llm and hybrid only: any OpenAI-compatible endpoint
    sampler: str = ""  # optuna and hybrid only: tpe | cmaes | random ("": the loop's default, tpe)
    llm_share: float = 0.0  # hybrid only: the share of experiments the llm proposes (0: the loop's default)
    budget_kind: str = "seconds"  # seconds | tokens | flops: per experiment, as in the CLI
    budget: float = 0.0  # 0: the profile's default
    max_experiments: int = 0  # 0: until stopped
    lanes: int = 1  # experiments in flight at once; 1 sends nothing (the loop's default, or one per device)
    devices: str = ""  # "": every lane uses `device`; else cuda:0,cuda:1,... or all

    def options(self) -> dict:
        """The form as the loop's options (option name -> command-line value; None: not given)."""
        llm, search = self.proposer in USES_LLM, self.proposer in USES_OPTUNA
        budget = self.budget if self.budget > 0 else None
        return {
            "data_dir": self.data_dir or None, "profile": self.profile, "device": self.device,
            "proposer": self.proposer, "model": (self.model or None) if llm else None,
            "base_url": (self.base_url or None) if llm else None,
            "sampler": (self.sampler or None) if search else None,
            "llm_share": self.llm_share if self.proposer == "hybrid" and self.llm_share > 0 else None,
            "budget_tokens": int(budget) if budget and self.budget_kind == "tokens" else None,
            "budget_flops": float(budget) if budget and self.budget_kind == "flops" else None,
            "budget_seconds": float(budget) if budget and self.budget_kind == "seconds" else None,
            "max_experiments": int(self.max_experiments) if self.max_experiments > 0 else None,
            # only when asked for: a one-lane form builds the command line it always built
            "lanes": int(self.lanes) if self.lanes > 1 else None, "devices": self.devices or None,
        }

    def loop_argv(self, resume: bool) -> list[str]:
        """The CLI command that runs this loop (the same one a terminal user types).

        A resume sends only what may change under a running search (max experiments): the run keeps the
        settings it was started with, which the form may not show.
        """
        options = self.options()
        if resume:
            options = {name: value for name, value in options.items() if name in settings.RESUMABLE}
        argv = [sys.executable, "-m", "autoresearch_kernel", "loop", "--tag", self.tag, "--repo", self.repo]
        return argv + settings.command_line(options) + (["--resume"] if resume else [])


@dataclass
class LoopControl:
    """Start, stop and abort one tag's loop; tell whether one is running. Knows no loop logic."""

    repo: str
    tag: str
    process: subprocess.Popen | None = None  # the loop this kernel started, while this kernel lives

    @property
    def folder(self) -> Path:
        return RunFolder.of(self.repo, self.tag).path

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
        return RunFolder(self.folder).stop.exists()

    def reap(self) -> None:
        """Collect the exit status of a launched loop that ended, so it leaves no zombie behind."""
        if self.process is not None and self.process.poll() is not None:
            self.process = None
