"""`autoresearch init`: a task from a user's own notebook, so that the loop can hill-climb it.

It asks (or reads from flags and the notebook's cell tags, for scripts and tests) which cells are fixed, which
constants may be tuned, the metric and its direction, and how the result is scored: a Python function in a
file the user names, `score(artifact, data) -> float`, run outside the experiment in a jail of its own on the
file the notebook writes (`--artifact`), or, when the user accepts it, the metric the notebook writes itself
into METRICS_PATH (`--scored-by kernel`, marked so on every row). Then it writes

    the notebook            its first code cell tagged `parameters` (with SEED, BUDGET, DATA_DIR,
                            ARTIFACT_PATH and METRICS_PATH added where missing), the fixed cells tagged
                            `harness`, the tunable constants in its metadata (`autoresearch.tunable`)
    tasks/<name>/task.json  the task (tasks/__init__.py): notebook, metric, scorer, preparation, budget, noise
    tasks/<name>/program.md the instructions the LLM proposer reads: edit it

and commits those files (only those), so that `autoresearch loop --task <name>` can start at once. Not to be
confused with `agent-init` (agent_init.py), which makes a run ready for a coding agent.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git
import nbformat

from autoresearch_kernel import tasks
from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.tasks.functions import file_of, split
from autoresearch_kernel.workspace.constants import CONSTANT
from autoresearch_kernel.workspace.notebook import canonical

PARAMETERS = {"SEED": "0", "BUDGET": "0", "DATA_DIR": '""', "ARTIFACT_PATH": '""', "METRICS_PATH": '"metrics.json"'}


@dataclass(frozen=True)
class Answers:
    """What `init` needs to know; None where the user is to be asked (or the notebook's tags say it)."""

    notebook: str
    name: str | None = None
    metric: str | None = None
    direction: str | None = None  # lower | higher
    scorer: str | None = None  # file.py:function; None with scored_by "kernel"
    artifact: str | None = None  # the file the notebook writes for the scorer
    scored_by: str = "outside"  # outside | kernel
    fixed: tuple[int, ...] | None = None  # cell indexes (0-based, all cells) that the agent may not edit
    tunable: tuple[str, ...] | None = None  # constants mutate and optuna may move (None: all)
    prepare: str = ""  # file.py:function(public, private)
    budget_kind: str = "evaluations"
    budget: float = 0.0
    noise: float | None = 0.0  # seed-to-seed sd of the metric; 0: deterministic
    baseline_seeds: int | None = None


def init_task(repo: str | Path, answers: Answers, ask: Callable[[str, str], str] | None = None,
              commit: bool = True) -> tuple[tasks.Task, list[str]]:
    """Create the task; returns it and the lines to print. `ask(question, default) -> answer` fills what the
    answers leave open (None: the defaults and the notebook's tags are taken, and a missing metric or
    scorer is an error)."""
    root = Path(git.Repo(repo, search_parent_directories=True).working_tree_dir)
    notebook_path = (Path(repo) / answers.notebook).resolve()
    if not notebook_path.is_file() or root not in notebook_path.parents:
        raise AutoresearchError(f"no notebook {answers.notebook} inside the repository {root}: name one there")
    notebook = nbformat.read(notebook_path, as_version=4)
    answers = _complete(answers, notebook, notebook_path, ask)
    folder = root / tasks.TASKS_FOLDER / answers.name
    parameters_cell = _tag_cells(notebook, answers.fixed)
    if answers.tunable is not None:
        notebook.metadata.setdefault("autoresearch", {})["tunable"] = list(answers.tunable)
    task = tasks.Task(
        name=answers.name, metric=tasks.Metric.from_direction(answers.metric, answers.direction),
        sandbox=str(notebook_path.relative_to(root)),
        artifact="metrics" if answers.scored_by == "kernel" else "file",
        artifact_name=answers.artifact or "", scorer=_relative(answers.scorer, root, folder),
        prepare=_relative(answers.prepare, root, folder),
        budget=tasks.Budget(answers.budget_kind, answers.budget), noise_sd=answers.noise,
        baseline_seeds=answers.baseline_seeds or (1 if answers.noise == 0 else 3), program="program.md",
        static_rules=False)
    folder.mkdir(parents=True, exist_ok=True)
    notebook_path.write_text(canonical(notebook), encoding="utf-8")
    (folder / tasks.TASK_FILE).write_text(json.dumps(task.stored(), indent=2) + "\n", encoding="utf-8")
    program = folder / "program.md"
    if not program.exists():  # the user's edits of an earlier init stay
        program.write_text(program_text(task, notebook), encoding="utf-8")
    written = [notebook_path, folder / tasks.TASK_FILE, program]
    if commit:
        _commit(root, written, task.name)
    return task, _summary(task, notebook, parameters_cell, written, root, commit)


def _complete(answers: Answers, notebook, path: Path, ask) -> Answers:
    """The answers with every open question answered (asked, or from the tags and defaults)."""
    def need(value, question: str, default: str = "") -> str:
        if value:
            return value
        if ask is not None:
            return ask(question, default) or default
        if default:
            return default
        raise AutoresearchError(f"init needs {question.rstrip('?')}: give it as an option (autoresearch init --help)")

    values = dict(answers.__dict__)
    values["name"] = need(answers.name, "the task's name?", path.stem.replace("_", "-"))
    values["metric"] = need(answers.metric, "the metric's name?")
    values["direction"] = need(answers.direction, "is lower or higher better?", "higher")
    if answers.scored_by == "outside":
        values["scorer"] = need(answers.scorer, "the scorer, as file.py:function (score(artifact, data))?")
        values["artifact"] = need(answers.artifact, "the file the notebook writes for the scorer?")
        split(values["scorer"])
    if answers.fixed is None:
        tagged = tuple(i for i, cell in enumerate(notebook.cells) if "harness" in cell.metadata.get("tags", []))
        default = ",".join(map(str, tagged))
        said = ask("which cells are fixed (0-based indexes, comma-separated)?", default) if ask else default
        values["fixed"] = tuple(int(part) for part in said.replace(" ", "").split(",") if part)
    if answers.tunable is None and ask is not None:
        found = ",".join(_constants(notebook, values["fixed"]))
        said = ask("which constants may be tuned (comma-separated)?", found)
        values["tunable"] = tuple(part.strip() for part in said.split(",") if part.strip())
    return Answers(**values)


def _constants(notebook, fixed) -> list[str]:
    """The `NAME = number` constants of the cells that are not fixed (what mutate and optuna could move)."""
    names = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and index not in fixed and "parameters" not in cell.metadata.get("tags", []):
            names += [m["name"] for line in cell.source.splitlines() if (m := CONSTANT.match(line))]
    return list(dict.fromkeys(names))


def _tag_cells(notebook, fixed: tuple[int, ...]) -> int:
    """Tag the parameters cell (the first code cell, with the loop's names added where missing) and the
    fixed cells; returns the parameters cell's index."""
    for index in fixed:
        if not 0 <= index < len(notebook.cells):
            raise AutoresearchError(f"cell {index} is not in the notebook (it has {len(notebook.cells)} cells)")
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    code = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    if not code:
        raise AutoresearchError("the notebook has no code cell")
    index = tagged[0] if tagged else code[0]
    cell = notebook.cells[index]
    defined = {m["name"] for line in cell.source.splitlines() if (m := _assignment(line))}
    missing = [f"{name} = {value}  # set by the loop per experiment" for name, value in PARAMETERS.items()
               if name not in defined]
    cell.source = "\n".join([cell.source.rstrip(), *missing]).strip("\n")
    cell.metadata["tags"] = sorted(set(cell.metadata.get("tags", [])) | {"parameters"})
    for other in fixed:
        if other != index:
            tags = set(notebook.cells[other].metadata.get("tags", []))
            notebook.cells[other].metadata["tags"] = sorted(tags | {"harness"})
    return index


def _assignment(line: str):
    import re

    return re.match(r"^(?P<name>[A-Z][A-Z0-9_]*)\s*=", line)


def _relative(spec: str | None, root: Path, folder: Path) -> str:
    """A file.py:function spec relative to the task's folder (so the repository can move); modules stay."""
    if not spec:
        return ""
    path = file_of(spec, root)
    if path is None:
        return spec
    if not path.is_file():
        raise AutoresearchError(f"{spec}: no file {path}; name a file of the repository")
    return f"{os.path.relpath(path, folder)}:{split(spec)[1]}"


def _commit(root: Path, paths: list[Path], name: str) -> None:
    repo = git.Repo(root)
    relative = [str(p.relative_to(root)) for p in paths]
    repo.git.add("--", *relative)
    if repo.git.diff("--cached", "--name-only", "--", *relative):
        repo.git.commit("-m", f"autoresearch init: task {name}", "--", *relative)


def program_text(task: tasks.Task, notebook) -> str:
    """The program.md `init` writes: what the LLM proposer is told; the user edits it."""
    tunable = notebook.metadata.get("autoresearch", {}).get("tunable")
    metric = task.metric
    scored = (f"a scorer outside your experiment reads `{task.artifact_name}`, which the notebook writes, and "
              "measures it; nothing else the notebook prints or writes counts") if task.scored == "outside" else \
        f"the notebook reports it itself in METRICS_PATH (`{metric.name}`)"
    return f"""# {task.name}

Improve **{metric.name}** ({metric.direction} is better) of the notebook `{task.sandbox}`, one experiment at
a time. Each experiment is one edit; the workbench runs the whole notebook in a fresh kernel, in a sandbox,
and keeps the edit only when {metric.name} got better. How it is measured: {scored}.

Rules: do not edit the cells marked harness-owned (the parameters cell and the fixed cells). Use at most
`BUDGET` ({task.budget.kind}) per experiment. Read data only from `DATA_DIR`.
{"" if not tunable else f"The constants worth tuning: {', '.join(tunable)}."}

## Reply format
Start with one line `Description: <what you changed, in a few words>`, then SEARCH/REPLACE blocks:

<<<<<<< SEARCH
exact lines from the notebook
=======
the lines that replace them
>>>>>>> REPLACE
"""


def _summary(task, notebook, parameters_cell, written, root, committed) -> list[str]:
    fixed = [str(i) for i, c in enumerate(notebook.cells) if "harness" in c.metadata.get("tags", [])]
    tunable = notebook.metadata.get("autoresearch", {}).get("tunable")
    scorer = f"{task.scorer} on {task.artifact_name}, in its own jail" if task.scored == "outside" else \
        "the notebook's own METRICS_PATH (rows say scored kernel)"
    lines = [f"task {task.name}: {task.metric.phrase()}, notebook {task.sandbox}",
             f"  parameters cell {parameters_cell}, fixed cells {', '.join(fixed) or 'none'}, "
             f"tunable {', '.join(tunable) if tunable else 'every constant'}",
             f"  scored by {scorer}; budget {task.budget.default:g} {task.budget.kind}; "
             f"noise {'0 (deterministic)' if task.deterministic else task.noise_sd}",
             *[f"wrote {p.relative_to(root)}" for p in written]]
    if committed:
        lines.append("committed them")
    lines.append(f"edit tasks/{task.name}/program.md as you like, then: autoresearch loop --task {task.name} "
                 "--tag TAG")
    return lines


def ask_on_terminal(question: str, default: str) -> str:
    """Ask on the terminal; the default is taken on an empty answer."""
    shown = f" [{default}]" if default else ""
    print(f"{question}{shown} ", end="", flush=True)
    answer = sys.stdin.readline().strip()
    return answer or default
