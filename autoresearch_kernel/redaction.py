"""Secrets out of everything the loop writes: rows, logs, prompts, status lines.

The experiment never sees the loop's secrets (its environment is an allow-list, see integrity/environment.py);
this is the second line, for text that passes through the loop itself (an error message from the LLM
endpoint that quotes a header, say).
"""
from __future__ import annotations

import os

# Environment variables whose names contain these words hold secrets (OPENAI_API_KEY, HF_TOKEN, ...).
SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "COOKIE")
MIN_SECRET_CHARS = 6  # shorter values ("1", "true") would redact ordinary words


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


def redact(text: str) -> str:
    """Replace the values of this process's secrets wherever they appear in `text`."""
    for name, value in os.environ.items():
        if len(value) >= MIN_SECRET_CHARS and is_secret_name(name) and value in text:
            text = text.replace(value, "***")
    return text
