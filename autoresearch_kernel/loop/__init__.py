"""The loop: propose, check, commit, run, score, decide, record; forever, and resumable after a kill.

    loop.py      the `Loop`: its lanes, its thread of proposals, its life (open, run, stop, close)
    settings.py  `LoopConfig`: one run's settings, config.json, the command line's options, resume checks
    intake.py    one proposal taken in: proposed, merged onto the best, checked for novelty, committed
    guard.py     the integrity checks the loop calls: sources and data, the pre-filter, the scorer
    settle.py    one finished run decided (the gate's verdicts) and recorded; keep or revert
    ledger.py    the journal's door for intake and settle: flights in state.json, rows appended, the status
    recovery.py  what a killed loop left: runs to finish, rows to write, orphans to stop
    events.py    the live status the dashboard and the command line show

`Loop` and `LoopConfig` are the door; the rest are its rooms.
"""
from autoresearch_kernel.loop.loop import Loop
from autoresearch_kernel.loop.settings import LoopConfig

__all__ = ["Loop", "LoopConfig"]
