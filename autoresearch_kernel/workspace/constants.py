"""The sandbox's numeric constants: which `NAME = number` lines there are, which of them run under a profile,
and whether changing them changes anything the notebook computes.

Shared by the proposers that search them (mutate, optuna). A constant is an `UPPER_CASE = <number>` line of
the agent's code cells (never the parameters or harness cells; only those the notebook's metadata names as
`autoresearch.tunable`, when it does), at the top level or in the branch of an
`if run.profile.name == "gpu": ... else: ...` block that runs under the profile. Its effect is judged from the
notebook's own one-line assignments (`GRAD_ACCUM_STEPS = max(1, round(TOTAL_BATCH_SIZE / ...))`), read as a
tree and never executed: a change whose every reader keeps its value moves nothing.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass

import nbformat

from autoresearch_kernel.errors import DataError
from autoresearch_kernel.harness.profiles import Profile, get_profile
from autoresearch_kernel.workspace.notebook import is_contract

NUMBER = r"[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
CONSTANT = re.compile(rf"^(?P<indent>[ \t]*)(?P<name>[A-Z][A-Z0-9_]*)(?P<eq>\s*=\s*)"
                      rf"(?P<value>(?P<base>\d+)\s*\*\*\s*(?P<exp>\d+)|{NUMBER})(?P<gap>\s*)(?P<comment>#.*)?$")
SKIP_NAMES = re.compile(r"SEED|EVAL|VOCAB")
POW2_NAMES = re.compile(r"BATCH|WIDTH|DIM|EMBD|HIDDEN|HEAD|CHANNEL|SEQ|TOKENS|WINDOW|CTX|CONTEXT")
FRACTION_NAMES = re.compile(r"FRAC|RATIO|WARMUP|WARMDOWN|COOLDOWN|DECAY|DROPOUT|MOMENTUM|BETA|SMOOTH|EMA")

@dataclass(frozen=True)
class Constant:
    """One `NAME = number` line of the agent's code."""

    name: str
    cell: int
    line: int
    text: str               # the literal as written
    value: float            # its value (ints stay exact as float for our ranges)
    kind: str               # pow2 | int | fraction | scale
    power_base: int | None  # 2 for a literal written as 2**N


def literal_value(text: str) -> float:
    if "**" in text:
        base, exp = text.split("**")
        return float(int(base) ** int(exp))
    return float(text.replace("_", ""))


def classify(name: str, text: str, value: float) -> str | None:
    is_int = "**" in text or re.fullmatch(r"[-+]?\d[\d_]*", text) is not None
    if is_int:
        n = int(value)
        if n > 0 and n & (n - 1) == 0 and POW2_NAMES.search(name):
            return "pow2"
        return "int"
    if FRACTION_NAMES.search(name) and 0.0 <= value < 1.0:
        return "fraction"
    return "scale" if value != 0.0 else None     # zero cannot be scaled; it is left alone


def _profile_branch(test: ast.expr) -> tuple[str, bool] | None:
    """("gpu", True) for `if run.profile.name == "gpu":` (or `PROFILE == ...`; False for !=), else None."""
    if (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], (ast.Eq, ast.NotEq))
            and isinstance(test.comparators[0], ast.Constant) and isinstance(test.comparators[0].value, str)
            and (ast.unparse(test.left).endswith("profile.name") or ast.unparse(test.left) == "PROFILE")):
        return test.comparators[0].value, isinstance(test.ops[0], ast.Eq)
    return None


def active_statements(statements: list[ast.stmt], profile: str):
    """The statements that run under `profile`, in order: top level, or inside the matching branch of an
    `if <profile> == "...":` (the sandbox sizes its model per profile that way)."""
    for statement in statements:
        if isinstance(statement, ast.If) and (branch := _profile_branch(statement.test)):
            value, equal = branch
            yield from active_statements(statement.body if (profile == value) == equal else statement.orelse,
                                         profile)
        else:
            yield statement


def active_lines(source: str, profile: str) -> list[int]:
    """Indexes of the one-line assignments that run under `profile`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:     # IPython syntax, say: only unindented lines, which need no parse
        return [i for i, line in enumerate(source.splitlines()) if line[:1].isupper()]
    return [statement.lineno - 1 for statement in active_statements(tree.body, profile)
            if isinstance(statement, ast.Assign) and statement.lineno == statement.end_lineno]


def notebook_profile(notebook: nbformat.NotebookNode) -> str:
    """The PROFILE default of the parameters cell ("cpu" when there is none)."""
    for cell in notebook.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            match = re.search(r"^PROFILE\s*=\s*[\"'](\w+)[\"']", cell.source, re.MULTILINE)
            if match:
                return match.group(1)
    return "cpu"


def tunable_names(notebook: nbformat.NotebookNode) -> frozenset[str] | None:
    """The constants a task allows to be tuned (`autoresearch init` writes them into the notebook's metadata,
    `autoresearch.tunable`); None: every constant of the agent's cells."""
    names = notebook.metadata.get("autoresearch", {}).get("tunable")
    return frozenset(names) if isinstance(names, list) else None


def find_constants(notebook: nbformat.NotebookNode, profile: str | None = None) -> list[Constant]:
    """The mutable constants of the agent's code cells that run under `profile` (default: the parameters
    cell's), first assignment of each name, in notebook order."""
    profile = profile or notebook_profile(notebook)
    tunable = tunable_names(notebook)
    found: dict[str, Constant] = {}
    for cell_index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or is_contract(cell):
            continue
        lines = cell.source.splitlines()
        for line_index in active_lines(cell.source, profile):
            match = CONSTANT.match(lines[line_index])
            if not match or match["name"] in found or SKIP_NAMES.search(match["name"]) or (
                    tunable is not None and match["name"] not in tunable):
                continue
            text = match["value"]
            value = literal_value(text)
            kind = classify(match["name"], text, value)
            if kind:
                found[match["name"]] = Constant(match["name"], cell_index, line_index, text, value, kind,
                                                int(match["base"]) if match["base"] else None)
    return list(found.values())


# -- effective values ----------------------------------------------------------------------------------------

# The arithmetic a rule may use. The notebook's text is the agent's: it is read as a tree, never executed.
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
FUNCTIONS = {"max": max, "min": min, "round": round, "int": int, "float": float, "abs": abs}
MAX_EXPONENT = 64   # 2**N with a larger N is no batch size; refusing it keeps a stray 10**10**9 from hanging us


def evaluate(node: ast.expr, values: dict[str, float], profile: Profile | None) -> float | None:
    """The value of a small arithmetic expression over known names, numbers and `run.profile.<field>`, or
    None when it holds anything else."""
    def value(node: ast.expr) -> float | None:
        if isinstance(node, ast.Constant):
            return node.value if isinstance(node.value, (int, float)) and not isinstance(node.value, bool) else None
        if isinstance(node, ast.Name):
            return values.get(node.id)
        if isinstance(node, ast.Attribute) and profile is not None and ast.unparse(node.value) == "run.profile":
            field = getattr(profile, node.attr, None)
            return field if isinstance(field, (int, float)) else None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = value(node.operand)
            return None if operand is None else (-operand if isinstance(node.op, ast.USub) else operand)
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            left, right = value(node.left), value(node.right)
            if left is None or right is None or (isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT):
                return None
            try:
                return OPERATORS[type(node.op)](left, right)
            except (ArithmeticError, ValueError):
                return None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
                and not node.keywords):
            arguments = [value(argument) for argument in node.args]
            if not arguments or None in arguments:
                return None
            try:
                return FUNCTIONS[node.func.id](*arguments)
            except (ArithmeticError, ValueError, TypeError):
                return None
        return None

    return value(node)


class Effects:
    """What a constant's value reaches, under one profile: whether a step of it changes anything at all.

    The rules are the one-name assignments that run (`NAME = expression`), in notebook order. A constant
    whose every use is inside rules that can be evaluated acts only through their values; when those stay
    the same, the step changes nothing. Any other use (a function body, a call, another branch, a cell that
    does not parse) counts as an effect, so the check errs on the side of proposing.
    """

    def __init__(self, notebook: nbformat.NotebookNode, profile: str):
        try:
            self.profile: Profile | None = get_profile(profile)
        except DataError:       # a profile the harness does not know: its fields stay unknown
            self.profile = None
        self.trees: list[ast.Module] = []
        self.unparsed: list[str] = []
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            try:
                self.trees.append(ast.parse(cell.source))
            except SyntaxError:
                self.unparsed.append(cell.source)
        self.rules = [(statement.targets[0].id, statement.value)
                      for tree in self.trees for statement in active_statements(tree.body, profile)
                      if isinstance(statement, ast.Assign) and len(statement.targets) == 1
                      and isinstance(statement.targets[0], ast.Name)]

    def changes_nothing(self, name: str, new_text: str) -> bool:
        """True when rewriting `name`'s first assignment to the literal `new_text` leaves every rule it feeds
        with the value it has now, and it is used nowhere else."""
        return self.change_nothing({name: new_text})

    def change_nothing(self, changes: dict[str, str]) -> bool:
        """The same for several rewrites at once ({name: new literal}): all of them together change nothing."""
        feeds: set[str] = set()
        for name in changes:
            if any(re.search(rf"\b{name}\b", source) for source in self.unparsed):
                return False
            fed = [(target, expression) for target, expression in self.rules if _reads(expression, name)]
            uses = sum(_reads(tree, name) for tree in self.trees)
            if not fed or uses != sum(_reads(expression, name) for _, expression in fed):
                return False
            feeds |= {target for target, _ in fed}
        # ints stay ints, as in Python
        new_values = {name: evaluate(ast.parse(text, mode="eval").body, {}, None) for name, text in changes.items()}
        before, after = self._values(), self._values(new_values)
        return all(before.get(target) is not None and before.get(target) == after.get(target) for target in feeds)

    def _values(self, overrides: dict[str, float] | None = None) -> dict[str, float]:
        """Every rule's value, in order, with the first assignment of each name in `overrides` set to its value."""
        values: dict[str, float] = {}
        pending = dict(overrides or {})
        for target, expression in self.rules:
            if target in pending:
                values[target] = pending.pop(target)
                continue
            result = evaluate(expression, values, self.profile)
            if result is None:
                values.pop(target, None)    # reassigned to something unknown: its old value no longer holds
            else:
                values[target] = result
        return values


def _reads(tree: ast.AST, name: str) -> int:
    """How often `tree` reads the variable `name`."""
    return sum(isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)
               for node in ast.walk(tree))


def replace_literal(line: str, new_text: str) -> str:
    """The line with its literal replaced, the comment kept in its column when there is room."""
    match = CONSTANT.match(line)
    head = f"{match['indent']}{match['name']}{match['eq']}{new_text}"
    if not match["comment"]:
        return head
    column = match.start("comment")
    return head + " " * max(1, column - len(head)) + match["comment"]
