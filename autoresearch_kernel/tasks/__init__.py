"""The task contract: what one workload is, so that the loop, the gate, the rows and the report read it from one place.

A task is a folder (bundled ones under this package, a user's under `<repo>/tasks/<name>/`, written by
`autoresearch init`) that names:

    sandbox        the notebook the agent edits (a path in the repository), with its harness-tagged cells; a
                   bundled task also ships the notebook (`source`), committed on the run branch when the
                   repository has none
    preparation    optional: a function `prepare(public, private)` that writes what the experiment may read
                   (`public`, bound read-only in its jail) and what only the scorer may read (`private`)
    artifact       what the experiment hands over: "program" (the GPT's torch.export program, scored by
                   integrity/scorer.py), "file" (a results file such as coordinates or predictions, scored by
                   the task's own function in a jail of its own: tasks/filescore.py), or "metrics" (the kernel's
                   own metrics.json: a metric reported by the kernel, marked `scored kernel` on every row)
    scorer         `score(artifact, data) -> value`, a function named "module:function" or "path.py:function";
                   `checks`: more such functions returning None or a reason, all of which must pass for a keep
    metric         its name and direction (`Metric`): the gate, the rows, the report, the prompt read them here
    budget         its kind (seconds, tokens, flops or evaluations) and default
    noise          the seed-to-seed sd of the metric (None: the GPT profile's measured default); 0 means the
                   task is deterministic: the baseline runs one seed, the gate keeps any gain above its minimum
                   margin, and no candidate is re-run on other seeds

`load(name, repo)` finds a task: a bundled one by name, else the repository's `tasks/<name>/task.json`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoresearch_kernel.errors import AutoresearchError

ARTIFACTS = ("program", "file", "metrics")
BUDGET_KINDS = ("seconds", "tokens", "flops", "evaluations")
TASKS_FOLDER = "tasks"  # a repository's own tasks: <repo>/tasks/<name>/task.json
TASK_FILE = "task.json"
DEFAULT = "gpt"


@dataclass(frozen=True)
class Metric:
    """The number a task is judged by, and which way is better."""

    name: str = "val_bpb"
    lower_is_better: bool = True
    unit: str = ""  # shown after values where it helps ("bits per byte", "sum of radii")

    @property
    def direction(self) -> str:
        """The word rows and reports use: lower | higher."""
        return "lower" if self.lower_is_better else "higher"

    @classmethod
    def from_direction(cls, name: str, direction: str, unit: str = "") -> Metric:
        if direction not in ("lower", "higher", "min", "max", "minimize", "maximize"):
            raise AutoresearchError(f"unknown direction {direction!r} for metric {name}: use lower or higher")
        return cls(name, direction in ("lower", "min", "minimize"), unit)

    def improvement(self, best: float, value: float) -> float:
        """How much better `value` is than `best` (positive: better): the gate's one rule, in this direction."""
        from autoresearch_kernel import gate

        return gate.improvement(best, value, self.lower_is_better)

    def phrase(self) -> str:
        """`val_bpb (lower is better)`: for chart axes and prompts."""
        return f"{self.name} ({self.direction} is better)"


@dataclass(frozen=True)
class Budget:
    """What limits one experiment, and by how much unless the run says otherwise."""

    kind: str = "seconds"  # seconds | tokens | flops | evaluations
    default: float = 0.0  # 0: the profile's (the GPT task's seconds)

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise AutoresearchError(f"unknown budget kind {self.kind!r}: use one of {', '.join(BUDGET_KINDS)}")


@dataclass(frozen=True)
class Task:
    """One workload (see the module docstring)."""

    name: str
    metric: Metric = field(default_factory=Metric)
    sandbox: str = "notebooks/train_template.ipynb"  # the notebook the agent edits, relative to the repository
    artifact: str = "program"  # program | file | metrics
    artifact_name: str = ""  # the file a "file" task's experiment writes into its own folder
    scorer: str = ""  # "module:function" or "/path/file.py:function": score(artifact, data) -> float
    checks: tuple[str, ...] = ()  # functions check(artifact, data) -> None | reason; each must pass for a keep
    prepare: str = ""  # function prepare(public, private) -> None, run once before the first experiment
    budget: Budget = field(default_factory=Budget)
    noise_sd: float | None = None  # None: the profile's default (gate.PROFILE_NOISE_SD); 0: deterministic
    baseline_seeds: int = 3  # seeds the unmodified notebook runs on first (1 for a deterministic task)
    source: str = ""  # a bundled task's notebook, committed on the run branch when the repository lacks one
    program: str = ""  # the task's program.md (the human's instructions); "": the repository's program.md
    # the pre-filter's code rules (integrity/static.py: imports, files, ...) for the agent's cells; a user's task
    # (`autoresearch init`) leaves them out, since its notebook may import what it likes: the jail is the boundary
    static_rules: bool = True
    folder: str = ""  # where the task was read from

    def __post_init__(self) -> None:
        if self.artifact not in ARTIFACTS:
            raise AutoresearchError(f"task {self.name}: unknown artifact {self.artifact!r}: use one of {ARTIFACTS}")
        if self.artifact == "file" and not (self.artifact_name and self.scorer):
            raise AutoresearchError(f"task {self.name}: a file artifact needs artifact_name and scorer")

    @property
    def deterministic(self) -> bool:
        return self.noise_sd == 0

    @property
    def scored(self) -> str:
        """Who reports the metric, as rows say it: outside (a scorer in its own jail) | kernel (the experiment)."""
        return "kernel" if self.artifact == "metrics" else "outside"

    @property
    def is_gpt(self) -> bool:
        return self.artifact == "program"

    def stored(self) -> dict:
        """The task as task.json holds it."""
        data = asdict(self)
        data.pop("folder")
        return data


def from_dict(data: dict, folder: str = "") -> Task:
    data = dict(data)
    metric = data.pop("metric", {})
    budget = data.pop("budget", {})
    known = set(Task.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise AutoresearchError(f"{folder or 'task'}: unknown task fields {unknown}; see autoresearch_kernel/tasks")
    return Task(metric=Metric(**metric), budget=Budget(**budget), folder=folder,
                checks=tuple(data.pop("checks", ())), **data)


def bundled() -> dict[str, Task]:
    """The tasks the package ships, by name."""
    from autoresearch_kernel.tasks import circle_packing, gpt

    return {task.name: task for task in (gpt.TASK, circle_packing.TASK)}


def load(name: str | None, repo: str | Path | None = None) -> Task:
    """The task called `name`: a bundled one, else `<repo>/tasks/<name>/task.json` (written by `autoresearch init`)."""
    name = name or DEFAULT
    tasks = bundled()
    if name in tasks:
        return tasks[name]
    path = Path(repo or ".").resolve() / TASKS_FOLDER / name / TASK_FILE
    if not path.is_file():
        raise AutoresearchError(f"no task {name!r}: use one of {', '.join(tasks)}, or create it with "
                                f"`autoresearch init --task {name} --notebook YOUR.ipynb` (looked for {path})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise AutoresearchError(f"{path} is unreadable ({error}): fix it or run `autoresearch init` again") from None
    return from_dict(data, folder=str(path.parent))


def of_settings(settings: dict, repo: str | Path) -> Task:
    """A run's task from its stored settings (config.json): the GPT's for a run made before tasks, or for a
    task that is no longer there (its rows still read)."""
    try:
        return load(settings.get("task"), repo)
    except AutoresearchError:
        return load(DEFAULT)


def of_run(repo: str | Path, tag: str) -> Task:
    """The task of run `tag` of the repository, from runs/<tag>/config.json."""
    from autoresearch_kernel.workspace.runfolder import RunFolder

    try:
        data = json.loads(RunFolder.of(repo, tag).config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    settings = data.get("settings", data) if isinstance(data, dict) else {}
    return of_settings(settings if isinstance(settings, dict) else {}, repo)


def data_folders(task: Task, data_dir: str) -> tuple[Path, Path]:
    """(public, private): the task's prepared files under the run's data folder. The experiment's jail binds
    the public one read-only; only the scorer's jail binds the private one."""
    base = Path(data_dir) / TASKS_FOLDER / task.name
    return base / "public", base / "private"


def prepare(task: Task, data_dir: str) -> tuple[Path, Path]:
    """Run the task's preparation once (when its folders are missing); returns (public, private)."""
    public, private = data_folders(task, data_dir)
    if task.prepare and not (public / ".prepared").exists():
        from autoresearch_kernel.tasks.functions import load_function

        public.mkdir(parents=True, exist_ok=True)
        private.mkdir(parents=True, exist_ok=True)
        load_function(task.prepare, task.folder)(public, private)
        (public / ".prepared").write_text("ok\n")
    return public, private


__all__ = ["Budget", "Metric", "Task", "bundled", "data_folders", "load", "of_run", "of_settings", "prepare"]
