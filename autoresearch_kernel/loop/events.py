"""What the loop tells the world: its live status (runs/<tag>/status.json) and an `Event` per change.

The dashboard in another process reads status.json; an observer in this process (the CLI's printer, the
dashboard's tests, `autoresearch step`) gets an `Event` at every phase change, every row written and every
invalid proposal. Both carry the gate's figures of the moment (best so far, the noise sd it decides with, the
margin a candidate's first run must beat), from the run's records in memory.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from autoresearch_kernel.journal import runstate
from autoresearch_kernel.journal.records import Records
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.journal.runstate import LoopStatus
from autoresearch_kernel.text import one_line
from autoresearch_kernel.workspace.runfolder import RunFolder


@dataclass(frozen=True)
class Event:
    """What the loop tells its observer (dashboard, CLI) at every phase change and every row."""

    phase: str  # runstate.PHASES
    status: LoopStatus  # a snapshot of the live status
    rows: tuple[Row, ...] = ()  # rows just appended to results.tsv
    invalid: Row | None = None  # a proposal just recorded as invalid


class Reporter:
    """Keeps the live status, writes it to status.json and calls the observer, at every change."""

    def __init__(self, folder: RunFolder, status: LoopStatus, records: Records,
                 on_event: Callable[[Event], None] | None = None):
        self.folder, self.status, self.records = folder, status, records
        self.on_event = on_event

    def set_phase(self, phase: str, message: str | None = None, **fields) -> None:
        if phase != self.status.phase:
            self.status.phase_since = time.time()
        self.status.phase = phase
        if message is not None:
            self.status.message = one_line(message, 200)
        for name, value in fields.items():
            setattr(self.status, name, value)
        self.emit()

    def emit(self, rows: tuple[Row, ...] = (), invalid: Row | None = None) -> None:
        self.status.best, self.status.noise_std = self.records.best(), self.records.noise_std()
        self.status.margin = self.records.margin()
        runstate.write_status(self.folder.path, self.status)
        if self.on_event is not None:
            self.on_event(Event(self.status.phase, dataclasses.replace(self.status), rows, invalid))
