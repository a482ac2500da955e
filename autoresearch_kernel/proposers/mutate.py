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
(same constant, same old and new value, from the results so far or this session) is not proposed again; one the
loop refused as a duplicate of an earlier run's (memory.py) counts as tried and teaches the steps nothing.
The choice is seeded, so the same seed and results give the same proposal. On resume (no feedback yet),
the state is rebuilt from the descriptions in the results so far.
"""

from __future__ import annotations

import copy
import math
import random
import re
from dataclasses import dataclass

from autoresearch_kernel.proposers.base import NOT_RUN, HistoryEntry, Proposal, ProposalContext, Usage, proposal_error
from autoresearch_kernel.workspace.constants import (
    NUMBER,
    POW2_NAMES,
    Constant,
    Effects,
    find_constants,
    literal_value,
    notebook_profile,
    replace_literal,
)
from autoresearch_kernel.workspace.notebook import clean_notebook

DESCRIPTION = re.compile(rf"^(?P<name>[A-Z][A-Z0-9_]*) (?P<old>\d+\*\*\d+|{NUMBER}) -> "
                         rf"(?P<new>\d+\*\*\d+|{NUMBER})$")

# Step units per kind, multiplied by the constant's adaptive step size (which starts at 1).
SCALE_UNIT = math.log(1.25)     # a float moves by a factor of 1.25 (MATRIX_LR 0.04 -> 0.05)
INT_UNIT = 0.25                 # an integer moves by a quarter of its value, at least 1
FRACTION_UNIT = 0.1             # a fraction moves by 0.1
GROW, SHRINK, CRASH_SHRINK = 1.5, 0.6, 0.5
MIN_SIZE, MAX_SIZE = 0.25, 4.0
ESCALATIONS = 3                 # when every small step was tried, try steps 2x, 4x, 8x as large



@dataclass
class Step:
    """What one constant has learned: how far to move and which way."""

    size: float = 1.0
    direction: int = 0      # +1 up, -1 down, 0 not yet known


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
        if status in NOT_RUN:  # a duplicate ran nothing: the change is in `tried`, there is no result to adapt to
            return
        step = self.steps.setdefault(name, Step())
        direction = 1 if literal_value(new) > literal_value(old) else -1
        if status == "keep":
            step.size, step.direction = min(step.size * GROW, MAX_SIZE), direction
            self.last_keep = name
        elif self.last_keep == name:
            self.last_keep = None
        elif status in ("discard", "noop", "over-budget"):  # a noop: the constant changed nothing, step elsewhere
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
