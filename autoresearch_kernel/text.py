"""Plain text from a kernel's output, made fit to show: ANSI colour codes removed, one line, secrets redacted.

Tracebacks and logs written by Jupyter kernels carry terminal colour codes; a widget, a one-line failure
reason or a results row must not. Both the runner (failure excerpts) and the dashboard (log tails) read
such text, so the pattern lives here, below both.
"""
from __future__ import annotations

import re

from autoresearch_kernel.redaction import redact

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour and cursor codes: ESC [ numbers letter


def strip_ansi(text: str) -> str:
    """`text` without its ANSI escape codes."""
    return ANSI_ESCAPE.sub("", text)


def one_line(text: str, limit: int = 300) -> str:
    """Collapse tabs and newlines so that a free text can never break a TSV's or a log's shape; secrets redacted."""
    flat = " ".join(redact(str(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
