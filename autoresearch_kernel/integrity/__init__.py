"""Integrity: candidate code cannot fake the metric, read a secret or touch the loop.

    jail.py          the boundary: bubblewrap namespaces around papermill and its kernel (and the scorer)
    environment.py   the allow-listed environment of every process that runs candidate code
    scorer.py        the only source of the metric: the exported model measured outside the experiment
    static.py        a fast pre-filter with helpful messages (not the boundary)
    guard.py         the loop's hooks: pre-filter, source and data verification, scoring

The loop needs only `Guard` (or the `Checks` base that checks nothing), `Candidate`, and `jail`.
"""
from autoresearch_kernel.integrity.guard import Candidate, Checks, Guard

__all__ = ["Candidate", "Checks", "Guard"]
