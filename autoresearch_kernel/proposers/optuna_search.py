"""The optuna proposer: Optuna's samplers (TPE by default, CMA-ES, or random) search the sandbox's numeric constants.

What it searches: the constants the mutate proposer steps (`constants.find_constants`: `NAME = number` lines of the
agent's cells that run under the context's profile), each within a range around a centre and inside mutate's
hard bounds (`hard_bounds`, `granule`): powers of two by whole exponents, other integers in their granularity,
fractions additively, other floats on a log scale. One proposal is one `study.ask()`: every searched constant
set to the trial's value, described by those that changed (`optuna: MATRIX_LR 0.04 -> 0.031, DEPTH 4 -> 6`).
A trial that changes nothing the notebook computes (mutate's `Effects`: TOTAL_BATCH_SIZE moving within one
pass) would re-run its parent: it is told the best so far (what the parent measures) and another is asked.

Where the study lives: `<study_path>/optuna.db` (SQLite; the loop passes its run folder), so a resumed loop
resumes the search. `feedback` tells the trial the gate's value (the mean of its runs) and a crash as FAIL. A
duplicate (the loop refused to run code already run, memory.py) is told the earlier experiment's value: it
measured these very parameters, so the sampler learns what a run would have taught it (a repeat of a crash
fails as that crash did).
A loop that passes no value leaves the trial running; the next proposal finds its result in the history.

Regions: the ranges make a region, one study per region (`region-1`, `region-2`, ...) in that one file, so
each study's search space stays fixed, as TPE and CMA-ES assume. A new region starts when the notebook's
constants no longer fit the ranges (another proposer added, removed or moved one), and on a plateau
(`plateau_after` experiments in a row without a keep, `base.experiments_since_keep`): then it is centred on
the current kept values and twice as wide, to look further afield. Completed trials of the old region that
fit the new one are carried over, and the kept notebook enters every region as a trial worth the best so far.
"""

from __future__ import annotations

import copy
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import nbformat
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.proposers import base
from autoresearch_kernel.proposers.base import HistoryEntry, Proposal, ProposalContext, Usage, proposal_error
from autoresearch_kernel.proposers.mutate import format_float, granule, hard_bounds
from autoresearch_kernel.workspace.constants import (
    Constant,
    Effects,
    find_constants,
    literal_value,
    notebook_profile,
    replace_literal,
)
from autoresearch_kernel.workspace.notebook import clean_notebook

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial would drown the loop's own log

STUDY_FILE = "optuna.db"
SAMPLERS = ("tpe", "cmaes", "random")  # random: the yardstick a model-based sampler must beat
PREFIX = "optuna: "
FAILED = ("crash", "over-budget", "suspect")  # told to the study as failed trials (an over-budget value was bought with compute, a suspect one is a cheat)
# A region of width 1 reaches, either way from its centre: floats a factor 3, powers of two 2 exponents,
# integers half their value (at least 2 granules), fractions 0.25. A plateau doubles the width, up to 8.
SCALE_FACTOR = 3.0
EXPONENT_SPAN = 2
INT_SPAN = 0.5
FRACTION_SPAN = 0.25
MAX_WIDTH = 8.0
ASKS = 30  # trials asked for one proposal before saying the search finds nothing that changes the notebook


@dataclass(frozen=True)
class Region:
    """The ranges of one study: centres (in parameter units), width, and where its mutate bounds sit."""

    centres: dict[str, float]  # parameter name -> the value the region is centred on
    origins: dict[str, float]  # constant name -> the value its hard bounds are measured from
    width: float
    started_at: int  # len(history) when the region began: a plateau is counted within one region

    def attrs(self) -> dict:
        return {"centres": self.centres, "origins": self.origins, "width": self.width, "started_at": self.started_at}


def param_name(constant: Constant) -> str:
    """The trial parameter for a constant: powers of two are searched by exponent."""
    return f"{constant.name}.log2" if constant.kind == "pow2" else constant.name


def param_value(constant: Constant) -> float:
    """The constant's current value in parameter units."""
    if constant.kind == "pow2":
        return round(math.log2(constant.value))
    return int(constant.value) if constant.kind == "int" else constant.value


def literal(constant: Constant, value: float) -> str:
    """The literal a trial's parameter value is written as, in the constant's own notation."""
    if constant.kind == "pow2":
        return f"2**{int(value)}" if constant.power_base == 2 else str(2 ** int(value))
    if constant.kind == "int":
        return str(int(value))
    return format_float(value, constant.text)


def distribution(constant: Constant, centre: float, origin: float, width: float) -> BaseDistribution | None:
    """The range of one constant in a region, inside mutate's hard bounds; None when nothing is left to vary."""
    low, high = hard_bounds(constant.kind, origin)
    if constant.kind == "pow2":
        span = max(1, round(EXPONENT_SPAN * width))
        low, high = max(int(low), int(centre) - span), min(int(high), int(centre) + span)
        return IntDistribution(low, high) if low < high else None
    if constant.kind == "int":
        step = granule(constant.name, centre)
        span = max(2, round(INT_SPAN * width * abs(centre) / step)) * step
        first, last = int(centre) - span, int(centre) + span
        first += -(-(low - first) // step) * step if first < low else 0  # stay on the centre's grid
        last -= -(-(last - high) // step) * step if last > high else 0
        return IntDistribution(int(first), int(last), step=step) if first < last else None
    if constant.kind == "fraction":
        first, last = max(low, centre - FRACTION_SPAN * width), min(high, centre + FRACTION_SPAN * width)
        return FloatDistribution(first, last) if first < last else None
    factor = SCALE_FACTOR ** width
    if centre > 0:
        first, last = max(low, centre / factor), min(high, centre * factor)
        return FloatDistribution(first, last, log=True) if first < last else None
    first, last = sorted((centre * factor, centre / factor))  # a negative float: linear, no log of it
    first, last = max(low, first), min(high, last)
    return FloatDistribution(first, last) if first < last else None


def search_space(constants: list[Constant], region: Region) -> dict[str, BaseDistribution]:
    space = {}
    for constant in constants:
        name = param_name(constant)
        if name in region.centres:
            found = distribution(constant, region.centres[name], region.origins[constant.name], region.width)
            if found is not None:
                space[name] = found
    return space


def inside(distribution: BaseDistribution, value: float) -> bool:
    if not distribution.low <= value <= distribution.high:
        return False
    step = getattr(distribution, "step", None)
    return step is None or math.isclose((value - distribution.low) / step, round((value - distribution.low) / step))


class OptunaProposer:
    """Ask-and-tell search of the sandbox's constants.

    Options: `study_path` (the run folder, or a .db file; None: in memory, nothing resumes), `sampler`
    (tpe | cmaes | random), `seed`, `constants` (names to search, comma-separated or a list; default: all), and
    `plateau_after` (experiments without a keep before the search widens; 0: never).
    """

    name = "optuna"
    fixes_crashes = False  # it sets numbers; a traceback is the llm proposer's to read

    def __init__(self, study_path: str | Path | None = None, sampler: str = "tpe", seed: int = 0,
                 constants: str | list[str] | None = None, plateau_after: int = base.PLATEAU_AFTER):
        if sampler not in SAMPLERS:
            raise AutoresearchError(f"unknown sampler {sampler!r} for the optuna proposer: choose {' or '.join(SAMPLERS)}")
        self.sampler, self.seed, self.plateau_after = sampler, int(seed), int(plateau_after)
        self.names = [n.strip() for n in constants.split(",")] if isinstance(constants, str) else constants
        if study_path is None:
            self.storage: optuna.storages.BaseStorage = optuna.storages.InMemoryStorage()
        else:
            path = Path(study_path)
            path = path if path.suffix == ".db" else path / STUDY_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            self.storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")

    # -- the protocol --------------------------------------------------------------------------------------
    def propose(self, context: ProposalContext) -> Proposal:
        if context.failure:
            raise proposal_error("the optuna proposer cannot fix a crash: record it and propose a fresh change "
                                 "(or use the llm or hybrid proposer for fixes)", Usage())
        profile = context.profile or notebook_profile(context.notebook)
        constants = [c for c in find_constants(context.notebook, profile) if self.names is None or c.name in self.names]
        if not constants:
            raise proposal_error("the sandbox has no `UPPER_CASE = <number>` constants that run under this "
                                 "profile for the optuna proposer to search; add some or use the llm proposer",
                                 Usage())
        self._settle(context.history)
        study, region = self._study_for(context, constants)
        space = search_space(constants, region)
        searched = [c for c in constants if param_name(c) in space]
        effects = Effects(context.notebook, profile)
        for _ in range(ASKS):
            trial = study.ask(space)
            changes = {c: literal(c, trial.params[param_name(c)]) for c in searched}
            changes = {c: text for c, text in changes.items() if text != c.text and literal_value(text) != c.value}
            if not changes or effects.change_nothing({c.name: text for c, text in changes.items()}):
                # It would re-run the parent: what it is worth is what the parent measures.
                if context.best_val_bpb is not None:
                    study.tell(trial, context.best_val_bpb)
                else:
                    study.tell(trial, state=TrialState.PRUNED)
                continue
            description = PREFIX + ", ".join(f"{c.name} {c.text} -> {text}" for c, text in changes.items())
            trial.set_user_attr("description", description)
            trial.set_user_attr("history_length", len(context.history))
            return Proposal(description, edit(context.notebook, changes), Usage(), proposer=self.name)
        raise proposal_error(f"the optuna proposer asked {ASKS} trials and none changes what the notebook "
                             "computes; widen the search (fewer --constants) or use another proposer", Usage())

    def feedback(self, proposal: Proposal, status: str, val_bpb: float | None = None) -> None:
        """Tell the trial its value (or FAIL for a crash); a duplicate the earlier experiment's. Without a value
        the next proposal reads it from the history."""
        found = self._running(proposal.description)
        if found is None:
            return
        study, trial = found
        if status in FAILED or (status == "duplicate" and val_bpb is None):
            study.tell(trial.number, state=TrialState.FAIL)
        elif val_bpb is not None and math.isfinite(val_bpb):
            study.tell(trial.number, float(val_bpb))

    # -- the studies ---------------------------------------------------------------------------------------
    def _regions(self) -> list[str]:
        names = [n for n in optuna.get_all_study_names(self.storage) if n.startswith("region-")]
        return sorted(names, key=lambda n: int(n.split("-")[1]))

    def _load(self, name: str) -> optuna.Study:
        # A fresh sampler per proposal, seeded by the trials so far: a resumed proposer does not replay the
        # random draws its first session already made, and the same seed and study give the same proposal.
        study = optuna.load_study(study_name=name, storage=self.storage)
        salt = zlib.crc32(f"{self.seed}/{name}/{len(study.get_trials(deepcopy=False))}".encode())
        if self.sampler == "cmaes":
            study.sampler = optuna.samplers.CmaEsSampler(seed=salt, warn_independent_sampling=False)
        elif self.sampler == "random":
            study.sampler = optuna.samplers.RandomSampler(seed=salt)
        else:
            study.sampler = optuna.samplers.TPESampler(seed=salt)
        return study

    def _study_for(self, context: ProposalContext, constants: list[Constant]) -> tuple[optuna.Study, Region]:
        """The current region's study, or a new region's when the notebook left the ranges or on a plateau."""
        values = {param_name(c): param_value(c) for c in constants}
        regions = self._regions()
        width, origins, old = 1.0, {}, None
        if regions:
            old = self._load(regions[-1])
            region = Region(**old.user_attrs)
            space = search_space(constants, region)
            fits = set(region.centres) == set(values) and all(
                inside(space[name], value) if name in space else value == region.centres[name]
                for name, value in values.items())
            stuck = base.experiments_since_keep(context.history)
            plateau = (self.plateau_after > 0 and stuck >= self.plateau_after
                       and len(context.history) - region.started_at >= self.plateau_after)
            if fits and not plateau:
                return old, region
            width = min(region.width * 2, MAX_WIDTH) if plateau else 1.0
            origins = dict(region.origins)
        for constant in constants:  # the hard bounds follow a constant another proposer moved beyond them
            low, high = hard_bounds(constant.kind, origins.get(constant.name, constant.value))
            if not low <= param_value(constant) <= high:
                origins[constant.name] = constant.value
            origins.setdefault(constant.name, constant.value)
        region = Region(values, origins, width, len(context.history))
        name = f"region-{len(regions) + 1}"
        optuna.create_study(storage=self.storage, study_name=name,
                            direction="minimize" if context.lower_is_better else "maximize")  # the task's
        study = self._load(name)
        for key, value in region.attrs().items():
            study.set_user_attr(key, value)
        space = search_space(constants, region)
        if old is not None:  # what the last region learned, where it still applies
            for trial in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if set(trial.params) == set(space) and all(inside(space[k], v) for k, v in trial.params.items()):
                    study.add_trial(optuna.trial.create_trial(params=trial.params, distributions=space,
                                                              value=trial.value, user_attrs=trial.user_attrs))
        if context.best_val_bpb is not None:  # the kept notebook itself: the point to beat
            study.add_trial(optuna.trial.create_trial(
                params={k: v for k, v in values.items() if k in space}, distributions=space,
                value=context.best_val_bpb, user_attrs={"description": "the kept notebook"}))
        return self._load(name), region

    def _running(self, description: str) -> tuple[optuna.Study, optuna.trial.FrozenTrial] | None:
        """The latest running trial that made the proposal described so."""
        for name in reversed(self._regions()):
            study = optuna.load_study(study_name=name, storage=self.storage)
            for trial in reversed(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
                if trial.user_attrs.get("description") == description:
                    return study, trial
        return None

    def _settle(self, history: list[HistoryEntry]) -> None:
        """Tell running trials the results the history holds for them (a loop that passed no value, or one
        that stopped between writing the row and the feedback)."""
        for name in self._regions():
            study = optuna.load_study(study_name=name, storage=self.storage)
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                description = trial.user_attrs.get("description")
                runs = [e for e in history[trial.user_attrs.get("history_length", 0):] if e.description == description]
                if not runs:
                    continue
                values = [e.val_bpb for e in runs if e.val_bpb is not None and math.isfinite(e.val_bpb)]
                if runs[0].status in FAILED or (runs[0].status == "duplicate" and not values):
                    study.tell(trial.number, state=TrialState.FAIL)
                elif runs[0].status == "invalid" or not values:  # it never ran: nothing to learn
                    study.tell(trial.number, state=TrialState.PRUNED)
                else:
                    study.tell(trial.number, sum(values) / len(values))


def edit(notebook: nbformat.NotebookNode, changes: dict[Constant, str]) -> nbformat.NotebookNode:
    """A cleaned copy of the notebook with each constant's literal rewritten."""
    edited = clean_notebook(copy.deepcopy(notebook))
    for constant, text in changes.items():
        lines = edited.cells[constant.cell].source.splitlines()
        lines[constant.line] = replace_literal(lines[constant.line], text)
        edited.cells[constant.cell].source = "\n".join(lines)
    return edited
