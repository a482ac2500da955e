"""The loop's journal door: the experiments in flight, the rows written, and what the world is told of both.

The intake and the settler change the run's record the same few ways: an experiment joins the flights or
leaves them (state.json), rows are appended (results.tsv or invalid.tsv, then the idea memory, then the live
status), the phase changes. A `Ledger`, made once by the loop, is that door; neither of them sees the Loop.

The order inside `append` is the resume contract: the rows go to results.tsv first (atomically), then to
the memory and the observers, as written (handed on, never read back from disk).
"""
from __future__ import annotations

import time

from autoresearch_kernel.journal import runstate
from autoresearch_kernel.journal.memory import Memory
from autoresearch_kernel.journal.records import Records
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.journal.rows import RowBuilder
from autoresearch_kernel.journal.runstate import Pending, State
from autoresearch_kernel.loop.events import Reporter
from autoresearch_kernel.workspace.runfolder import RunFolder


class Ledger:
    """state.json's flights, the run's rows and the live status of one tag (see the module docstring)."""

    def __init__(self, tag: str, folder: RunFolder, state: State, records: Records, memory: Memory,
                 reporter: Reporter, rows: RowBuilder):
        self.tag, self.folder, self.state, self.records, self.memory = tag, folder, state, records, memory
        self.reporter, self.rows = reporter, rows

    @property
    def status(self) -> runstate.LoopStatus:
        return self.reporter.status

    # -- state.json ---------------------------------------------------------------------------------------
    def save(self) -> None:
        runstate.save_state(self.folder.path, self.state)

    def add_flight(self, flight: Pending) -> Pending:
        """The flight in state.json with the next free experiment number, runnable from now."""
        flight.numbers = [self.records.next_number(self.state.flights)]
        flight.queued_at = time.time()
        self.state.flights.append(flight)
        self.save()
        return flight

    def forget(self, flight: Pending) -> None:
        """The flight is settled: out of state.json, and its candidate notebooks (the jail's copies) deleted."""
        self.state.flights.remove(flight)
        self.save()
        for number in flight.numbers:
            self.folder.candidate(number, flight.commit).unlink(missing_ok=True)

    # -- the rows -----------------------------------------------------------------------------------------
    def append(self, rows: list[Row]) -> list[Row]:
        """Rows to results.tsv, then to the idea memory and the observers, as written; returns them so."""
        rows = self.records.append([self.rows.marked(row) for row in rows])
        self.memory.remember(self.tag, self.records.rows)
        self.reporter.emit(rows=tuple(rows))
        return rows

    def append_invalid(self, row: Row) -> Row:
        """A proposal that produced no experiment, to invalid.tsv and the observers."""
        row = self.records.append_invalid(self.rows.marked(row))
        self.status.message = f"{row.status} proposal: {row.failure[:120]}"
        self.reporter.emit(invalid=row)
        return row

    def count_proposal(self) -> None:
        self.status.proposals += 1

    # -- the live status ----------------------------------------------------------------------------------
    def set_phase(self, phase: str, message: str | None = None, **fields) -> None:
        self.reporter.set_phase(phase, message, **fields)
