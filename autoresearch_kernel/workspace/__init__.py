"""The workspace: the repository, its run folders and the sandbox notebook.

    worktree.py   git through GitPython: the run branch in its worktree, commits, resets, kept diffs
    runfolder.py  where a run's files live (runs/<tag>/...), spelled once
    notebook.py   the sandbox notebook: canonical form, contract cells, the text a proposer sees
    merge.py      a notebook-aware three-way merge (a candidate re-applied onto a newer best)
    constants.py  the named constants of a notebook's code: their values, the active profile branch, effects

The run folder lives here, not in the journal, because the worktree lives in it: the journal reads notebooks
from the workspace, and nothing here reads the journal.
"""
from autoresearch_kernel.workspace.notebook import SANDBOX
from autoresearch_kernel.workspace.worktree import (
    PROGRAM,
    Workspace,
    check_tag,
    diff_of,
    list_tags,
    read_program,
    short,
    tag_exists,
)

__all__ = ["PROGRAM", "SANDBOX", "Workspace", "check_tag", "diff_of", "list_tags", "read_program", "short",
           "tag_exists"]
