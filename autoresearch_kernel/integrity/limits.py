"""Resource limits of every jail (experiment and scorer), and the one measurement of what a jail used.

Per profile (overridable with $AUTORESEARCH_LIMITS, e.g. `memory=1GB,processes=64,disk=200MB,tmp=100MB`):

    memory      the jail's whole process tree, its /tmp included (a tmpfs: charged to its memory cgroup)
    tmp         the size of its /tmp (a size-limited tmpfs, inside the memory limit)
    processes   processes and threads of the tree (a fork bomb ends here, not in the host's pid table)
    cpus        CPU time per wall second: the lane's threads (cgroup cpu quota)
    disk        the run folder's size, and any one file's (RLIMIT_FSIZE)

Enforced by a control group (cgroups.py: v2 where delegated, else v1) where this machine lets the loop make
one; else by rlimits in every jailed process (RLIMIT_DATA per process, RLIMIT_NPROC per host uid, only under
the jail's own unprivileged uid), said once on stderr and in `doctor`: never a silent fall-back. The jails'
oom_score_adj is 1000 and the loop's own is lowered, so that the OOM killer picks an experiment first.

`Confinement` is one jail's share: `popen_options()` for subprocess.Popen (the child joins the group and sets
its rlimits, then executes bwrap; the jail drops to its unprivileged uid inside, see jail.py), `exceeded()` names the limit a finished
jail hit (`memory limit 6.0 GB`), `usage()` reads its CPU seconds and peak memory (the budget's check reads
the same numbers: one mechanism), `close()` kills what is left. `doctor` prints `describe()`.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.integrity import cgroups

LIMITS_ENV = "AUTORESEARCH_LIMITS"
GB, MB = 1024**3, 1024**2
JAIL_OOM_SCORE = 1000  # the OOM killer's first choice
LOOP_OOM_SCORE = -500  # the loop's own, when it may lower it (root)
UNPRIVILEGED = ("nobody", ("nogroup", "nobody"))  # the host user and group a root loop's jails run as


@dataclass(frozen=True)
class Limits:
    """One jail's limits, in bytes and counts; `cpus` None: no CPU quota (the scorer)."""

    memory: int
    tmp: int
    processes: int
    disk: int
    cpus: float | None = None

    def describe(self) -> str:
        cpus = f", {self.cpus:g} CPUs" if self.cpus else ""
        return (f"memory {size(self.memory)} (its /tmp {size(self.tmp)} inside it), {self.processes} processes"
                f"{cpus}, disk {size(self.disk)}")


PROFILE_LIMITS = {
    "cpu": Limits(memory=6 * GB, tmp=1 * GB, processes=256, disk=2 * GB),
    "gpu": Limits(memory=64 * GB, tmp=8 * GB, processes=1024, disk=32 * GB),  # checkpoints of a GPU model
}


def size(count: int) -> str:
    """`6.0 GB`, `200 MB`: how a limit is named in a row."""
    return f"{count / GB:.1f} GB" if count >= GB else f"{count / MB:.0f} MB"


def for_profile(profile: str, cpus: float | None = None) -> Limits:
    """The profile's limits (the cpu profile's for an unknown one), $AUTORESEARCH_LIMITS on top; never more
    memory than 80% of this machine's, so the loop and the scorer keep room."""
    limits = PROFILE_LIMITS.get(profile, PROFILE_LIMITS["cpu"])
    limits = dataclasses.replace(limits, **_overrides(os.environ.get(LIMITS_ENV, "")), cpus=cpus)
    ceiling = int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return dataclasses.replace(limits, memory=min(limits.memory, ceiling), tmp=min(limits.tmp, limits.memory))


def _overrides(text: str) -> dict:
    found = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in ("memory", "tmp", "processes", "disk"):
            raise AutoresearchError(f"{LIMITS_ENV}: unknown limit {name!r}; use memory, tmp, processes or disk")
        try:
            found[name] = int(value) if name == "processes" else _bytes(value)
        except ValueError:
            raise AutoresearchError(f"{LIMITS_ENV}: {item!r} is not a size (e.g. memory=6GB, disk=500MB)") from None
    return found


def _bytes(text: str) -> int:
    text = text.strip().upper()
    for unit, factor in (("GB", GB), ("MB", MB), ("KB", 1024), ("B", 1)):
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(text)


# -- who the jail runs as ---------------------------------------------------------------------------------
@functools.cache
def jail_ids() -> tuple[int, int] | None:
    """(uid, gid) a root loop's jails run as on the host; None when the loop is not root (no change)."""
    if os.geteuid() != 0:
        return None
    import grp
    import pwd

    user, groups = UNPRIVILEGED
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        uid = 65534
    gid = 65534
    for name in groups:
        try:
            gid = grp.getgrnam(name).gr_gid
            break
        except KeyError:
            continue
    return uid, gid


def give_to_jail(path: Path) -> None:
    """The jail's one writable folder: owned by the jail's uid, and by it only (a root loop's jails)."""
    ids = jail_ids()
    if ids is not None:
        os.chown(path, *ids)
        os.chmod(path, 0o700)


# -- the mechanism ----------------------------------------------------------------------------------------
@functools.cache
def mechanism() -> tuple[str, str]:
    """(what enforces the limits, why not a cgroup): said once on stderr when it is rlimits."""
    found, why = cgroups.backend()
    if found is not None:
        cpu = "" if found.has_cpu else " (no cpu controller: CPUs bounded by the thread count only)"
        return found.describe() + cpu, ""
    print(f"autoresearch: no writable cgroup ({why}); the jails' limits fall back to rlimits: memory per "
          "process, processes per uid, no CPU quota, /tmp outside the memory limit", file=sys.stderr)
    return "rlimits", why


def lower_own_oom_score() -> None:
    """The loop's own OOM score below the jails' (only root may lower it; others stay at theirs)."""
    if os.geteuid() == 0:
        try:
            Path("/proc/self/oom_score_adj").write_text(str(LOOP_OOM_SCORE))
        except OSError:
            pass


def describe(limits: Limits) -> list[str]:
    """What `doctor` and the loop's log say: the limits, the mechanism, the uid."""
    how, why = mechanism()
    ids = jail_ids()
    who = f"uid {ids[0]} gid {ids[1]}, no supplementary groups" if ids else f"the loop's own uid {os.geteuid()}"
    lines = [f"limits: {limits.describe()}", f"enforced by: {how}" + (f" (no cgroup: {why})" if why else ""),
             f"jails run as: {who}; oom_score_adj {JAIL_OOM_SCORE}"]
    return lines


@dataclass(frozen=True)
class Usage:
    """What a finished jail's process tree used, from its cgroup (None where no cgroup measured it)."""

    cpu_seconds: float | None
    peak_memory_bytes: int | None


_names = itertools.count()


class Confinement:
    """One jail's limits in force (see the module docstring). Use once: create, Popen, wait, close."""

    def __init__(self, limits: Limits, writable: tuple[Path, ...] = ()):
        self.limits, self.writable = limits, writable
        self.ids = jail_ids()
        found, _ = cgroups.backend()
        self.mechanism = mechanism()[0]
        self.group = None
        if found is not None:
            self.group = cgroups.Group(found, f"autoresearch-{os.getpid()}-{next(_names)}", limits.memory,
                                       limits.processes, limits.cpus)
        for path in writable:
            give_to_jail(path)

    def popen_options(self) -> dict:
        return {"preexec_fn": self._enter}

    def _enter(self) -> None:
        """In the child after fork, before exec: only system calls (no imports, no locks)."""
        if self.group is not None:
            self.group.join()
        try:
            with open("/proc/self/oom_score_adj", "w") as handle:
                handle.write(str(JAIL_OOM_SCORE))
        except OSError:
            pass
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limits.disk, self.limits.disk))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.group is None:
            resource.setrlimit(resource.RLIMIT_DATA, (self.limits.memory, self.limits.memory))
            if self.ids is not None:  # counted per host uid: only the jail's own uid may carry it (the jail
                # drops to it inside, jail.DROP_PRIVILEGES; bwrap itself runs as root, which it does not bind)
                resource.setrlimit(resource.RLIMIT_NPROC, (self.limits.processes, self.limits.processes))

    def exceeded(self, error_text: str = "", folder: Path | None = None) -> str | None:
        """The limit the finished jail hit, named (`memory limit 6.0 GB`), or None. Under rlimits the
        error's own text says it (MemoryError, EAGAIN on fork, EFBIG). `folder`: its run folder, measured."""
        limits = self.limits
        if folder is not None and folder_bytes(folder) > limits.disk:
            return f"disk limit {size(limits.disk)}"
        if self.group is not None:
            hits = self.group.hits()
            if hits.oom_kills:
                return f"memory limit {size(limits.memory)}"
            if hits.fork_refusals:
                return f"process limit {limits.processes}"
        return name_from_error(error_text, limits)

    def watch(self, folder: Path) -> str | None:
        """While the jail runs: the limit to stop it for now (its folder past the disk limit, forks refused)."""
        if folder_bytes(folder) > self.limits.disk:
            return f"disk limit {size(self.limits.disk)}"
        if self.group is not None and self.group.hits().fork_refusals:
            return f"process limit {self.limits.processes}"
        return None

    def kill(self) -> None:
        """Kill whatever of the jail is still running (its group keeps its counters until `close`)."""
        if self.group is not None:
            self.group.kill()

    def usage(self) -> Usage:
        if self.group is None:
            return Usage(None, None)
        return Usage(self.group.cpu_seconds(), self.group.peak_memory())

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None


def name_from_error(text: str, limits: Limits) -> str | None:
    """The limit an error message shows was hit: /tmp full, a file too large, memory or forks refused."""
    if "No space left on device" in text:
        return f"tmp limit {size(limits.tmp)}"
    if "File too large" in text:
        return f"disk limit {size(limits.disk)}"
    if "MemoryError" in text or "Cannot allocate memory" in text:
        return f"memory limit {size(limits.memory)}"
    if "Resource temporarily unavailable" in text and ("fork" in text or "thread" in text or "spawn" in text):
        return f"process limit {limits.processes}"
    return None


def folder_bytes(folder: Path, entries_cap: int = 100_000) -> int:
    """Disk use of a run folder (allocated blocks; links not followed); past `entries_cap` entries, a
    number over any limit (a million empty files fill a disk's inodes)."""
    total, seen, stack = 0, 0, [str(folder)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > entries_cap:
                        return 1 << 62
                    stat = entry.stat(follow_symlinks=False)
                    total += stat.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def remove_large_files(folder: Path, keep_under: int = 1 * MB) -> list[str]:
    """After a limit hit: delete the run folder's files of `keep_under` bytes or more (never following a link);
    returns their names."""
    removed = []
    for root, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.lstat(path).st_blocks * 512 >= keep_under:
                    os.unlink(path)
                    removed.append(os.path.relpath(path, folder))
            except OSError:
                continue
    return removed
