"""Three-way merge of notebooks, cell by cell: re-applying a stale candidate's change onto the new best.

With lanes, a candidate can finish after the best has moved on from the commit it was built on. Its change
(parent -> candidate) is then re-applied onto the current best (parent -> best) and run again. The merge
works on the sequence of cells (a cell is its type and its source): a cell changed by one side only takes
that side's version; cells inserted or deleted by one side are inserted or deleted; where both sides changed
the same cell, their edits are merged line by line the same way. Edits that touch the same cells (or lines)
differently do not merge: `merge_notebooks` returns None, and the loop records the candidate as stale.

Unlike a text merge (diff3 in git), changes to neighbouring cells or lines do not conflict: in a sandbox
whose constants sit one per line in one cell, `LR` moved by one side and `DEPTH` by the other merge cleanly.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher
from typing import TypeVar

import nbformat

from autoresearch_kernel.workspace.notebook import clean_notebook

T = TypeVar("T")
Change = tuple[int, int, list]  # base[start:end] is replaced by the list


def merge_notebooks(parent: nbformat.NotebookNode, best: nbformat.NotebookNode,
                    candidate: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    """The candidate's change (from `parent`) applied onto `best`; None when the two changes conflict."""
    def key(cell) -> tuple[str, str]:
        return cell.cell_type, cell.source

    cells = merge3([key(c) for c in parent.cells], [key(c) for c in best.cells], [key(c) for c in candidate.cells],
                   merge_item=_merge_cell)
    if cells is None:
        return None
    # each merged cell is a copy of the cell it came from (tags, ids and all); a cell both sides edited is
    # the best's cell at that place with the merged source
    originals = {key(c): c for c in [*candidate.cells, *best.cells]}  # the best's cells win a tie
    merged = clean_notebook(copy.deepcopy(best))
    merged.cells = []
    for kind, source in cells:
        original = originals.get((kind, source))
        if original is None:
            original = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
                        "raw": nbformat.v4.new_raw_cell}[kind](source)
        cell = copy.deepcopy(original)
        cell.source = source
        merged.cells.append(cell)
    return clean_notebook(merged)


def merge3(base: Sequence[T], ours: Sequence[T], theirs: Sequence[T],
           merge_item: Callable[[T, T, T], T | None] | None = None) -> list[T] | None:
    """Both sides' changes to `base` applied together; None on a conflict.

    Changes are the non-equal blocks of each side's diff against `base`. Blocks of the two sides that do not
    overlap in `base` are both applied; overlapping blocks merge only when they are identical, or when each
    replaces the same single item by a single item and `merge_item(base, ours, theirs)` merges those.
    """
    mine, yours = _changes(base, ours), _changes(base, theirs)
    merged: list[T] = []
    position = 0
    while mine or yours:
        if mine and yours and _overlap(mine[0], yours[0]):
            a, b = mine.pop(0), yours.pop(0)
            if a == b:
                change = a
            elif merge_item and a[1] - a[0] == b[1] - b[0] == 1 and a[0] == b[0] and len(a[2]) == len(b[2]) == 1:
                item = merge_item(base[a[0]], a[2][0], b[2][0])
                if item is None:
                    return None
                change = (a[0], a[1], [item])
            else:
                return None
        else:
            side = mine if mine and (not yours or mine[0][0] <= yours[0][0]) else yours
            change = side.pop(0)
        start, end, replacement = change
        merged.extend(base[position:start])
        merged.extend(replacement)
        position = end
    merged.extend(base[position:])
    return merged


def _changes(base: Sequence[T], side: Sequence[T]) -> list[Change]:
    matcher = SequenceMatcher(None, list(base), list(side), autojunk=False)
    changes: list[Change] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "replace" and i2 - i1 == j2 - j1:  # n items edited in place: n changes, each its own
            changes += [(i, i + 1, [side[j]]) for i, j in zip(range(i1, i2), range(j1, j2))]
        elif tag != "equal":
            changes.append((i1, i2, list(side[j1:j2])))
    return changes


def _overlap(a: Change, b: Change) -> bool:
    """Two changes touch the same items of the base, or insert at the same place."""
    if a[0] == a[1] or b[0] == b[1]:  # an insertion: it conflicts with whatever happens at its point
        return a[0] == b[0] or (a[0] < b[0] < a[1]) or (b[0] < a[0] < b[1])
    return a[0] < b[1] and b[0] < a[1]


def _merge_cell(base: tuple[str, str], ours: tuple[str, str], theirs: tuple[str, str]) -> tuple[str, str] | None:
    """One cell changed by both sides: merged line by line (cells of one type only)."""
    if not base[0] == ours[0] == theirs[0]:
        return None
    lines = merge3(base[1].split("\n"), ours[1].split("\n"), theirs[1].split("\n"))
    return None if lines is None else (base[0], "\n".join(lines))
