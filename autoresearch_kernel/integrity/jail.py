"""The operating-system boundary around candidate code: a bubblewrap jail.

Static rules over the agent's cells cannot be complete (every rule has a way round it through names built
at run time), so the boundary is the kernel's namespaces instead. A jailed process sees:

    /usr, /etc (and the merged-/usr links)   read-only: the system, the interpreter, its libraries
    the venv and the package's source         read-only: torch, papermill, the harness
    the paths the caller names as `readonly`  e.g. the candidate notebook and the training split
    the paths the caller names as `writable`  exactly one: the experiment's own output folder
    /tmp, /dev/shm                            fresh, empty, in memory, gone with the jail
    /proc, /dev                               its own: its own PID namespace, no host devices (but GPUs)

and no network (its own network namespace has only a loopback, which papermill needs to talk to the
kernel), no IPC with the host, a cleared environment (see environment.py), no capabilities, its own terminal
session, and it dies with its parent: when the loop dies, the jail's PID 1 dies, and the kernel then kills
every process in the namespace, daemons included. The repository, the run folder, results.tsv, .git, the
validation split and the loop's home are not in the jail at all.
"""
from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch_kernel.integrity.environment import HOME, package_root

BWRAP = "bwrap"
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
SYSTEM_READONLY = ("/usr", "/etc", "/opt")  # bound when present; /bin, /lib, ... follow below
MERGED_USR_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri")  # what the CUDA runtime opens


@functools.cache
def unavailable_reason() -> str | None:
    """None when a jail can be made on this machine; else one line saying why not and what to do."""
    binary = shutil.which(BWRAP)
    if binary is None:
        return f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}"
    probe = [binary, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--cap-drop", "ALL", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bubblewrap could not start ({error}); {INSTALL_HINT}"
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return (f"bubblewrap cannot create namespaces here ({detail}); enable unprivileged user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1) or run on Linux with them")
    return None


@dataclass(frozen=True)
class Jail:
    """One jail's view of the host. `command(argv)` wraps a command line so that it runs inside."""

    readonly: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    gpu: bool = False  # bind the GPU device nodes (a CUDA experiment or scorer)
    cwd: Path | None = None  # where the command starts (default: the first writable path, or /tmp)
    extra: tuple[str, ...] = field(default=(), repr=False)  # more bwrap arguments (tests only)
    # Paths hidden inside (an empty read-only folder or file in their place) where a bound path holds them:
    # the inputs prepare read the validation text from, e.g. the corpus inside the venv's packages.
    masked: tuple[Path, ...] = ()

    def command(self, argv: list[str]) -> list[str]:
        """`bwrap <mounts> -- argv`: run with the environment given to Popen (bwrap passes it on as is)."""
        binary = shutil.which(BWRAP)
        if binary is None:
            raise FileNotFoundError(unavailable_reason())
        args = [binary, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm", "--dir", HOME]
        for path in SYSTEM_READONLY:
            if os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in MERGED_USR_LINKS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in _runtime_paths() + [Path(p) for p in self.readonly]:
            if path.exists():
                args += ["--ro-bind", str(path), str(path)]
        for path in self.writable:
            args += ["--bind", str(path), str(path)]
        args += _masks(self.masked, [*SYSTEM_READONLY, *MERGED_USR_LINKS, *_runtime_paths(), *self.readonly])
        if self.gpu:
            for pattern in GPU_DEVICES:
                for node in glob.glob(pattern):
                    args += ["--dev-bind", node, node]
            if os.path.isdir("/sys"):  # device topology the CUDA runtime reads
                args += ["--ro-bind", "/sys", "/sys"]
        cwd = self.cwd or (self.writable[0] if self.writable else Path("/tmp"))
        args += ["--chdir", str(cwd), *self.extra, "--", *argv]
        return args


def _masks(masked, bound) -> list[str]:
    """bwrap arguments that cover each masked path under a bound one (after the binds: mounts stack)."""
    args: list[str] = []
    roots = [Path(p).resolve() for p in bound]
    for path in (Path(p).resolve() for p in masked):
        if not any(path == root or root in path.parents for root in roots):
            continue
        if path.is_dir():
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
        elif path.exists():
            args += ["--ro-bind", os.devnull, str(path)]
    return args


def _runtime_paths() -> list[Path]:
    """The interpreter's installation, the venv (when one runs us) and the package's source, read-only.

    Only the package folder of the checkout is bound, not the checkout: its .git, runs/ and data stay out.
    """
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent}
    root = package_root()
    paths.add(root / "autoresearch_kernel")
    return sorted(p for p in paths if not _under_system(p))


def _under_system(path: Path) -> bool:
    return any(path == Path(s) or Path(s) in path.parents for s in SYSTEM_READONLY)
