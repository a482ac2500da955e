"""Plain text from a kernel's output, made fit to show: ANSI colour codes removed.

Tracebacks and logs written by Jupyter kernels carry terminal colour codes; a widget, a one-line failure
reason or a results row must not. Both the runner (failure excerpts) and the dashboard (log tails) read
such text, so the pattern lives here, below both.
"""
from __future__ import annotations

import re

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour and cursor codes: ESC [ numbers letter


def strip_ansi(text: str) -> str:
    """`text` without its ANSI escape codes."""
    return ANSI_ESCAPE.sub("", text)
