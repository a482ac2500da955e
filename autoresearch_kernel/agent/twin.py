"""The sandbox's plain-Python twin: `notebooks/train_template.py` next to the notebook, for coding agents.

A coding agent (Claude Code, Codex, aider) edits Python files, not notebook JSON. The twin is the sandbox
notebook in jupytext's percent format, written by the same converter the proposers' prompts use
(`proposers.edits.notebook_to_text`): one `# %%` line per cell, the harness's cells marked
"(harness-owned: do not edit)". Read back, it goes through `proposers.edits.rebuild`, which aligns the cells
to the notebook they came from by content, so the harness and parameters cells keep their ids, tags and
sources byte for byte and the scope guard sees exactly what the agent changed.

The notebook stays the one committed record (its metadata untouched, no jupytext pairing header): the twin
lives only in a run's worktree, untracked and hidden from git there (see `agent_init`), and is written again
from the committed notebook after every step. An agent may edit either file; `read_edit` says which one
changed and refuses when both did.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

from autoresearch_kernel.errors import StepRefused
from autoresearch_kernel.proposers.edits import notebook_to_text, rebuild
from autoresearch_kernel.workspace.worktree import SANDBOX

TWIN = str(Path(SANDBOX).with_suffix(".py"))  # notebooks/train_template.py, relative to the worktree


def twin_text(notebook: nbformat.NotebookNode) -> str:
    """The notebook as the twin holds it: percent-format Python, harness cells marked."""
    return notebook_to_text(notebook)


def write_twin(worktree: Path, notebook: nbformat.NotebookNode) -> Path:
    """Write the twin of `notebook` into the worktree (replacing whatever the agent left there)."""
    path = Path(worktree) / TWIN
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(twin_text(notebook), encoding="utf-8")
    return path


def read_edit(worktree: Path, base: nbformat.NotebookNode) -> tuple[str, nbformat.NotebookNode] | None:
    """The agent's edit of `base` (the last kept notebook) as (the file it edited, the edited notebook).

    The twin counts as edited when it differs from `base`'s twin, the notebook when it differs from
    `base` (what git keeps in the worktree: the loop never checks a candidate out before keeping it), both in
    what the twin shows (cell types, sources, tags): saving the notebook in Jupyter changes metadata, not the
    experiment. None when neither was edited. Raises StepRefused when both were, differently, or when the
    notebook cannot be read.
    """
    worktree = Path(worktree)
    shown = twin_text(base)
    twin_path = worktree / TWIN
    twin = twin_path.read_text(encoding="utf-8") if twin_path.exists() else shown
    twin_changed = twin.strip() != shown.strip()
    try:
        notebook = nbformat.read(worktree / SANDBOX, as_version=4)
    except FileNotFoundError:
        notebook = base  # deleted: the twin (or nothing) is the edit
    except Exception as error:  # half-written JSON from an editor: say so rather than guess
        raise StepRefused(f"{SANDBOX} is not a readable notebook ({type(error).__name__}); restore it with "
                          f"`git checkout -- {SANDBOX}` and edit {TWIN} instead") from None
    notebook_changed = twin_text(notebook).strip() != twin_text(base).strip()
    if twin_changed and notebook_changed:
        if twin.strip() == twin_text(notebook).strip():  # the same edit in both (e.g. a paired editor)
            return TWIN, rebuild(base, twin)
        raise StepRefused(f"both {TWIN} and {SANDBOX} were edited, differently: keep your edit in one of them "
                          f"(edit {TWIN}; `git checkout -- {SANDBOX}` drops the notebook's changes)")
    if twin_changed:
        return TWIN, rebuild(base, twin)
    if notebook_changed:
        return SANDBOX, notebook
    return None
