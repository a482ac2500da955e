"""The offline proposer: a hill-climber over the numeric constants of the sandbox's own cells.

It needs no API key and no network, so it is the default, and it is the yardstick an LLM must beat: an LLM
that cannot out-climb blind steps on the hyperparameters is not doing research.

What it edits: `UPPER_CASE = <number>` lines in the agent's code cells (never the parameters or harness
cells), e.g. `MATRIX_LR = 0.04  # ...` or `BATCH_SIZE = 2**5`, at the top level or in the branch of an
`if run.profile.name == "gpu": ... else: ...` block that runs under the run's profile (the context's; a change
to the other branch would measure nothing). Each proposal rewrites one literal:
- powers of two whose name says size (batch, width, dim, heads, ...) move by whole exponents;
- other integers move additively by a fraction of their value (at least 1), and stay integers;
- fractions (names with FRAC, RATIO, WARMUP, DECAY, DROPOUT, MOMENTUM, BETA, ...) move additively in [0, 1);
- other floats (learning rates, init scales, ...) move multiplicatively.
Values stay within bounds around the first value seen. Names holding SEED, EVAL or VOCAB are left alone: a
seed change is luck, not research, and evaluation and vocabulary belong to the harness.

A step that changes nothing the notebook computes is not proposed: a constant used only on the right of
other one-line assignments (TOTAL_BATCH_SIZE, read only by `GRAD_ACCUM_STEPS = max(1, round(TOTAL_BATCH_SIZE
/ (DEVICE_BATCH_SIZE * SEQ_LEN)))`) moves nothing when those values stay the same (2048 -> 1024 is still one
pass of 8 x 256 tokens on the cpu profile), and the experiment would re-run its parent bit for bit. The rules
are read from the notebook itself, so they follow the agent's edits.

How it adapts: per constant, a step size and a preferred direction. A keep grows the step and keeps the
direction; a discard shrinks it and flips the direction; a crash shrinks it harder. After a keep, the same constant is
stepped again first. A change already tried
(same constant, same old and new value, from the results so far or this session) is not proposed again.
The choice is seeded, so the same seed and results give the same proposal. On resume (no feedback yet),
the state is rebuilt from the descriptions in the results so far.
"""

from __future__ import annotations

import ast
import copy
import math
import operator
import random
import re
from dataclasses import dataclass

import nbformat

from autoresearch_kernel.errors import DataError
from autoresearch_kernel.harness.profiles import Profile, get_profile
from autoresearch_kernel.notebook import clean_notebook, is_contract
from autoresearch_kernel.proposers.base import HistoryEntry, Proposal, ProposalContext, Usage, proposal_error

NUMBER = r"[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
CONSTANT = re.compile(rf"^(?P<indent>[ \t]*)(?P<name>[A-Z][A-Z0-9_]*)(?P<eq>\s*=\s*)"
                      rf"(?P<value>(?P<base>\d+)\s*\*\*\s*(?P<exp>\d+)|{NUMBER})(?P<gap>\s*)(?P<comment>#.*)?$")
DESCRIPTION = re.compile(rf"^(?P<name>[A-Z][A-Z0-9_]*) (?P<old>\d+\*\*\d+|{NUMBER}) -> "
                         rf"(?P<new>\d+\*\*\d+|{NUMBER})$")
SKIP_NAMES = re.compile(r"SEED|EVAL|VOCAB")
POW2_NAMES = re.compile(r"BATCH|WIDTH|DIM|EMBD|HIDDEN|HEAD|CHANNEL|SEQ|TOKENS|WINDOW|CTX|CONTEXT")
FRACTION_NAMES = re.compile(r"FRAC|RATIO|WARMUP|WARMDOWN|COOLDOWN|DECAY|DROPOUT|MOMENTUM|BETA|SMOOTH|EMA")

# Step units per kind, multiplied by the constant's adaptive step size (which starts at 1).
SCALE_UNIT = math.log(1.25)     # a float moves by a factor of 1.25 (MATRIX_LR 0.04 -> 0.05)
INT_UNIT = 0.25                 # an integer moves by a quarter of its value, at least 1
FRACTION_UNIT = 0.1             # a fraction moves by 0.1
GROW, SHRINK, CRASH_SHRINK = 1.5, 0.6, 0.5
MIN_SIZE, MAX_SIZE = 0.25, 4.0
ESCALATIONS = 3                 # when every small step was tried, try steps 2x, 4x, 8x as large


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


@dataclass
class Step:
    """What one constant has learned: how far to move and which way."""

    size: float = 1.0
    direction: int = 0      # +1 up, -1 down, 0 not yet known


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


def find_constants(notebook: nbformat.NotebookNode, profile: str | None = None) -> list[Constant]:
    """The mutable constants of the agent's code cells that run under `profile` (default: the parameters
    cell's), first assignment of each name, in notebook order."""
    profile = profile or notebook_profile(notebook)
    found: dict[str, Constant] = {}
    for cell_index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or is_contract(cell):
            continue
        lines = cell.source.splitlines()
        for line_index in active_lines(cell.source, profile):
            match = CONSTANT.match(lines[line_index])
            if not match or match["name"] in found or SKIP_NAMES.search(match["name"]):
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


def granule(name: str, origin: float) -> int:
    """The step a size keeps: a size that is not a power of two (a head dim of 48) keeps its granularity (16
    there), since head dims must stay even for rotary embeddings and widths divisible by the head count."""
    return int(origin) & -int(origin) if POW2_NAMES.search(name) and origin > 0 else 1


def hard_bounds(kind: str, origin: float) -> tuple[float, float]:
    """How far a constant may ever move from its first value, in its own units (exponents for pow2)."""
    if kind == "pow2":
        return 0, round(math.log2(origin)) + 4
    if kind == "int":
        return (0 if origin <= 0 else 1), max(4 * origin, origin + 8)
    if kind == "fraction":
        return 0.0, 0.999
    return tuple(sorted((origin / 100, origin * 100)))


def format_float(value: float, like: str) -> str:
    if "e" in like.lower():
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return repr(float(f"{value:.3g}"))


def _move(constant: Constant, direction: int, size: float, origin: float) -> str | None:
    """The literal `constant` becomes after one step, or None when the step hits a bound."""
    value, sign = constant.value, direction
    low, high = hard_bounds(constant.kind, origin)
    if constant.kind == "pow2":
        exponent = round(math.log2(value)) + sign * max(1, round(size))
        if not low <= exponent <= high:
            return None
        if constant.power_base == 2:
            return f"2**{exponent}"
        return str(2 ** exponent)
    if constant.kind == "int":
        step = granule(constant.name, origin)
        steps = max(1, round(abs(value) * INT_UNIT * size / step))
        new = int(value) + sign * steps * step
        return str(new) if low <= new <= high else None
    if constant.kind == "fraction":
        new = round(value + sign * FRACTION_UNIT * size, 3)
        new = min(max(new, low), high)
        return format_float(new, constant.text)
    new = value * math.exp(sign * SCALE_UNIT * size)
    return format_float(new, constant.text) if low <= new <= high else None


def _change_key(name: str, old: str, new: str) -> tuple[str, float, float]:
    return name, literal_value(old), literal_value(new)


def replace_literal(line: str, new_text: str) -> str:
    """The line with its literal replaced, the comment kept in its column when there is room."""
    match = CONSTANT.match(line)
    head = f"{match['indent']}{match['name']}{match['eq']}{new_text}"
    if not match["comment"]:
        return head
    column = match.start("comment")
    return head + " " * max(1, column - len(head)) + match["comment"]


class MutateProposer:
    """Offline hill-climbing over the sandbox's numeric constants.

    Options: `seed` (default 0). The context's `profile` (default: the parameters cell's PROFILE) picks the
    branch of an `if run.profile.name == ...:` block whose constants are stepped.
    """

    name = "mutate"
    fixes_crashes = False       # a blind step cannot repair a traceback; the loop logs the crash and moves on

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.steps: dict[str, Step] = {}
        self.origins: dict[str, float] = {}
        self.tried: set[tuple[str, float, float]] = set()
        self.learned = False    # feedback seen (or history replayed): the state is current
        self.last_keep: str | None = None   # a kept step is followed up first, in the same direction

    def propose(self, context: ProposalContext) -> Proposal:
        if context.failure:
            raise proposal_error("the mutate proposer cannot fix a crash: record it and propose a fresh "
                                 "change (or use the llm proposer for fixes)", Usage())
        if not self.learned:
            self._replay(context.history)
        self.tried |= {_change_key(m["name"], m["old"], m["new"]) for m in map(_parse, context.history) if m}
        profile = context.profile or notebook_profile(context.notebook)
        constants = find_constants(context.notebook, profile)
        if not constants:
            raise proposal_error("the sandbox has no `UPPER_CASE = <number>` constants in the agent's cells "
                                 "for the mutate proposer to step; add some or use the llm proposer", Usage())
        for constant in constants:
            self.origins.setdefault(constant.name, constant.value)
        rng = random.Random(f"{self.seed}/{len(context.history)}")
        choice = self._choose(constants, rng, Effects(context.notebook, profile))
        if choice is None:
            raise proposal_error("the mutate proposer has tried every step it can make from this notebook; "
                                 "stop the run or switch to the llm proposer", Usage())
        constant, new_text = choice
        notebook = clean_notebook(copy.deepcopy(context.notebook))
        lines = notebook.cells[constant.cell].source.splitlines()
        lines[constant.line] = replace_literal(lines[constant.line], new_text)
        notebook.cells[constant.cell].source = "\n".join(lines)
        self.tried.add(_change_key(constant.name, constant.text, new_text))
        return Proposal(description=f"{constant.name} {constant.text} -> {new_text}", notebook=notebook,
                        usage=Usage())

    def feedback(self, proposal: Proposal, status: str, val_bpb: float | None = None) -> None:
        match = DESCRIPTION.match(proposal.description)
        if match:
            self._learn(match["name"], match["old"], match["new"], status)
        self.learned = True

    # -- state ---------------------------------------------------------------------------------------------
    def _learn(self, name: str, old: str, new: str, status: str) -> None:
        step = self.steps.setdefault(name, Step())
        direction = 1 if literal_value(new) > literal_value(old) else -1
        if status == "keep":
            step.size, step.direction = min(step.size * GROW, MAX_SIZE), direction
            self.last_keep = name
        elif self.last_keep == name:
            self.last_keep = None
        elif status in ("discard", "noop"):  # a noop: the constant changed nothing, step elsewhere
            step.size, step.direction = max(step.size * SHRINK, MIN_SIZE), -direction
        elif status == "crash":
            step.size, step.direction = max(step.size * CRASH_SHRINK, MIN_SIZE), -direction

    def _replay(self, history: list[HistoryEntry]) -> None:
        """Rebuild the step sizes from the results so far (a resumed run starts with no feedback)."""
        for entry in history:
            match = _parse(entry)
            if match:
                self._learn(match["name"], match["old"], match["new"], entry.status)
        self.learned = True

    def _choose(self, constants: list[Constant], rng: random.Random,
                effects: Effects) -> tuple[Constant, str] | None:
        order = constants[:]
        rng.shuffle(order)
        order.sort(key=lambda constant: constant.name != self.last_keep)     # stable: the rest stay shuffled
        for escalation in range(ESCALATIONS + 1):
            for constant in order:
                step = self.steps.get(constant.name, Step())
                first = step.direction or rng.choice((1, -1))
                for direction in (first, -first):
                    new_text = _move(constant, direction, step.size * 2 ** escalation,
                                     self.origins[constant.name])
                    if new_text is None or literal_value(new_text) == constant.value:
                        continue
                    if effects.changes_nothing(constant.name, new_text):
                        continue
                    if _change_key(constant.name, constant.text, new_text) not in self.tried:
                        return constant, new_text
        return None


def _parse(entry: HistoryEntry) -> re.Match | None:
    return DESCRIPTION.match(entry.description.strip())
