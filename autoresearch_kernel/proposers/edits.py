"""The edit format: the sandbox notebook as readable code for a prompt, and a reply turned back into a notebook.

Notebook <-> text goes through jupytext's percent format (`notebook_to_text`, `text_to_cells`, which live in the
low-level `notebook` module because the git layer diffs notebooks in the same form): one `# %%`
marker per cell, markdown cells as `# %% [markdown]` with their lines commented out, tags on the marker.
Harness-owned cells carry the title "(harness-owned: do not edit)" on their marker, so the model can see the
boundary (the scope guard enforces it). Percent text keeps no cell ids: a reply's cells are aligned back to
the base notebook by content, so kept and edited cells keep their ids and tags, and new cells get fresh ones.

Reply -> notebook (`apply_reply`) accepts replies as models actually write them. Reasoning (`<think>...</think>`)
is dropped first; the line `Description: <one line>` may stand anywhere outside the edits; the edit is
- one or more SEARCH/REPLACE blocks (fenced or not, aider's ORIGINAL/UPDATED spelling too), or
- unified-diff hunks (`@@ ... @@` with ` `/`-`/`+` lines), read as SEARCH/REPLACE blocks, or
- ONE fenced python block holding the whole notebook in percent format.
A SEARCH part must match exactly one place of the notebook text. It is matched exactly first (trailing blanks
and surrounding blank lines aside), then, as aider does, ignoring indentation (the REPLACE part is shifted by
the same amount), then also ignoring trailing comments (a comment the model left out is kept on its line).
A REPLACE part may hold `# %%` markers to split a cell (that is how a new cell is added); a cell left empty is
removed.

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
from autoresearch_kernel.proposers.matching import apply_block, stripped_lines
from autoresearch_kernel.workspace.notebook import MARKER, clean_notebook, is_contract, notebook_to_text, text_to_cells

# `Description: text`, decorated as models do (`**Description:**`, `- Description:`, `### Description:`); a label
# with no text (`## Description`) takes the next line.
DESCRIPTION = re.compile(r"^[ \t>*_#`-]*description[*_` \t]*(:[*_` \t]*(?P<text>.*?)[*_` \t]*)?$", re.IGNORECASE)
SEARCH_LINE = re.compile(r"^\s*<{5,9}\s*(SEARCH|ORIGINAL)\s*$")
DIVIDER_LINE = re.compile(r"^\s*={5,9}\s*$")
REPLACE_LINE = re.compile(r"^\s*>{5,9}\s*(REPLACE|UPDATED)\s*$")
FENCE = re.compile(r"^```[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
FENCE_LINE = re.compile(r"^\s*```")
HUNK_HEADER = re.compile(r"^@@.*@@")
# Reasoning that some models (and servers) leave in the content; a closing tag without an opening one is
# what servers leave when they strip the opening tag.
REASONING = re.compile(r"<(think|thinking|reasoning)>.*?(</\1>|\Z)", re.IGNORECASE | re.DOTALL)
REASONING_END = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)

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
# notebook <-> text

is_protected = is_contract  # the cells the harness owns: the agent must not edit them


# ---------------------------------------------------------------------------------------------------------
# parsing a reply

def strip_reasoning(reply: str) -> str:
    """The reply without reasoning blocks, with plain newlines (CRLF replies are common from some servers)."""
    reply = reply.replace("\r\n", "\n").replace("\r", "\n")
    reply = REASONING.sub("", reply)
    ends = list(REASONING_END.finditer(reply))
    return reply[ends[-1].end():] if ends else reply


def _block_lines(lines: list[str]) -> set[int]:
    """Indices of the lines inside SEARCH/REPLACE blocks, markers included."""
    inside, in_block = set(), False
    for index, line in enumerate(lines):
        if SEARCH_LINE.match(line):
            in_block = True
        if in_block:
            inside.add(index)
        if REPLACE_LINE.match(line):
            in_block = False
    return inside


def _fenced_lines(lines: list[str]) -> set[int]:
    inside, in_fence = set(), False
    for index, line in enumerate(lines):
        if FENCE_LINE.match(line):
            in_fence = not in_fence
        elif in_fence:
            inside.add(index)
    return inside


def parse_description(reply: str) -> str:
    """The text of the `Description:` line, wherever it stands; prose first, then inside fences.

    Lines of edit blocks are never read (a quoted comment could look like a description); a bare
    label takes the next non-empty line (some models put the text under a `## Description` heading).
    """
    lines = reply.splitlines()
    blocks = _block_lines(lines)
    fenced = _fenced_lines(lines)
    for allowed in (lambda i: i not in blocks and i not in fenced, lambda i: i not in blocks):
        candidates = [i for i in range(len(lines)) if allowed(i)]
        for position, index in enumerate(candidates):
            match = DESCRIPTION.match(lines[index])
            if not match:
                continue
            text = (match.group("text") or "").strip()
            if not text:
                following = [lines[i].strip(" \t*_`>") for i in candidates[position + 1:position + 3]]
                text = next((line for line in following if line), "")
            if text and not SEARCH_LINE.match(text) and not FENCE_LINE.match(text):
                return text
    raise ProposalError("the reply has no `Description: <one line>` line; start the reply with one "
                        "line saying what the experiment changes")


def parse_blocks(reply: str) -> tuple[EditBlock, ...]:
    """The SEARCH/REPLACE blocks of a reply, in order (fences and file names around them are ignored)."""
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


def parse_hunks(reply: str) -> tuple[EditBlock, ...]:
    """Unified-diff hunks as SEARCH/REPLACE blocks: context and `-` lines are searched for, context and `+`
    lines replace them. Line numbers in `@@` headers are ignored (models rarely get them right)."""
    hunks: list[tuple[list[str], list[str]]] = []
    current = None
    for line in reply.splitlines():
        if HUNK_HEADER.match(line):
            current = ([], [])
            hunks.append(current)
        elif current is not None and (line[:1] in (" ", "-", "+") or line == "") \
                and not line.startswith(("--- ", "+++ ")):
            kind, text = line[:1], line[1:]
            if kind != "+":
                current[0].append(text)
            if kind != "-":
                current[1].append(text)
        else:
            current = None
    return tuple(EditBlock(number, "\n".join(search), "\n".join(replace))
                 for number, (search, replace) in enumerate(hunks, 1) if search != replace)


def parse_reply(reply: str) -> ParsedReply:
    """Split a reply into description and edits; raises ProposalError when either part is missing."""
    reply = strip_reasoning(reply)
    description = parse_description(reply)
    blocks = parse_blocks(reply) or parse_hunks(reply)
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


def _tidy(source: str) -> str:
    """A cell's source compared as text: trailing blanks and surrounding blank lines are not an edit."""
    return "\n".join(stripped_lines(source))


def rebuild(notebook: nbformat.NotebookNode, text: str) -> nbformat.NotebookNode:
    """The notebook rebuilt from percent text, the old cells' ids and metadata aligned back by content.

    An unchanged cell is kept byte for byte; a changed one keeps the metadata and id of the old cell at its
    place (so an edited harness cell still carries its tag and the scope guard sees it); tags written in the
    text are ignored, so a reply cannot tag a cell; a cell left empty is removed.
    """
    new = [(cell_type, _tidy(source)) for cell_type, source in text_to_cells(text)]
    old = [(cell.cell_type, _tidy(cell.source)) for cell in notebook.cells]
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
        elif source.strip():
            cells.append(_new_cell(cell_type, source, None if index is None else notebook.cells[index]))
    return _finish(notebook, cells)


def apply_blocks(notebook: nbformat.NotebookNode, blocks: tuple[EditBlock, ...]) -> nbformat.NotebookNode:
    """The notebook with every block applied in order; all failing blocks are reported together."""
    lines = notebook_to_text(notebook).splitlines()
    problems = [problem for block in blocks if (problem := apply_block(block, lines))]
    if problems:
        raise ProposalError("; ".join(problems) + ". Nothing was applied: send the corrected reply.")
    return rebuild(notebook, "\n".join(lines))


def apply_script(notebook: nbformat.NotebookNode, script: str) -> nbformat.NotebookNode:
    """The notebook rebuilt from a whole-notebook percent-format script."""
    if not script.strip():
        raise ProposalError("the ```python block is empty: send the whole notebook with `# %%` cell markers")
    return rebuild(notebook, script)


def _shown(notebook: nbformat.NotebookNode) -> list[tuple]:
    """What the percent text shows of each cell (cheaper than writing the text)."""
    return [(cell.cell_type, _tidy(cell.source), cell.get("metadata", {}).get("tags", [])) for cell in notebook.cells]


def apply_reply(notebook: nbformat.NotebookNode, reply: str) -> tuple[str, nbformat.NotebookNode]:
    """(description, edited notebook) from a model's reply; raises ProposalError with an actionable message."""
    parsed = parse_reply(reply)
    if parsed.blocks:
        edited = apply_blocks(notebook, parsed.blocks)
    else:
        edited = apply_script(notebook, parsed.script)
    if _shown(edited) == _shown(notebook):
        raise ProposalError("the edit leaves the notebook unchanged: change at least one line of the agent's "
                            "cells")
    return parsed.description, edited
