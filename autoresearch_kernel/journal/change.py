"""What a candidate changed, normalised: the constants it moved, the code cells it edited, hashes of both.

The idea memory (memory.py) remembers every experiment by its change and refuses a candidate that would run
code already run. Two edits that differ only in comments, blank lines, spacing or the spelling of a number
(`2**5` and `32`, `5e-2` and `0.05`) compute the same thing, so they compare equal here:

- a code cell is compared as `ast.unparse` of its parsed tree (comments and layout gone) with arithmetic on
  number literals folded as CPython's compiler folds it (so the two spellings are the same bytecode); a cell
  that does not parse (IPython magics) is compared without its comment-only and blank lines;
- the harness's cells are compared byte for byte: the integrity check refuses any edit of them, a comment
  included, and that refusal must not be mistaken for a repeat;
- markdown and raw cells are left out: they run nothing.

`Change.constants` says which `NAME = number` constants moved from what to what (the constants the mutate
and optuna proposers search, `proposers/constants.py`); `Change.notebook` identifies the code the candidate
runs, whatever it was built from; `Change.diff` identifies the edit itself (the changed cells, normalised).
"""
from __future__ import annotations

import ast
import copy
import hashlib
import json
import operator
from dataclasses import dataclass

import nbformat

from autoresearch_kernel.workspace.constants import find_constants, literal_value, notebook_profile, replace_literal
from autoresearch_kernel.workspace.notebook import is_contract

HASH_CHARS = 16  # of a sha256 in hex: collisions among a repository's experiments are out of the question
# The folds CPython's compiler makes on two number literals; a power's exponent is bounded as it bounds it.
FOLDS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
         ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
MAX_EXPONENT = 128


@dataclass(frozen=True)
class Change:
    """A candidate's change against its parent, normalised (see the module docstring)."""

    constants: tuple[tuple[str, str | None, str | None], ...] = ()  # (name, old literal, new literal); None: absent
    cells: tuple[int, ...] = ()  # notebook indexes of the code cells that changed (the parent's where removed)
    diff: str = ""  # hash of the changed cells' normalised sources; "" when no code changed
    notebook: str = ""  # hash of every code cell's normalised source: the code the candidate runs
    tuning: bool = False  # only constants moved (put back, the code is the parent's): a knob, not a code idea


class _Fold(ast.NodeTransformer):
    """`2 ** 5` -> `32`, `-(1)` -> `-1`: arithmetic on number literals, folded as the compiler folds it."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        left, right = node.left, node.right
        if type(node.op) in FOLDS and _number(left) and _number(right):
            if isinstance(node.op, ast.Pow) and abs(right.value) > MAX_EXPONENT:
                return node
            try:
                return ast.copy_location(ast.Constant(FOLDS[type(node.op)](left.value, right.value)), node)
            except (ArithmeticError, ValueError):
                return node
        return node


def _number(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def normal_source(cell) -> str | None:
    """The cell as compared (see the module docstring); None for a cell that runs nothing."""
    if cell.cell_type != "code":
        return None
    if is_contract(cell):
        return cell.source
    try:
        return ast.unparse(_Fold().visit(ast.parse(cell.source)))
    except (SyntaxError, ValueError, RecursionError):  # IPython syntax: the lines themselves, minus comments
        lines = (line.rstrip() for line in cell.source.splitlines())
        return "\n".join(line for line in lines if line.strip() and not line.lstrip().startswith("#"))


def _hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value).encode("utf-8")).hexdigest()[:HASH_CHARS]


def _code_cells(notebook: nbformat.NotebookNode) -> list[tuple[int, str]]:
    return [(index, source) for index, cell in enumerate(notebook.cells)
            if (source := normal_source(cell)) is not None]


def notebook_hash(notebook: nbformat.NotebookNode) -> str:
    """What identifies the code a notebook runs (its code cells, normalised, in order)."""
    return _hash([source for _, source in _code_cells(notebook)])


def moved_constants(parent: nbformat.NotebookNode, child: nbformat.NotebookNode,
                    profile: str | None = None) -> tuple[tuple[str, str | None, str | None], ...]:
    """The constants whose value differs, as (name, old literal, new literal), in the child's order."""
    profile = profile or notebook_profile(child)
    before = {c.name: c.text for c in find_constants(parent, profile)}
    after = {c.name: c.text for c in find_constants(child, profile)}
    moved = []
    for name in [*after, *(n for n in before if n not in after)]:
        old, new = before.get(name), after.get(name)
        if old is None or new is None or literal_value(old) != literal_value(new):
            moved.append((name, old, new))
    return tuple(moved)


def change_of(parent: nbformat.NotebookNode | None, child: nbformat.NotebookNode,
              profile: str | None = None) -> Change:
    """The child's change against its parent (None: no parent known, only the child's code is identified)."""
    code = _code_cells(child)
    if parent is None:
        return Change(notebook=_hash([source for _, source in code]))
    old = _code_cells(parent)
    # Cells are aligned by their place among the code cells: a markdown cell added in between moves nothing.
    changed = [p for p in range(max(len(code), len(old))) if _source_at(code, p) != _source_at(old, p)]
    cells = tuple((code if p < len(code) else old)[p][0] for p in changed)
    diff = _hash([[p, _source_at(code, p)] for p in changed]) if changed else ""
    profile = profile or notebook_profile(child)
    moved = moved_constants(parent, child, profile)
    tuning = bool(moved) and notebook_hash(_put_back(child, moved, profile)) == notebook_hash(parent)
    return Change(moved, cells, diff, _hash([source for _, source in code]), tuning)


def _source_at(cells: list[tuple[int, str]], position: int) -> str | None:
    return cells[position][1] if position < len(cells) else None


def _put_back(child: nbformat.NotebookNode, moved, profile: str) -> nbformat.NotebookNode:
    """The child with every moved constant set back to its old literal (a constant added stays: not tuning)."""
    old = {name: text for name, text, _ in moved}
    if None in old.values() or any(new is None for _, _, new in moved):
        return child  # a constant appeared or went: that is a code change
    reverted = copy.deepcopy(child)
    for constant in find_constants(child, profile):
        if constant.name in old:
            lines = reverted.cells[constant.cell].source.splitlines()
            lines[constant.line] = replace_literal(lines[constant.line], old[constant.name])
            reverted.cells[constant.cell].source = "\n".join(lines)
    return reverted
