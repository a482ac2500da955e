"""Control groups for one jailed process tree: cgroup v2 (a delegated subtree) or cgroup v1 (per controller).

A `Group` is made before the jail starts, its limits written, and the jail's first process joins it before it
executes bwrap (so every descendant is inside from its first instruction). After the jail ends, the group
says whether a limit was hit, how much CPU time and peak memory the tree used, kills what is left and is
removed. The backend is chosen once per process (`backend()`): v2 where this process's cgroup lets it create
a child with the memory and pids controllers, else v1 where the `memory` and `pids` hierarchies are writable,
else None (limits.py then falls back to rlimits and says so).

Pages of a tmpfs are charged to the memory cgroup of the process that wrote them, so the jail's /tmp counts
in its memory limit here (not under rlimits).
"""
from __future__ import annotations

import functools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")  # memory and pids needed; cpu and cpuacct when there
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class Backend:
    """Where groups are made: `version` 1 or 2; `parents` the folder each controller's groups go under."""

    version: int
    parents: dict[str, Path]  # controller -> parent folder (v2: every controller -> the same folder)
    reason: str = ""  # why the other version was not used

    @property
    def has_cpu(self) -> bool:
        return "cpu" in self.parents

    def describe(self) -> str:
        where = sorted({str(p) for p in self.parents.values()})
        return f"cgroup v{self.version} ({', '.join(where)})"


def _own_paths() -> dict[str, str]:
    """controller -> this process's cgroup path in it ("" for the v2 hierarchy)."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _probe(folder: Path) -> bool:
    """Can this process make (and remove) a child cgroup in `folder`?"""
    probe = folder / f"autoresearch-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


def _v2() -> tuple[Backend | None, str]:
    paths = _own_paths()
    for mount in (ROOT, ROOT / "unified"):
        if not (mount / "cgroup.controllers").exists() or "" not in paths:
            continue
        own = mount / paths[""].lstrip("/")
        enabled = (own / "cgroup.subtree_control").read_text().split() if (own / "cgroup.subtree_control").exists() else []
        missing = [c for c in ("memory", "pids") if c not in enabled]
        if missing:
            try:  # delegation: this process may enable them for its children (only where it holds no processes)
                (own / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))
                enabled = (own / "cgroup.subtree_control").read_text().split()
            except OSError:
                pass
        if any(c not in enabled for c in ("memory", "pids")) or not _probe(own):
            return None, f"cgroup v2 at {mount} has no writable memory and pids controllers"
        controllers = {c: own for c in ("memory", "pids", "cpu") if c in enabled}
        return Backend(2, controllers), ""
    return None, "no cgroup v2 hierarchy"


def _v1() -> tuple[Backend | None, str]:
    paths, parents = _own_paths(), {}
    for name in V1_CONTROLLERS:
        mount = ROOT / name
        if name not in paths or not mount.is_dir():
            continue
        folder = mount / paths[name].lstrip("/")
        if _probe(folder):
            parents[name] = folder
    missing = [c for c in ("memory", "pids") if c not in parents]
    if missing:
        return None, f"cgroup v1 {' and '.join(missing)} not writable"
    return Backend(1, parents), ""


@functools.cache
def backend() -> tuple[Backend | None, str]:
    """(the backend, "") or (None, why neither version can be used)."""
    found, why2 = _v2()
    if found is not None:
        return found, ""
    found, why1 = _v1()
    if found is not None:
        return Backend(1, found.parents, why2), ""
    return None, f"{why2}; {why1}"


@dataclass(frozen=True)
class Hits:
    """What the group's counters say about limits hit."""

    oom_kills: int = 0
    fork_refusals: int = 0


class Group:
    """One jail's control group (one folder per v1 controller, or one v2 folder)."""

    def __init__(self, backend: Backend, name: str, memory_bytes: int, processes: int, cpus: float | None):
        self.backend = backend
        self.folders = {}
        for controller, parent in backend.parents.items():
            sweep(parent)
            folder = parent / name
            folder.mkdir(exist_ok=True)
            self.folders[controller] = folder
        if backend.version == 2:
            self._write("memory", "memory.max", memory_bytes)
            self._write("memory", "memory.swap.max", 0, optional=True)
            self._write("pids", "pids.max", processes)
            if cpus and "cpu" in self.folders:
                self._write("cpu", "cpu.max", f"{int(cpus * CFS_PERIOD_US)} {CFS_PERIOD_US}")
        else:
            self._write("memory", "memory.limit_in_bytes", memory_bytes)
            self._write("memory", "memory.memsw.limit_in_bytes", memory_bytes, optional=True)  # no swap beyond it
            self._write("pids", "pids.max", processes)
            if cpus and "cpu" in self.folders:
                self._write("cpu", "cpu.cfs_period_us", CFS_PERIOD_US)
                self._write("cpu", "cpu.cfs_quota_us", int(cpus * CFS_PERIOD_US))
        # opened now, written by the child before it drops its privileges (no path lookups after fork)
        self.procs = sorted({str(f / "cgroup.procs") for f in self.folders.values()})

    def _write(self, controller: str, name: str, value, optional: bool = False) -> None:
        try:
            (self.folders[controller] / name).write_text(str(value))
        except OSError:
            if not optional:
                raise

    def _read(self, controller: str, name: str) -> str:
        try:
            return (self.folders[controller] / name).read_text()
        except (OSError, KeyError):
            return ""

    def join(self) -> None:
        """Move the calling process into the group (in the child, before exec)."""
        pid = str(os.getpid()).encode()
        for path in self.procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    def hits(self) -> Hits:
        memory = _counters(self._read("memory", "memory.events" if self.backend.version == 2 else "memory.oom_control"))
        pids = _counters(self._read("pids", "pids.events"))
        return Hits(oom_kills=memory.get("oom_kill", 0), fork_refusals=pids.get("max", 0))

    def cpu_seconds(self) -> float | None:
        if self.backend.version == 2:
            usage = _counters(self._read("cpu", "cpu.stat") or self._read("memory", "cpu.stat")).get("usage_usec")
            return usage / 1e6 if usage is not None else None
        text = self._read("cpuacct", "cpuacct.usage").strip()
        return int(text) / 1e9 if text else None

    def peak_memory(self) -> int | None:
        text = self._read("memory", "memory.peak" if self.backend.version == 2 else "memory.max_usage_in_bytes").strip()
        return int(text) if text.isdigit() else None

    def close(self) -> None:
        """Kill whatever is left in the group, then remove it."""
        self.kill()
        for folder in self.folders.values():
            for _ in range(50):  # the last exits are reaped asynchronously
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL every process left in the group, until none is left (at most 5 s)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = self._pids()
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def _pids(self) -> list[int]:
        pids = set()
        for path in self.procs:
            try:
                pids.update(int(p) for p in Path(path).read_text().split())
            except OSError:
                pass
        return sorted(pids)


def sweep(parent: Path) -> None:
    """Remove the empty groups a killed loop left (named autoresearch-<its pid>-<n>, that pid gone)."""
    for folder in parent.glob("autoresearch-*-*"):
        pid = folder.name.split("-")[1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                folder.rmdir()  # refused while it holds processes: then it stays
            except OSError:
                pass


def _counters(text: str) -> dict[str, int]:
    """`name value` lines (memory.events, pids.events, memory.oom_control, cpu.stat) as a dict."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            found[parts[0]] = int(parts[1])
    return found
