"""A task's functions (scorer, checks, preparation), named in task.json as "module:function" or "file.py:function".

A bundled task names a module of this package; a user's task (`autoresearch init`) names a file of theirs,
relative to the task's folder or absolute. Only the loop's side calls them, never the experiment: the scorer
and the checks run in a jail of their own (tasks/filescore.py), the preparation before any experiment.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from autoresearch_kernel.errors import AutoresearchError


def split(spec: str) -> tuple[str, str]:
    """("module or file", "function") of a spec; AutoresearchError when it names no function."""
    where, _, name = spec.rpartition(":")
    if not where or not name.isidentifier():
        raise AutoresearchError(f"{spec!r} names no function: write it as module:function or file.py:function")
    return where, name


def file_of(spec: str, folder: str | Path = "") -> Path | None:
    """The file a "file.py:function" spec names (absolute), or None for a module."""
    where, _ = split(spec)
    if not where.endswith(".py"):
        return None
    path = Path(where)
    return (path if path.is_absolute() else Path(folder or ".") / path).resolve()


def load_function(spec: str, folder: str | Path = "") -> Callable:
    """The function a spec names, imported (a module) or loaded from its file."""
    where, name = split(spec)
    path = file_of(spec, folder)
    if path is None:
        module = importlib.import_module(where)
    else:
        if not path.is_file():
            raise AutoresearchError(f"{spec!r}: no file {path}; fix the task's task.json or create the file")
        loaded = importlib.util.spec_from_file_location(f"task_function_{path.stem}", path)
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
    function = getattr(module, name, None)
    if not callable(function):
        raise AutoresearchError(f"{spec!r}: {where} has no function {name}")
    return function
