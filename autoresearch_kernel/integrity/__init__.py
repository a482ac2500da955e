"""Integrity: candidate code cannot fake the metric, read a secret or touch the loop.

    jail.py          the boundary: bubblewrap namespaces around papermill and its kernel (and the scorer)
    environment.py   the allow-listed environment of every process that runs candidate code
    scorer.py        the only source of the metric: the exported model measured outside the experiment
    static.py        a fast pre-filter with helpful messages (not the boundary)
    limits.py        the jail's resource limits (cgroups v2 or v1, else rlimits); cgroups.py the mechanism
    untrusted.py     reading what an experiment wrote: no links, capped sizes, redacted strings
    blind.py         blind scoring: shuffled rows, spliced copies; budget.py the budget verdict

The loop's use of these (`loop/guard.py`) lives with the loop: it needs the task and the run's notebooks.
"""
