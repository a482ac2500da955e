"""The scorers' bytecode cache: compiled by the trusted side only, read-only to every jailed process.

The scoring processes (integrity/scorer.py, tasks/filescore.py) run isolated (`python -I`) with a bytecode
cache of their own (`-X pycache_prefix=`), never the `__pycache__` folders beside the sources: a planted .pyc
must not stand in for the harness's source. A fresh, empty cache made every scorer compile torch's Python
again: 10.4 s to import what scoring needs, against 4.0 s from a filled cache (2 cores). Each loop starts a
scorer, and a task's file scorer starts one per experiment.

So the cache is filled once per interpreter and torch release, by a process of the loop's own that only
imports (no candidate's code runs in it), in a folder of the user's cache that no experiment's jail binds;
scorers read it through a read-only bind. A source changed since is compiled again in memory, as Python
checks each .pyc against its source. Where the folder cannot be written, the scorers get a fresh one, as
before.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from autoresearch_kernel.integrity.environment import package_root
from autoresearch_kernel.integrity.jail import Jail

# What the scoring processes import: torch's export loader and FLOP counter pull in most of torch._dynamo.
SCORER_IMPORTS = (
    "torch", "torch.export", "torch.export.pt2_archive", "torch._export.serde.serialize", "torch.utils.flop_counter",
    "numpy", "autoresearch_kernel.integrity.scorer", "autoresearch_kernel.integrity.blind",
    "autoresearch_kernel.harness.data", "autoresearch_kernel.harness.flops", "autoresearch_kernel.tasks.scoring",
)
FILL_TIMEOUT_S = 300.0


def cache_root() -> Path:
    """~/.cache/autoresearch_kernel/bytecode (or under $XDG_CACHE_HOME): beside the default data, bound by no
    experiment's jail."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "autoresearch_kernel" / "bytecode"


def scorer_cache(root: Path | None = None) -> Path | None:
    """The filled cache for this interpreter, torch release and package (filled now if need be), or None where
    it cannot be had: the scorer then compiles into a fresh one."""
    folder = (root or cache_root()) / _key()
    done = folder / "filled"
    if done.is_file():
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        start = f"import sys; sys.path.insert(0, {str(package_root())!r}); " + \
            "; ".join(f"import {name}" for name in SCORER_IMPORTS)
        subprocess.run([sys.executable, "-I", "-X", f"pycache_prefix={folder}", "-c", start], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=FILL_TIMEOUT_S)
        partial = done.with_suffix(f".{os.getpid()}")
        partial.write_text(" ".join(SCORER_IMPORTS) + "\n")
        partial.replace(done)  # whole or absent: a loop starting beside this one fills again, harmlessly
    except (OSError, subprocess.SubprocessError):
        return None
    return folder


def with_bytecode(jail: Jail | None, fresh: str) -> tuple[Jail | None, str]:
    """The jail a scoring process runs in and its bytecode cache: the trusted one (`scorer_cache`),
    bound read-only, where it can be had; else a fresh one (`fresh` outside a jail, the jail's own /tmp)."""
    cache = scorer_cache()
    if cache is None:
        return jail, "/tmp/pycache" if jail is not None else fresh
    if jail is not None:
        jail = dataclasses.replace(jail, readonly=(*jail.readonly, cache))
    return jail, str(cache)


@functools.cache
def _key() -> str:
    """The cache's folder name: the interpreter's tag and a hash of what its contents depend on (fixed for the
    process; the metadata lookup is not repeated at every scorer's start)."""
    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch = "none"
    said = "\n".join((sys.version, sys.executable, torch, str(package_root()), *SCORER_IMPORTS))
    return f"{sys.implementation.cache_tag}-{hashlib.sha256(said.encode()).hexdigest()[:16]}"
