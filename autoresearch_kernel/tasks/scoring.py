"""The task scorer's child process: the task's checks and `score(artifact, data)`, one JSON line as the answer.

Started by tasks/filescore.py in a jail of its own; it imports only this, tasks/functions.py and the task's
own module or file, so that it starts in a fraction of a second.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from autoresearch_kernel.tasks.functions import load_function


@dataclass(frozen=True)
class TaskData:
    """What a task's scorer and checks get besides the artifact: the prepared folders (may be empty)."""

    public: Path  # what the experiment could read too
    private: Path  # what only the scorer reads (held-out labels, ...)


def _failure(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0][:400]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoresearch task scorer")
    for name in ("--spec", "--artifact", "--public", "--private"):
        parser.add_argument(name, required=True)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    spec = json.loads(args.spec)
    data = TaskData(Path(args.public), Path(args.private))
    artifact = Path(args.artifact)
    try:
        for check in spec["checks"]:
            reason = load_function(check, spec["folder"])(artifact, data)
            if reason:
                raise ValueError(f"check {check.rpartition(':')[2]} failed: {reason}")
        value = float(load_function(spec["scorer"], spec["folder"])(artifact, data))
        if not math.isfinite(value):
            raise ValueError(f"the scorer returned {value}, not a finite number")
        answer = {"value": value, "failure": None}
    except Exception as error:  # the reason goes to the experiment's row
        answer = {"value": None, "failure": _failure(error)}
    print(json.dumps(answer), flush=True)
    return 0
