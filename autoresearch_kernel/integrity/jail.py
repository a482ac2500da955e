"""The operating-system boundary around candidate code: a bubblewrap jail.

Static rules over the agent's cells cannot be complete (every rule has a way round it through names built
at run time), so the boundary is the kernel's namespaces instead. A jailed process sees:

    /usr (and the merged-/usr links)          read-only: the system, the interpreter, its libraries
    the /etc entries of RUNTIME_ETC           read-only: loader cache, certificates, passwd/group, ...
                                              (nothing of shadow, gshadow, sudoers, ssh, ssl/private)
    the venv and the package's source         read-only: torch, papermill, the harness
    the paths the caller names as `readonly`  e.g. the candidate notebook and the training split
    the paths the caller names as `writable`  exactly one: the experiment's own output folder
    /tmp, /dev/shm                            fresh, empty, in memory, gone with the jail, of a
                                              limited size (limits.py: inside the memory limit)
    /proc, /dev                               its own: its own PID namespace, no host devices (but GPUs)

and no network (its own network namespace has only a loopback, which papermill needs to talk to the
kernel), no IPC with the host, a cleared environment (see environment.py), no capabilities, its own terminal
session, and it dies with its parent: when the loop dies, the jail's PID 1 dies, and the kernel then kills
every process in the namespace, daemons included. The repository, the run folder, results.tsv, .git, the
validation split and the loop's home are not in the jail at all.

When the loop runs as root, a jail's processes run as an unprivileged host uid and gid (limits.jail_ids:
nobody/nogroup, no supplementary groups), since a uid map inside a user namespace does not change the owner
the host's files see; bwrap then runs unprivileged in a user namespace. Its writable folder is made the
jail uid's only. Every bound path is bound at its own path, so the folders above it (/root, 0700) are the
jail's own empty ones: a bound file needs only to be readable by others (o+r, the default umask's).
`limits` (integrity/limits.py): the resource limits the jail's process tree runs under.
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

from autoresearch_kernel.integrity import limits as resource_limits
from autoresearch_kernel.integrity.environment import HOME, package_root

BWRAP = "bwrap"
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
SYSTEM_READONLY = ("/usr", "/opt")  # bound when present; /bin, /lib, ... follow below; /etc: RUNTIME_ETC
# What the loader, Python, Jupyter, torch and TLS read from /etc; links are re-made as links.
RUNTIME_ETC = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ld.so.preload", "passwd", "group", "nsswitch.conf",
    "localtime", "timezone", "hosts", "host.conf", "gai.conf", "protocols", "services", "mime.types",
    "os-release", "locale.alias", "alternatives", "ca-certificates", "ca-certificates.conf", "ssl/certs",
    "ssl/openssl.cnf", "pki/tls/certs", "pki/ca-trust", "fonts", "mtab", "python3", "debian_version",
    f"python3.{sys.version_info.minor}",
)
MERGED_USR_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri")  # what the CUDA runtime opens

# A root loop's jail: bwrap runs as root (it can read bind sources under /root, 0700, that the jail's uid could
# not reach) in every namespace but the user's, keeping only the capabilities to change uid; the first thing
# that runs inside drops to the jail's uid and gid for good (setuid from root clears every capability, and
# bwrap's no_new_privs keeps it so), then executes the command.
ROOT_NAMESPACES = ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try")
ROOT_CAPS = ("--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID")
DROP_PRIVILEGES = ("import os, sys; os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1])); "
                   "assert os.getresuid() == (int(sys.argv[1]),) * 3; os.chdir(sys.argv[3]); "
                   "os.execv(sys.argv[4], sys.argv[4:])")


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
    limits: resource_limits.Limits | None = None  # None: the cpu profile's (see limits.for_profile)

    def confine(self) -> resource_limits.Confinement:
        """This jail's limits in force for one process tree: pass `popen_options()` to Popen, close after."""
        return resource_limits.Confinement(self.limits or resource_limits.for_profile("cpu"), self.writable)

    def command(self, argv: list[str]) -> list[str]:
        """`bwrap <mounts> -- argv`: run with the environment given to Popen (bwrap passes it on as is)."""
        binary = shutil.which(BWRAP)
        if binary is None:
            raise FileNotFoundError(unavailable_reason())
        ids = resource_limits.jail_ids()
        tmp = str((self.limits or resource_limits.for_profile("cpu")).tmp)
        args = [binary, *(ROOT_NAMESPACES if ids else ["--unshare-all"]), "--die-with-parent", "--new-session",
                "--cap-drop", "ALL", *(ROOT_CAPS if ids else []), "--proc", "/proc", "--dev", "/dev",
                "--perms", "1777", "--size", tmp, "--tmpfs", "/tmp",
                "--perms", "1777", "--size", tmp, "--tmpfs", "/dev/shm", "--perms", "1777", "--dir", HOME]
        for path in SYSTEM_READONLY:
            if os.path.isdir(path):
                args += ["--ro-bind", path, path]
        args += _etc_binds()
        for path in MERGED_USR_LINKS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        bound = [p for p in _runtime_paths() + [Path(p) for p in self.readonly] if p.exists()]
        args += _open_parents(bound + [Path(p) for p in self.writable])
        for path in bound:
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
        if ids:  # bwrap runs as root; the command as the jail's uid, dropped to before anything else runs
            argv = [sys.executable, "-I", "-S", "-c", DROP_PRIVILEGES, str(ids[0]), str(ids[1]), str(cwd),
                    shutil.which(argv[0]) or argv[0], *argv[1:]]
        else:
            args += ["--chdir", str(cwd)]
        args += [*self.extra, "--", *argv]
        return args


def _open_parents(paths: list[Path]) -> list[str]:
    """bwrap arguments that make the folders above the bound paths inside the jail (bwrap would copy the
    host's modes: /root 0700, /tmp/pytest-of-root 0700) traversable by the jail's uid; system paths excepted."""
    made, args = set(), []
    for path in paths:
        for parent in reversed(Path(path).parents):
            if parent == Path("/") or parent in made or _under_system(parent) or parent == Path("/tmp"):
                continue
            made.add(parent)
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _etc_binds() -> list[str]:
    """bwrap arguments for the RUNTIME_ETC entries present here: links as links, the rest read-only."""
    args = ["--perms", "0755", "--dir", "/etc"]  # else bwrap makes it 0700: the jail's uid could not enter it
    args += _open_parents([Path("/etc", name) for name in RUNTIME_ETC if os.path.lexists(os.path.join("/etc", name))])
    for name in RUNTIME_ETC:
        path = os.path.join("/etc", name)
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            args += ["--ro-bind", path, path]
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
