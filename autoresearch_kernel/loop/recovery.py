"""Resuming a run after any kind of stop: branch, worktree and state.json brought in line with results.tsv.

A SIGKILL can land anywhere. What is on disk then says what to do, for each experiment in flight:
- its rows are in results.tsv: only the keep/revert after them was lost, so do that;
- no row yet: the experiment was cut short; its unfinished run runs again (`Pending.interrupts` counts how
  often, and the loop records it as a crash past `max_interrupts`); runs it had finished are kept;
- experiments of this run that a killed loop left running (papermill, in a session of its own) are killed,
  so that they do not write into the notebook folder a resume is about to use;
- the worktree is reset to the last kept commit, clean (experiments run from copies, not from it).
"""
from __future__ import annotations

import os
from pathlib import Path

import psutil

from autoresearch_kernel.execution.runner import kill_tree
from autoresearch_kernel.journal.records import PAIR, Records
from autoresearch_kernel.journal.runstate import State
from autoresearch_kernel.workspace.worktree import Workspace


def recover(workspace: Workspace, state: State, records: Records) -> None:
    """Complete what a stopped loop left half done; `state` is updated in place (the caller saves it)."""
    kill_orphans(workspace.folder.path)
    last = records.last_kept_commit()
    if last:
        state.kept = state.kept if state.kept.startswith(last) else workspace.resolve(last)
    elif not state.kept:
        state.kept = state.flights[0].parent if state.flights else workspace.head()
    for flight in list(state.flights):
        written = records.written(flight.numbers)
        if written:  # the rows made it to disk; only the keep/revert after them did not
            state.flights.remove(flight)
            if flight.kind == PAIR:  # a run of the best: nothing to keep or revert
                continue
            if written[0].status == "keep" and flight.kind != "baseline":
                state.kept = flight.commit
            elif written[0].status != "keep":
                workspace.discard(flight.commit, flight.numbers[0], state.kept)
        elif flight.started > len(flight.runs):  # a run of it was cut short (not one still waiting for a lane)
            flight.interrupts += 1
            flight.started = len(flight.runs)
    if workspace.head() != state.kept or workspace.is_dirty():
        workspace.reset_to(state.kept)


def kill_orphans(run_folder: Path) -> None:
    """Kill experiments a killed loop left running: kernel hosts (or papermill) working in this run's folder
    (notebooks/, and kernels/ for the kernels started ahead).

    A SIGKILL reaches the loop only; an unjailed kernel host (in a session of its own) and its kernel would go
    on training for up to the timeout and write into the notebook a resume is about to write (a jailed one
    dies with its jail, which dies with the loop). Holding the tag's lock, any such process is an orphan of
    ours.
    """
    marker = str(run_folder) + os.sep
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        command = " ".join(process.info.get("cmdline") or [])
        if process.pid == os.getpid() or not ("kernel_host" in command or "papermill" in command):
            continue
        if marker in command or (process.info.get("cwd") or "").startswith(marker):
            kill_tree(process.pid)
