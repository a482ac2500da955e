"""The edit format: the sandbox notebook as readable code for a prompt, and a reply turned back into a notebook.

Notebook -> text (`notebook_to_text`): percent format, one `# %%` marker per cell; markdown and raw cells
are `# %% [markdown]` / `# %% [raw]` with their lines commented out; harness-owned cells carry their tags and
a "do not edit" note on the marker, so the model can see the boundary (the scope guard enforces it).

Reply -> notebook (`apply_reply`): a reply holds a line `Description: <one line>` (case-insensitive) and
either
- one or more SEARCH/REPLACE blocks, each matched against exactly one place in one cell (tolerant of
  trailing whitespace and of blank lines around the SEARCH part); a REPLACE part may hold `# %%` markers to
  split a cell (that is how a new cell is added), and a cell left empty is removed; or
- ONE fenced python block holding the whole notebook in percent format; its cells are aligned with the old
  ones by content, so kept and edited cells keep their metadata (tags, ids) and new cells get fresh ones.

Edits are applied faithfully, harness cells included: deciding what a candidate may change is the scope
guard's job, which needs to see the attempt to record it. Every parse or match problem raises
`ProposalError` with a message written for the model to act on when it is re-asked.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import re
from dataclasses import dataclass

import nbformat

from autoresearch_kernel.errors import ProposalError

# Tags of the cells the harness owns (papermill adds "injected-parameters" to executed copies).
PROTECTED_TAGS = ("parameters", "injected-parameters", "harness")
# Cell metadata that changes on every execution and would make git diffs noisy.
VOLATILE_CELL_METADATA = ("execution", "papermill", "ExecuteTime", "scrolled", "collapsed")
VOLATILE_NOTEBOOK_METADATA = ("papermill", "widgets")

MARKER = re.compile(r"^# ?%%(?P<rest>.*)$")
DESCRIPTION = re.compile(r"^[ \t>*_#`-]*description[*_` \t]*:[*_` \t]*(?P<text>.*?)[*_` \t]*$",
                         re.IGNORECASE | re.MULTILINE)
SEARCH_LINE = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
DIVIDER_LINE = re.compile(r"^\s*={5,9}\s*$")
REPLACE_LINE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
FENCE = re.compile(r"^```[ \t]*(?P<lang>[\w+-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)

REPLY_FORMAT_HINT = (
    "Reply with a line `Description: <one line>` and then either SEARCH/REPLACE blocks\n"
    "<<<<<<< SEARCH\n<exact existing lines>\n=======\n<new lines>\n>>>>>>> REPLACE\n"
    "or one ```python block holding the whole notebook in percent format (`# %%` cell markers)."
)


@dataclass(frozen=True)
class EditBlock:
    """One SEARCH/REPLACE block of a reply, numbered from 1 in reply order."""

    number: int
    search: str
    replace: str

    def label(self) -> str:
        first = next((line.strip() for line in self.search.splitlines() if line.strip()), "")
        return f"block {self.number} (SEARCH starting `{first[:80]}`)"


@dataclass(frozen=True)
class ParsedReply:
    """A reply split into its parts: the description and either edit blocks or a whole-notebook script."""

    description: str
    blocks: tuple[EditBlock, ...] = ()
    script: str | None = None


# ---------------------------------------------------------------------------------------------------------
# notebook -> text

def is_protected(cell) -> bool:
    """True for the cells the harness owns (parameters, set-up, report): the agent must not edit them."""
    tags = cell.get("metadata", {}).get("tags", [])
    return any(tag in PROTECTED_TAGS for tag in tags)


def _marker(cell) -> str:
    parts = ["# %%"]
    if cell.cell_type in ("markdown", "raw"):
        parts.append(f"[{cell.cell_type}]")
    tags = cell.get("metadata", {}).get("tags", [])
    if tags:
        parts.append("tags=[" + ", ".join(f'"{tag}"' for tag in tags) + "]")
    if is_protected(cell):
        parts.append("(harness-owned: do not edit)")
    return " ".join(parts)


def _body_to_text(cell_type: str, source: str) -> str:
    """A cell's source as it appears under its marker: markdown and raw lines are commented out."""
    if cell_type == "code":
        return source
    return "\n".join("# " + line if line else "#" for line in source.splitlines())


def _text_to_body(cell_type: str, text: str) -> str:
    """The inverse of `_body_to_text`; uncommented lines of a markdown cell are kept as they are."""
    lines = text.strip("\n").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if cell_type != "code":
        lines = [line[2:] if line.startswith("# ") else line[1:] if line.startswith("#") else line
                 for line in lines]
    return "\n".join(line.rstrip() for line in lines)


def notebook_to_text(notebook: nbformat.NotebookNode) -> str:
    """The notebook in percent format, cells separated by a blank line, for a prompt."""
    chunks = [_marker(cell) + "\n" + _body_to_text(cell.cell_type, cell.source) for cell in notebook.cells]
    return "\n\n".join(chunk.rstrip("\n") for chunk in chunks) + "\n"


def text_to_cells(text: str) -> list[tuple[str, str]]:
    """Percent-format text as (cell_type, source) pairs. Text before the first marker is a code cell."""
    cells: list[tuple[str, list[str]]] = []
    current_type, current_lines = "code", []
    started = False
    for line in text.splitlines():
        match = MARKER.match(line)
        if match:
            if started or any(part.strip() for part in current_lines):
                cells.append((current_type, current_lines))
            rest = match.group("rest")
            current_type = "markdown" if re.search(r"\[(markdown|md)\]", rest) else (
                "raw" if "[raw]" in rest else "code")
            current_lines, started = [], True
        else:
            current_lines.append(line)
    if started or any(part.strip() for part in current_lines):
        cells.append((current_type, current_lines))
    return [(cell_type, _text_to_body(cell_type, "\n".join(lines))) for cell_type, lines in cells]


# ---------------------------------------------------------------------------------------------------------
# parsing a reply

def parse_description(reply: str) -> str:
    match = DESCRIPTION.search(reply)
    if not match or not match.group("text").strip():
        raise ProposalError("the reply has no `Description: <one line>` line; start the reply with one "
                            "line saying what the experiment changes")
    return match.group("text").strip()


def parse_blocks(reply: str) -> tuple[EditBlock, ...]:
    """The SEARCH/REPLACE blocks of a reply, in order (fences around them are ignored)."""
    blocks: list[EditBlock] = []
    state, search, replace = "text", [], []
    for line in reply.splitlines():
        if state == "text" and SEARCH_LINE.match(line):
            state, search, replace = "search", [], []
        elif state == "search" and DIVIDER_LINE.match(line):
            state = "replace"
        elif state == "search" and (SEARCH_LINE.match(line) or REPLACE_LINE.match(line)):
            raise ProposalError(f"block {len(blocks) + 1} has no `=======` line between its SEARCH and "
                                "REPLACE parts")
        elif state == "replace" and REPLACE_LINE.match(line):
            blocks.append(EditBlock(len(blocks) + 1, "\n".join(search), "\n".join(replace)))
            state = "text"
        elif state == "search":
            search.append(line)
        elif state == "replace":
            replace.append(line)
    if state != "text":
        raise ProposalError(f"block {len(blocks) + 1} is not closed: end every block with a "
                            "`>>>>>>> REPLACE` line")
    return tuple(blocks)


def parse_reply(reply: str) -> ParsedReply:
    """Split a reply into description and edits; raises ProposalError when either part is missing."""
    description = parse_description(reply)
    blocks = parse_blocks(reply)
    if blocks:
        return ParsedReply(description, blocks=blocks)
    scripts = [m.group("body") for m in FENCE.finditer(reply)
               if m.group("lang").lower() in ("", "python", "py", "python3")
               and any(MARKER.match(line) for line in m.group("body").splitlines())]
    if len(scripts) > 1:
        raise ProposalError(f"the reply holds {len(scripts)} fenced notebooks; send exactly one ```python "
                            "block with the whole notebook, or use SEARCH/REPLACE blocks")
    if not scripts:
        raise ProposalError("the reply holds no edit: no SEARCH/REPLACE block and no ```python block with "
                            "`# %%` cell markers. " + REPLY_FORMAT_HINT)
    return ParsedReply(description, script=scripts[0])


# ---------------------------------------------------------------------------------------------------------
# applying a reply

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


def _new_cell(cell_type: str, source: str, template=None):
    """A cell of `cell_type`; with a template, it keeps the template's metadata and id."""
    maker = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
             "raw": nbformat.v4.new_raw_cell}[cell_type]
    cell = maker(source)
    cell.pop("id", None)        # nbformat's id is random; `_finish` derives a stable one
    if template is not None:
        cell.metadata = copy.deepcopy(template.metadata)
        if "id" in template:
            cell.id = template.id
    return cell


def _finish(original, cells) -> nbformat.NotebookNode:
    """The new notebook: the original's top-level metadata, the new cells, stable ids, cleaned."""
    notebook = copy.deepcopy(original)
    notebook.cells = cells
    supports_ids = (notebook.nbformat, notebook.nbformat_minor) >= (4, 5)
    used: set[str] = set()
    for position, cell in enumerate(notebook.cells):
        if not supports_ids:
            cell.pop("id", None)
            continue
        cell_id = cell.get("id")
        if not cell_id or cell_id in used:
            # Derived from content and position instead of random, so the same edit gives the same file.
            digest = hashlib.sha1(f"{position}\n{cell.cell_type}\n{cell.source}".encode()).hexdigest()
            cell_id = next(digest[i:i + 8] for i in range(0, 32) if digest[i:i + 8] not in used)
        cell.id = cell_id
        used.add(cell_id)
    return clean_notebook(notebook)


def _stripped_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _find(needle: list[str], haystack: list[str]) -> list[int]:
    n = len(needle)
    return [i for i in range(len(haystack) - n + 1) if haystack[i:i + n] == needle]


def _closest_hint(block: EditBlock, cells_text: list[str]) -> str:
    """The existing line nearest to the block's first SEARCH line, to help the model quote it exactly."""
    first = next((line.rstrip() for line in block.search.splitlines() if line.strip()), "")
    all_lines = [line.rstrip() for text in cells_text for line in text.splitlines()]
    # A common slip is quoting part of a line (the code without its comment): SEARCH lines are whole lines.
    close = [line for line in all_lines if first.strip() and first.strip() in line]
    if len(close) == 1:
        return f"; SEARCH lines must be whole lines, and `{close[0].strip()}` is the existing line"
    # Whitespace collapsed first: column-aligned comments would otherwise dominate the similarity.
    collapse = " ".join
    scored = [(difflib.SequenceMatcher(a=collapse(first.split()), b=collapse(line.split())).ratio(), line)
              for line in all_lines if line.strip()]
    score, line = max(scored, default=(0.0, ""))
    return f"; the closest existing line is `{line.strip()}`" if score >= 0.5 else ""


def _apply_block(block: EditBlock, texts: list[str]) -> str | None:
    """Apply one block to the cells' rendered texts in place; returns an error message, or None."""
    needle = _stripped_lines(block.search)
    if not needle:
        return (f"{block.label()} has an empty SEARCH part: quote the existing lines to replace "
                "(to add a cell, replace the last lines of a cell with those lines, a `# %%` line and the new "
                "cell)")
    hits = [(index, start) for index, text in enumerate(texts)
            for start in _find(needle, [line.rstrip() for line in text.splitlines()])]
    if not hits and any(MARKER.match(line) for line in needle):
        return (f"{block.label()} matches nothing: a SEARCH part quotes lines inside one cell, never a "
                "`# %%` marker line")
    if not hits:
        return (f"{block.label()} matches nothing in the notebook: the SEARCH lines must be copied exactly "
                f"from one cell{_closest_hint(block, texts)}")
    if len(hits) > 1:
        where = ", ".join(f"cell {index}" for index, _ in hits)
        return (f"{block.label()} matches {len(hits)} places ({where}): add neighbouring lines to the "
                "SEARCH part so that it matches exactly one place")
    index, start = hits[0]
    lines = texts[index].splitlines()
    replacement = _stripped_lines(block.replace) if block.replace.strip() else []
    texts[index] = "\n".join(lines[:start] + replacement + lines[start + len(needle):])
    return None


def apply_blocks(notebook: nbformat.NotebookNode, blocks: tuple[EditBlock, ...]) -> nbformat.NotebookNode:
    """The notebook with every block applied in order; all failing blocks are reported together."""
    texts = [_body_to_text(cell.cell_type, cell.source) for cell in notebook.cells]
    problems = [problem for block in blocks if (problem := _apply_block(block, texts))]
    if problems:
        raise ProposalError("; ".join(problems) + ". Nothing was applied: send the corrected reply.")
    cells = []
    for original, text in zip(notebook.cells, texts):
        if text == _body_to_text(original.cell_type, original.source):
            cells.append(copy.deepcopy(original))
            continue
        # A REPLACE part with `# %%` markers splits its cell: the lines before the first marker stay the
        # cell itself (its type, tags and id), each marker starts a new cell.
        lines = text.splitlines()
        split = next((i for i, line in enumerate(lines) if MARKER.match(line)), len(lines))
        pieces = [(original.cell_type, _text_to_body(original.cell_type, "\n".join(lines[:split])))]
        pieces += text_to_cells("\n".join(lines[split:]))
        for position, (cell_type, source) in enumerate(pieces):
            if source.strip() or (position == 0 and not original.source.strip()):
                cells.append(_new_cell(cell_type, source, original if position == 0 else None))
    return _finish(notebook, cells)


def apply_script(notebook: nbformat.NotebookNode, script: str) -> nbformat.NotebookNode:
    """The notebook rebuilt from a whole-notebook percent-format script, old cells' metadata aligned back."""
    new = text_to_cells(script)
    if not new:
        raise ProposalError("the ```python block is empty: send the whole notebook with `# %%` cell markers")
    old = [(cell.cell_type, _text_to_body(cell.cell_type, _body_to_text(cell.cell_type, cell.source)))
           for cell in notebook.cells]
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    origin: list[int | None] = [None] * len(new)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag in ("equal", "replace"):
            # Replaced cells are paired by position: an edited cell keeps its tags and id.
            for offset in range(min(a1 - a0, b1 - b0)):
                origin[b0 + offset] = a0 + offset
    cells = []
    for (cell_type, source), index in zip(new, origin):
        if index is not None and old[index] == (cell_type, source):
            cells.append(copy.deepcopy(notebook.cells[index]))   # unchanged: byte for byte
        else:
            cells.append(_new_cell(cell_type, source, None if index is None else notebook.cells[index]))
    return _finish(notebook, cells)


def apply_reply(notebook: nbformat.NotebookNode, reply: str) -> tuple[str, nbformat.NotebookNode]:
    """(description, edited notebook) from a model's reply; raises ProposalError with an actionable message."""
    parsed = parse_reply(reply)
    if parsed.blocks:
        edited = apply_blocks(notebook, parsed.blocks)
    else:
        edited = apply_script(notebook, parsed.script)
    if notebook_to_text(edited) == notebook_to_text(notebook):
        raise ProposalError("the edit leaves the notebook unchanged: change at least one line of the agent's "
                            "cells")
    return parsed.description, edited
