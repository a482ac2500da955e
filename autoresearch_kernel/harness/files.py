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


class NpyAppender:
    """A one-dimensional .npy written piece by piece, so that an array larger than memory never has to be
    held whole (climbmix's training tokens are over a gigabyte). Use as a context manager: the file appears
    at `path` only when the block ends without an error; otherwise the temporary file is removed.

    The header is written first for length 0 and rewritten with the real length at the end: numpy pads a
    header with room for the shape to grow, so both take the same bytes and the file is the one np.save
    would write.
    """

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype, self.length = Path(path), np.dtype(dtype), 0
        self.tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}{TMP_SUFFIX}")
        self.handle = None

    def __enter__(self) -> NpyAppender:
        try:
            self.handle = open(self.tmp, "wb")
            self._write_header()
            self.data_offset = self.handle.tell()
        except OSError as error:
            self._discard()
            raise DataError(_write_failure(self.path, error)) from error
        return self

    def append(self, values: np.ndarray) -> None:
        try:
            self.handle.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        except OSError as error:
            self._discard()
            raise DataError(_write_failure(self.path, error)) from error
        self.length += len(values)

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self._discard()
            return
        try:
            self.handle.seek(0)
            self._write_header()
            if self.handle.tell() != self.data_offset:  # a numpy without the room would overwrite the data
                raise OSError(errno.EIO, f"the .npy header of {self.length} items outgrew its room")
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.tmp, self.path)
        except OSError as error:
            self._discard()
            raise DataError(_write_failure(self.path, error)) from error

    def _write_header(self) -> None:
        np.lib.format.write_array_header_1_0(self.handle, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.length,)})

    def _discard(self) -> None:
        if self.handle is not None and not self.handle.closed:
            self.handle.close()
        self.tmp.unlink(missing_ok=True)


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
