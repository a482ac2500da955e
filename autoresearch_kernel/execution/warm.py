"""Kernels started ahead: each lane's next kernel starts while its current experiment runs, so that the next
candidate's cells start at once.

A kernel needs a folder before its experiment is known: it starts in a slot, runs/<tag>/kernels/<lane>-<n>/,
in a jail made exactly as the experiment's (the same read-only training split, masks and
limits; the slot its one writable folder) and runs the harness's warm-up (harness/warm.py: imports, the
data's verification and load, the export's first-time set-up), trusted code only. When an experiment takes
it, the candidate is copied into the slot, the kernel runs it there, and once every process of the jail is
gone the slot is renamed to the experiment's folder, notebooks/<n>-<commit>/. A kernel runs one experiment
and is never reused: the candidate could leave anything behind in its memory or its /tmp.

When the next kernel starts (`ahead`): at once under a token, FLOP or evaluation budget, or on a GPU lane
(the warm-up never touches the device); under a time budget on a CPU, only when the lane's run has ended, so
that a run's measured training seconds never share their cores with the next kernel's start.
"""
from __future__ import annotations

import itertools
import os
import shutil
import threading
from pathlib import Path

from autoresearch_kernel.execution.lanes import Lane
from autoresearch_kernel.execution.runner import Kernel


class WarmKernels:
    """At most one kernel waiting per lane. `kernel_for(lane)` hands out the lane's waiting kernel (or starts
    one now), `after_run(lane)` starts the next where the rule above says so. Thread-safe: each lane's thread
    takes its own lane's kernel."""

    def __init__(self, slots: Path, make_jail, env_for, warm_up: str, ahead: bool):
        """`make_jail(lane, folder)`: the jail of a run writing `folder` on `lane` (None: unjailed);
        `env_for(lane)`: its environment; `warm_up`: the code a new kernel runs first."""
        self.slots, self.make_jail, self.env_for, self.warm_up, self.ahead = slots, make_jail, env_for, warm_up, ahead
        self._waiting: dict[int, tuple[Kernel, Path]] = {}
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        shutil.rmtree(slots, ignore_errors=True)  # what a killed loop's kernels left (they died with it)

    def take(self, lane: Lane) -> tuple[Kernel, Path]:
        """The lane's kernel and its folder: the one waiting when it is alive, else one started now; the next
        one starts at once when `ahead`."""
        with self._lock:
            waiting = self._waiting.pop(lane.index, None)
        if waiting is not None and not waiting[0].alive:  # died while it waited (its log says why)
            self._discard(*waiting)
            waiting = None
        taken = waiting or self._start(lane)
        if self.ahead:
            self.after_run(lane)
        return taken

    def fill(self, lanes: list[Lane]) -> None:
        """The loop starts: where kernels start ahead, start one for every lane, so that the first runs of the
        lanes find theirs warm too (a lane whose first run comes later would otherwise start it then)."""
        if self.ahead:
            for lane in lanes:
                self.after_run(lane)

    def after_run(self, lane: Lane) -> None:
        """The lane's run has ended: start its next kernel, unless one waits already."""
        with self._lock:
            if lane.index in self._waiting:
                return
            self._waiting[lane.index] = self._start(lane)

    def close(self) -> None:
        """Stop every kernel still waiting and remove their folders."""
        with self._lock:
            waiting, self._waiting = list(self._waiting.values()), {}
        for kernel, folder in waiting:
            self._discard(kernel, folder)

    def _start(self, lane: Lane) -> tuple[Kernel, Path]:
        folder = self.slots / f"{lane.index + 1}-{next(self._serial)}"
        folder.mkdir(parents=True)
        return Kernel(folder, self.env_for(lane), self.make_jail(lane, folder), warm_up=self.warm_up), folder

    @staticmethod
    def _discard(kernel: Kernel, folder: Path) -> None:
        kernel.close()
        shutil.rmtree(folder, ignore_errors=True)


def settle_folder(slot: Path, folder: Path) -> None:
    """Give the experiment's folder its name: the slot it ran in, renamed (what an earlier attempt left at that
    name removed first). The jail's processes are all gone by now."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    os.replace(slot, folder)
