"""Reading what a jail left: files of an experiment's folder and strings that came out of a jail.

The experiment owns its folder while it runs, so anything in it may be a trap for the loop that reads it
afterwards with the host's rights: a symbolic link to /etc/shadow where metrics.json should be, a FIFO that
blocks the reader forever, a device, a file of a terabyte. So every read here opens the folder itself without
following a link, then the name relative to that descriptor with O_NOFOLLOW (and O_NONBLOCK: a FIFO does not
block), requires a regular file (fstat), and reads at most a cap; a path found inside the folder is never
resolved. A refusal raises `RefusedFile` (an OSError), which the caller records. Writes into such a folder
(the scorer's summary appended to the executed notebook) remove what is at the name and create it anew with
O_EXCL | O_NOFOLLOW, never writing through a planted link.

Strings that came out of a jail (an error message, a log tail, a notebook's output) go through `clean`: ANSI
codes and other control characters out, the loop's secrets redacted, capped, before they reach results.tsv,
the dashboard or a prompt.
"""
from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

from autoresearch_kernel.redaction import redact
from autoresearch_kernel.text import strip_ansi

METRICS_BYTES = 1024**2  # metrics.json: a few hundred bytes when honest
NOTEBOOK_BYTES = 64 * 1024**2  # the executed notebook, outputs included
LOG_TAIL_BYTES = 64 * 1024  # the end of a log
TEXT_CHARS = 4000  # any one string out of a jail
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


class RefusedFile(OSError):
    """A file of an experiment's folder that is not a regular file (a link, a FIFO, a device), or too large."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def open_in(folder: Path, name: str) -> int:
    """A read-only descriptor of `folder/name`, refused unless it is a regular file reached through no link."""
    if "/" in name or name in ("", ".", ".."):
        raise RefusedFile(f"{name!r} is not a file name")
    directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
        except OSError as error:
            if error.errno == 40:  # ELOOP: the name is a symbolic link
                raise RefusedFile(f"{name} is a symbolic link; refused") from None
            raise
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise RefusedFile(f"{name} is {_kind(mode)}, not a regular file; refused")
        return fd
    finally:
        os.close(directory)


def read_bytes(path: Path, cap: int, tail: bool = False) -> bytes:
    """At most `cap` bytes of the regular file at `path` (its last ones with `tail`); RefusedFile when it is
    larger and not `tail`, or not a regular file."""
    path = Path(path)
    fd = open_in(path.parent, path.name)
    with os.fdopen(fd, "rb") as handle:
        length = os.fstat(fd).st_size
        if length > cap and not tail:
            raise RefusedFile(f"{path.name} holds {length} bytes, over the {cap} read from a run folder; refused")
        if tail and length > cap:
            handle.seek(length - cap)
        return handle.read(cap)


def read_text(path: Path, cap: int, tail: bool = False) -> str:
    return read_bytes(path, cap, tail).decode("utf-8", errors="replace")


def load(path: Path, cap: int) -> io.BytesIO:
    """The whole file in memory (the scorer's program: read once, through no link, then parsed)."""
    return io.BytesIO(read_bytes(path, cap))


def write_text(path: Path, text: str) -> None:
    """Replace `path` (in a folder a jail wrote) with `text`: whatever is at the name is removed first, and the
    new file is created with O_EXCL | O_NOFOLLOW, so a planted link is never written through."""
    path = Path(path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        temporary = f".{path.name}.tmp"
        try:
            os.unlink(temporary, dir_fd=directory)
        except FileNotFoundError:
            pass
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path.name, src_dir_fd=directory, dst_dir_fd=directory)
    finally:
        os.close(directory)


def clean(text: object, limit: int = TEXT_CHARS, tail: bool = False) -> str:
    """A string out of a jail made fit to show: no ANSI or control characters (newlines and tabs stay),
    secrets redacted, at most `limit` characters (its end with `tail`)."""
    text = CONTROL.sub("", strip_ansi(str(text)))
    text = redact(text)
    if len(text) <= limit:
        return text
    return "..." + text[-(limit - 3):] if tail else text[: limit - 3] + "..."
