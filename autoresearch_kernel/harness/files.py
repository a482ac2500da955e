"""Crash-safe file writes and content hashes for the prepared data.

Every file the harness writes goes to a temporary name in the same folder and is renamed into place only
when complete, so an interrupted or failed write (disk full, killed process) never leaves a file that
looks finished. A write that fails raises DataError saying what happened and what to do.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import numpy as np

from autoresearch_kernel.errors import DataError

TMP_SUFFIX = ".tmp"  # half-written files end in this; prepare sweeps them away


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise DataError(_write_failure(path, error)) from error


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save one array as .npy (no pickled objects) through atomic_write_bytes."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_failure(path: Path, error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return f"disk full while writing {path}: free some space in {path.parent} (or pass another --data-dir) and run prepare again"
    return f"cannot write {path}: {error.strerror or error}; check the folder's permissions and space, then run prepare again"
