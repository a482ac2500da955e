"""The loop's settings, defined once: `LoopConfig`, the command-line options built from it, the copy a run keeps.

- `LoopConfig`: one run's settings (a dataclass); the loop, the CLI, the dashboard and the tests all build one.
- `OPTIONS`: the `loop` command's options, each naming the LoopConfig field it sets. The CLI's argparse
  arguments (`add_options`, `given`) and the dashboard's command line (`command_line`) are both built from
  this table, so the two cannot drift apart.
- `runs/<tag>/config.json`: the settings a run was started with, and every later change (`store`). A resumed
  run keeps them: `LoopConfig.resumed` fills in what was not given, and `check_resume` refuses an explicit
  change of the yardstick (`YARDSTICK`: what every result is measured with), since a noise floor or a
  budget that changes under a running search makes its rows incomparable. Other changes (how many
  experiments, the timeout, the device, the proposer) are allowed and recorded in the file.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch_kernel import gate, tasks
from autoresearch_kernel.errors import AutoresearchError, WorkspaceError
from autoresearch_kernel.execution.spec import ExperimentSpec
from autoresearch_kernel.integrity import budget
from autoresearch_kernel.workspace.runfolder import RunFolder

# Settings a resumed run may not change: its results were measured with them.
YARDSTICK = ("profile", "data_dir", "budget_seconds", "budget_tokens", "baseline_seeds", "gate", "paired_runs",
             "budget_flops", "budget_tolerance", "task", "budget_evaluations")
# What a resume started from a form sends: limits of this process only; everything else is the run's own.
RESUMABLE = ("max_experiments", "timeout_s")
# where and whether to resume, and how this process runs them (no figure changes with these): not the run's
NOT_STORED = ("repo", "tag", "resume", "warm_kernels", "overlap_scoring")
SECRET_OPTIONS = ("api_key",)
EXECUTORS = ("local", "ray")  # never written to disk (the proposer reads the key from the environment)


@dataclass
class LoopConfig:
    """One run's settings; `runs/<tag>/config.json` keeps them (see the module docstring)."""

    repo: Path = Path(".")
    tag: str = ""
    task: str = tasks.DEFAULT  # the workload: a bundled task (gpt, circle-packing) or the repository's tasks/<name>
    data_dir: str | None = None  # prepared data folder; None: the harness's default
    profile: str = "cpu"  # cpu | gpu: must match the prepared data
    budget_seconds: float = 0.0  # training seconds per experiment; all three 0: the profile's default budget
    budget_tokens: int = 0  # a fixed token budget instead (deterministic); excludes the other two
    budget_evaluations: int = 0  # a task whose budget counts evaluations (steps): how many; 0: the task's default
    max_experiments: int | None = None  # proposals this process makes (invalid ones count); None: forever
    # the unmodified notebook runs once per seed first; None: the task's (0, 1, 2; one seed for a deterministic task)
    baseline_seeds: tuple[int, ...] | None = None
    gate: gate.GateConfig | None = None  # None: the task's (its noise); the direction is always the task's
    # the most runs the paired gate gives one candidate; None: the gate's (8). Fewer spend less on borderline
    # changes and keep fewer small gains (make run's short demo passes 3; tests/test_gate.py has the power)
    paired_runs: int | None = None
    timeout_s: float | None = None  # wall-clock limit of one run; None: derived from the budget
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    proposer: str = "mutate"  # mutate | llm | optuna | hybrid
    proposer_options: dict = field(default_factory=dict)  # passed to make_proposer (model, base_url, ...)
    fix_attempts: int | None = None  # fix proposals a crashed fresh idea gets; None: 1 if the proposer
    # `fixes_crashes`, else 0 (the offline proposer edits numbers only: it would spend a proposal saying so)
    resume: bool = False  # continue an existing tag; False refuses one
    pause_seconds: float = 60.0  # after ProposerUnavailable, wait this long before asking again
    max_interrupts: int = 1  # an experiment cut short more often than this is recorded as a crash
    sandbox: bool = True  # run experiments in the bubblewrap jail; False only on the user's explicit say
    lanes: int | None = None  # experiments in flight at once; None: one per --devices entry, else 1
    devices: str | None = None  # cuda:0,cuda:1,... | all (every GPU); None: every lane uses `device`
    executor: str = "local"  # local: lanes on this machine | ray: each run a Ray task on some node
    ray_address: str | None = None  # ray: the cluster to join (None: RAY_ADDRESS, or a local one)
    # the compute-fair budget (harness/flops.py) and its verification outside the jail (integrity/budget.py)
    budget_flops: float = 0.0  # training FLOPs per experiment instead, counted by the harness (deterministic)
    budget_tolerance: budget.Tolerance = field(default_factory=budget.Tolerance)
    # the cycle (execution/warm.py, lanes.py): neither changes a figure, only how soon the next run starts
    warm_kernels: bool = True  # each lane's next kernel starts (and imports, loads the data) while its run runs
    overlap_scoring: bool = True  # a lane's next run trains while its last one is scored (never under a time budget)

    def __post_init__(self) -> None:
        self.repo = Path(self.repo).resolve()
        self._task = tasks.load(self.task, self.repo)
        if self.baseline_seeds is None:
            self.baseline_seeds = tuple(range(self._task.baseline_seeds))
        self.baseline_seeds = tuple(int(s) for s in self.baseline_seeds)
        if isinstance(self.gate, dict):  # read back from config.json (an older run's: the means rule)
            self.gate = gate.GateConfig.from_stored(self.gate)
        self.gate = dataclasses.replace(self.gate or task_gate(self._task),
                                        lower_is_better=self._task.metric.lower_is_better)
        if self.paired_runs is not None:
            self.gate = _with_paired_runs(self.gate, int(self.paired_runs))
        if isinstance(self.budget_tolerance, dict):
            self.budget_tolerance = budget.Tolerance(**self.budget_tolerance)
        budgets = (self.budget_seconds, self.budget_tokens, self.budget_flops, self.budget_evaluations)
        if sum(1 for b in budgets if b) > 1:
            raise AutoresearchError("give one budget (seconds, tokens, FLOPs or evaluations), not two")
        if self.executor not in EXECUTORS:
            raise AutoresearchError(f"unknown executor {self.executor!r}: use {' or '.join(EXECUTORS)}")
        if not self.baseline_seeds or len(set(self.baseline_seeds)) != len(self.baseline_seeds):
            raise AutoresearchError(f"baseline seeds must be distinct and at least one: {self.baseline_seeds}")

    @property
    def task_spec(self) -> tasks.Task:
        """The run's task (its metric, sandbox, scorer, budget)."""
        return self._task

    def budget_amount(self) -> float:
        """How much of the task's budget kind one experiment gets (the task's default when none was given)."""
        given = {"seconds": self.budget_seconds, "tokens": self.budget_tokens,
                 "evaluations": self.budget_evaluations}.get(self._task.budget.kind, 0)
        amount = given or self._task.budget.default
        return float(amount) if self._task.budget.kind == "seconds" else int(amount)  # counts are whole

    @classmethod
    def resumed(cls, repo: str | Path, tag: str, **given) -> LoopConfig:
        """The config that resumes `tag`: its stored settings, with the `given` ones on top.

        Proposer options are merged key by key (a new --model keeps a stored base URL). A yardstick setting
        given with another value passes here and is refused when the loop opens (`check_resume`).
        """
        stored = _read(RunFolder.of(Path(repo).resolve(), tag))
        options = {**stored.get("proposer_options", {}), **given.pop("proposer_options", {})}
        known = {f.name for f in dataclasses.fields(cls)}
        settings = {name: value for name, value in stored.items() if name in known and name not in NOT_STORED}
        return cls(**{**settings, **given, "proposer_options": options, "repo": repo, "tag": tag, "resume": True})

    def options_for_proposer(self, run_folder: Path) -> dict:
        """The proposer's options; the proposers that keep a study (optuna, hybrid) keep it in the run folder,
        so that their search resumes with the run."""
        options = dict(self.proposer_options)
        if self.proposer in ("optuna", "hybrid"):
            options.setdefault("study_path", str(run_folder))
        return options

    def run_timeout(self) -> float:
        """The whole-notebook limit: the reference's 10 minutes for a 300 s budget, scaled with the budget.

        Twice the budget, and at least the budget plus two minutes for start-up and evaluation, which do
        not shrink with a small budget. A token or FLOP budget uses the profile's seconds as its scale.
        """
        if self.timeout_s:
            return float(self.timeout_s)
        budget = self.budget_seconds
        if not budget:
            from autoresearch_kernel.harness.profiles import get_profile

            budget = get_profile(self.profile).budget_seconds
        return max(2.0 * budget, budget + 120.0)

    def experiment_spec(self, data_dir: str, jailed: bool) -> ExperimentSpec:
        """What launching one of this run's experiments needs (launch and the Ray nodes get only this)."""
        return ExperimentSpec(task=self._task, profile=self.profile, data_dir=data_dir, jailed=jailed,
                              timeout_s=self.run_timeout(), budget_seconds=float(self.budget_seconds),
                              budget_tokens=int(self.budget_tokens), budget_flops=float(self.budget_flops),
                              budget_amount=self.budget_amount())

    def stored(self) -> dict:
        """The settings as config.json holds them (JSON values; no location, no secrets)."""
        settings = _jsonable(dataclasses.asdict(self))
        settings["proposer_options"] = {k: v for k, v in settings["proposer_options"].items()
                                        if k not in SECRET_OPTIONS}
        return {name: value for name, value in settings.items() if name not in NOT_STORED}


def task_gate(task: tasks.Task) -> gate.GateConfig:
    """The gate a task gets by default: its noise as the prior (None: the profile's); a deterministic task's
    (noise 0) keeps any gain above the minimum margin and re-runs nothing on other seeds."""
    if task.deterministic:  # one run decides: no seed scatters, so there is nothing to pair or confirm
        return gate.GateConfig(deterministic=True, confirm_runs=0, rule="means")
    return gate.GateConfig(prior_sd=task.noise_sd)


def _with_paired_runs(config: gate.GateConfig, runs: int) -> gate.GateConfig:
    """`config` giving a candidate at most `runs` runs; a one-line error where that cannot be."""
    if config.rule != "paired":
        raise AutoresearchError(f"--paired-runs applies to the paired gate, and this run's gate is the "
                                f"{config.rule!r} rule (a deterministic task runs each candidate once): leave it out")
    if runs < config.paired_first_look:
        raise AutoresearchError(f"--paired-runs {runs} is too few: a keep after the first run needs "
                                f"{config.paired_first_look} pairs, so give at least {config.paired_first_look}")
    return dataclasses.replace(config, paired_runs=runs)


# -- the run's copy: runs/<tag>/config.json ----------------------------------------------------------------
def _read_file(folder: RunFolder) -> dict:
    """config.json as {"settings": ..., "changes": [...]}; empty for a run that has none."""
    try:
        data = json.loads(folder.config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise WorkspaceError(f"{folder.config} is unreadable ({error}): restore it, or start a new tag") from None
    if not isinstance(data, dict):
        raise WorkspaceError(f"{folder.config} does not hold a run's settings: restore it, or start a new tag")
    return data if "settings" in data else {"settings": data, "changes": []}  # an older run: settings only


def _read(folder: RunFolder) -> dict:
    return _read_file(folder).get("settings", {})


def check_resume(folder: RunFolder, config: LoopConfig, data_dir: str) -> list[dict]:
    """The changes `config` makes to the run's stored settings; AutoresearchError for a yardstick one.

    `data_dir` is the folder the loop resolved (a default and the same folder spelled out are one folder).
    """
    stored = _read(folder)
    if not stored:
        return []
    if isinstance(stored.get("gate"), dict):  # settings the gate gained since are their defaults, not a change
        stored = {**stored, "gate": _jsonable(dataclasses.asdict(gate.GateConfig.from_stored(stored["gate"])))}
    now = config.stored()
    now["data_dir"] = data_dir
    changes = [dict(setting=name, was=stored[name], now=now[name]) for name in now
               if name in stored and stored[name] != now[name]]
    moved = [c for c in changes if c["setting"] in YARDSTICK]
    if moved:
        said = "; ".join(f"{c['setting']} {c['was']!r} -> {c['now']!r}" for c in moved)
        raise AutoresearchError(
            f"run tag {config.tag!r} was measured with other settings ({said}): resume it without changing "
            "them, or start a new tag for the new settings")
    return changes


def store(folder: RunFolder, config: LoopConfig, data_dir: str, changes: list[dict]) -> None:
    """Write the run's settings, with the changes made on resumes, to config.json (all or nothing)."""
    from autoresearch_kernel.journal.runstate import write_json

    earlier = _read_file(folder).get("changes", [])
    at = time.strftime("%Y-%m-%dT%H:%M:%S")
    settings = {**config.stored(), "data_dir": data_dir}
    write_json(folder.config, {"settings": settings, "changes": earlier + [dict(c, at=at) for c in changes]})


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# -- the `loop` command's options -------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One `loop` option: the LoopConfig field (or proposer option) it sets, its flag, its type."""

    name: str  # a LoopConfig field, or a key of proposer_options when `proposer_option`
    flag: str
    help: str
    type: Callable = str
    choices: tuple[str, ...] | None = None
    to_config: Callable | None = None  # the command-line value -> the LoopConfig value
    proposer_option: bool = False
    budget: bool = False  # one of the mutually exclusive budgets
    switch: object = None  # a flag without a value that sets the field to this (--no-sandbox: False)


OPTIONS = (
    Option("proposer", "--proposer", "who proposes the edits: mutate (offline), llm, optuna (the constants, "
           "TPE, CMA-ES or random), hybrid (llm on a share of experiments, optuna on the rest)",
           choices=("mutate", "llm", "optuna", "hybrid")),
    Option("sampler", "--sampler", "optuna, hybrid: tpe (default) | cmaes | random (the yardstick)",
           choices=("tpe", "cmaes", "random"), proposer_option=True),
    Option("llm_share", "--llm-share", "hybrid: the share of experiments the llm proposes (default 0.3)", float,
           proposer_option=True),
    Option("model", "--model", "llm: model name (default: $AUTORESEARCH_MODEL)", proposer_option=True),
    Option("base_url", "--base-url", "llm: OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)",
           proposer_option=True),
    Option("task", "--task", "the workload: gpt (default), circle-packing, or a task of the repository's tasks/ "
           "folder (autoresearch init)"),
    Option("budget_seconds", "--budget-seconds", "training seconds per experiment (default: the profile's)",
           float, budget=True),
    Option("budget_tokens", "--budget-tokens", "training tokens per experiment instead", int, budget=True),
    Option("budget_flops", "--budget-flops", "training FLOPs per experiment instead, counted by the harness "
           "(the cpu profile's default: 1.25e12)", float, budget=True),
    Option("budget_evaluations", "--budget-evaluations", "a task counting evaluations (circle-packing: gradient "
           "steps): how many per experiment (default: the task's)", int, budget=True),
    Option("max_experiments", "--max-experiments", "stop after N proposals (default: never)", int),
    Option("baseline_seeds", "--baseline-seeds", "seeds the unmodified notebook runs on first (default: 3)", int,
           to_config=lambda count: tuple(range(count))),
    Option("paired_runs", "--paired-runs", "the most runs one candidate gets from the paired gate, its first and "
           "its confirmations (default: 8; fewer spend less on borderline changes and keep fewer small gains)",
           int),
    Option("timeout_s", "--timeout", "wall-clock seconds per run (default: from the budget)", float),
    Option("device", "--device", "auto | cpu | cuda | cuda:N | mps"),
    Option("profile", "--profile", "cpu | gpu: as the data was prepared (default: cpu)"),
    Option("data_dir", "--data-dir", "prepared data folder (default: $AUTORESEARCH_DATA_DIR or "
           "~/.cache/autoresearch_kernel)"),
    Option("lanes", "--lanes", "experiments in flight at once (default: one per --devices entry, else 1)", int),
    Option("devices", "--devices", "the lanes' devices: cuda:0,cuda:1,... or all (default: --device for every "
           "lane; CPU lanes share the cores)"),
    Option("executor", "--executor", "local (default) | ray: run each experiment as a Ray task on the cluster",
           choices=EXECUTORS),
    Option("ray_address", "--ray-address", "ray: the cluster's address (default: $RAY_ADDRESS, else a local one)"),
    Option("warm_kernels", "--cold-kernels", "start each run's kernel when the run starts, not ahead of it while "
           "the lane's previous run runs", switch=False),
    Option("overlap_scoring", "--no-overlap", "score each run before its lane starts the next (the default "
           "overlaps them, except under a time budget)", switch=False),
    Option("sandbox", "--no-sandbox", "run experiments without the bubblewrap jail (only where it cannot be had; "
           "rows are marked)", switch=False),
)
BY_NAME = {option.name: option for option in OPTIONS}


def add_options(parser: argparse.ArgumentParser) -> None:
    """The `loop` command's setting options. Every default is None: "not given" (a resume keeps the stored)."""
    budgets = parser.add_mutually_exclusive_group()
    for option in OPTIONS:
        where = budgets if option.budget else parser
        if option.switch is not None:
            where.add_argument(option.flag, dest=option.name, action="store_const", const=option.switch,
                               default=None, help=option.help)
        else:
            where.add_argument(option.flag, dest=option.name, type=option.type, choices=option.choices,
                               default=None, help=option.help)


def given(args: argparse.Namespace) -> dict:
    """The LoopConfig keyword arguments of the options given on the command line, and only those."""
    settings: dict = {}
    for option in OPTIONS:
        value = getattr(args, option.name)
        if value is None:
            continue
        if option.proposer_option:
            settings.setdefault("proposer_options", {})[option.name] = value
        else:
            settings[option.name] = option.to_config(value) if option.to_config else value
    return settings


def command_line(values: dict) -> list[str]:
    """The options part of a `loop` command for `values` (option name -> command-line value; None: not given)."""
    unknown = set(values) - set(BY_NAME)
    if unknown:
        raise ValueError(f"not options of the loop command: {sorted(unknown)}")
    argv: list[str] = []
    for option in OPTIONS:
        value = values.get(option.name)
        if value is None:
            continue
        if option.switch is not None:
            argv += [option.flag] if value == option.switch else []
        else:
            argv += [option.flag, str(option.type(value))]
    return argv
