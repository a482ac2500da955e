"""Small text helpers shared by the runner, the scorer and the dashboard (no imports of the package's own)."""
from __future__ import annotations

import re

# Terminal colour codes, as IPython puts them in tracebacks.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    return ANSI_ESCAPE.sub("", text)
