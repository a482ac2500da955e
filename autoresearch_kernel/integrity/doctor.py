"""`autoresearch doctor`: what confines an experiment on this machine, in a few lines.

The jail (bubblewrap, or why it cannot run), the host uid and gid the jails run as, the resource limits of
the profile and the mechanism that enforces them (a cgroup, or the rlimits fall-back and why), and the
readable paths a jail binds that its uid cannot read.
"""
from __future__ import annotations

import os
from pathlib import Path

from autoresearch_kernel.integrity import jail, limits


def report(profile: str) -> str:
    reason = jail.unavailable_reason()
    lines = [f"jail: {'bubblewrap ' + (jail.shutil.which(jail.BWRAP) or '') if reason is None else reason}"]
    lines += limits.describe(limits.for_profile(profile, cpus=os.cpu_count()))
    unreadable = [str(p) for p in jail._runtime_paths() if not other_readable(p)]
    if limits.jail_ids() and unreadable:
        lines.append("not readable by the jail's uid (chmod o+rX): " + ", ".join(unreadable))
    return "\n".join(lines)


def other_readable(path: Path) -> bool:
    """Whether a uid other than the owner may read `path` (and enter it, for a folder)."""
    mode = path.stat().st_mode
    return bool(mode & 0o004) and (not path.is_dir() or bool(mode & 0o001))
