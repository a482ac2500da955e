"""What an experiment's process tree really used, measured where the experiment cannot lie: the kernel's
accounting of the processes, read from outside the jail.

The runner polls its child (the jail's bwrap) anyway; at each poll `TreeMeter.sample` adds up, over that
process and every live descendant (papermill, the kernel, anything they started), user + system time and the
time of the children each has reaped (/proc's cutime and cstime). A process that ended and was reaped counts
in its reaper's children's time; one that double-forks to leave its parent is re-parented to the jail's PID 1
(bubblewrap's init, which reaps it), still in the tree. The sum only grows, so the largest sample is the
measurement: it misses at most the last poll interval of a process that ended unreaped. It is per process
tree, so two lanes' runs never mix.

Why not `os.wait4` on bwrap alone: with a PID namespace, bwrap's outer process is never charged its init's
time (measured: 0.002 s for a 1 s busy loop in the jail), and with `--as-pid-1` a double-forked daemon
escapes the count. A cgroup's cpu.stat (the jail's resource limits) would be exact; it can replace or
complement `TreeMeter` here without the runner or the budget's decision (budget.py) changing.
"""
from __future__ import annotations

import psutil


class TreeMeter:
    """CPU seconds of one process and its descendants, sampled; `cpu_seconds` is the largest sum seen."""

    def __init__(self, pid: int):
        self.pid = pid
        self.cpu_seconds = 0.0

    def sample(self) -> float:
        """Add up the tree's CPU time now (a process that is gone already counts in its reaper)."""
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return self.cpu_seconds
        total = 0.0
        for process in tree:
            try:
                times = process.cpu_times()
            except psutil.Error:  # ended between the listing and the reading: its reaper has it next time
                continue
            total += times.user + times.system + times.children_user + times.children_system
        self.cpu_seconds = max(self.cpu_seconds, total)
        return self.cpu_seconds
