"""The sandbox notebook's low-level facts: where it lives, which cells the harness owns, its committed form, its text.

Every layer needs these and none should import another layer for them: the git workspace (commits and
diffs), the integrity checks (the contract cells), the proposers (the edit format). So they live here, below
all of them, importing nothing of the package but its errors.

- `SANDBOX`: the one file the agent edits, relative to the repository root.
- `CONTRACT_TAGS` / `is_contract`: the cells the harness owns (the agent must not edit them).
- `canonical` / `clean_notebook`: the notebook as committed, outputs and volatile metadata cleared, so that
  a git diff shows only changed source lines.
- `notebook_to_text` / `text_to_cells`: the notebook as jupytext percent text (`# %%` per cell), the form a
  prompt shows and a diff compares; harness cells carry `HARNESS_NOTE` on their marker.
"""
from __future__ import annotations

import copy
import re

import jupytext
import nbformat

from autoresearch_kernel.errors import ProposalError

SANDBOX = "notebooks/train_template.ipynb"  # the one file the agent edits
# Tags of the cells the harness owns (papermill adds "injected-parameters" to executed copies).
CONTRACT_TAGS = frozenset({"parameters", "injected-parameters", "harness"})
# Cell metadata that changes on every execution and would make git diffs noisy.
VOLATILE_CELL_METADATA = ("execution", "papermill", "ExecuteTime", "scrolled", "collapsed")
VOLATILE_NOTEBOOK_METADATA = ("papermill", "widgets")

# jupytext's percent format with no YAML header: a prompt or a diff shows cells, not notebook metadata.
PERCENT = {"extension": ".py", "format_name": "percent", "notebook_metadata_filter": "-all"}
HARNESS_NOTE = "(harness-owned: do not edit)"
MARKER = re.compile(r"^# ?%%(?P<rest>.*)$")


def is_contract(cell) -> bool:
    """True for the cells the harness owns (parameters, set-up, report): the agent must not edit them."""
    return bool(CONTRACT_TAGS & set(cell.get("metadata", {}).get("tags", [])))


def clean_notebook(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Outputs cleared and volatile metadata dropped (in place, returned), so git diffs show source only."""
    for key in VOLATILE_NOTEBOOK_METADATA:
        notebook.metadata.pop(key, None)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
    return notebook


def canonical(notebook: nbformat.NotebookNode) -> str:
    """The notebook as committed: outputs and volatile metadata cleared, so a git diff shows only sources."""
    text = nbformat.writes(clean_notebook(copy.deepcopy(notebook)))  # a copy: the caller's stays as it was
    return text if text.endswith("\n") else text + "\n"


def notebook_to_text(notebook: nbformat.NotebookNode) -> str:
    """The notebook in percent format, cells separated by a blank line, for a prompt or a diff."""
    shown = nbformat.v4.new_notebook()
    for cell in notebook.cells:
        # Only what the model should see: the tags, and the harness note as the marker's title.
        metadata = {"tags": list(cell.metadata["tags"])} if cell.get("metadata", {}).get("tags") else {}
        if is_contract(cell):
            metadata["title"] = HARNESS_NOTE
        maker = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
                 "raw": nbformat.v4.new_raw_cell}[cell.cell_type]
        shown.cells.append(maker(cell.source, metadata=metadata))
    return jupytext.writes(shown, fmt=PERCENT)


def text_to_cells(text: str) -> list[tuple[str, str]]:
    """Percent-format text as (cell_type, source) pairs. Text before the first marker is a code cell."""
    # The note is ours, not the model's: without it a marker's tags read as tags again.
    lines = [line.replace(" " + HARNESS_NOTE, "").replace(HARNESS_NOTE, "") if MARKER.match(line) else line
             for line in text.splitlines()]
    try:
        notebook = jupytext.reads("\n".join(lines) + "\n", fmt=PERCENT)
    except Exception as error:      # jupytext raises several types for text it cannot read
        raise ProposalError(f"the notebook text cannot be read as percent format ({error}): start every cell "
                            "with a `# %%` line") from None
    return [(cell.cell_type, cell.source) for cell in notebook.cells]
