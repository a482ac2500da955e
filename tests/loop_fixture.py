"""A tiny project for the loop's tests: a git repository whose sandbox notebook runs in about a second.

The sandbox keeps the notebook contract (the parameters cell, METRICS_PATH) but trains nothing: it writes a
metrics.json whose val_bpb is `VALUE - BONUS + NOISE * SEED`, so every decision of the loop is deterministic.
Other constants make it misbehave on demand: `SLEEP` (a timeout), `DIE` (kernel death through os._exit),
`FAIL` (an exception). `ScriptedProposer` edits those constants, one scripted step per proposal.
"""
from __future__ import annotations

import re
from pathlib import Path

import git
import nbformat

from autoresearch_kernel.errors import ProposalError, ProposerUnavailable
from autoresearch_kernel.proposers.base import Proposal, ProposalContext, Usage, proposal_error

PARAMETERS = """\
PROFILE = "cpu"
DATA_DIR = ""
DEVICE = "auto"
SEED = 0
BUDGET_SECONDS = 0.0
BUDGET_TOKENS = 0
METRICS_PATH = "metrics.json\""""
CONSTANTS = """\
VALUE = 1.0     # the val_bpb this notebook reports on seed 0
NOISE = 0.001   # val_bpb grows by this per seed: the baseline's spread
SLEEP = 0       # seconds to sleep (a timeout when past the limit)
DIE = False     # end the kernel with os._exit (kernel death)
FAIL = False    # raise an exception
BONUS = 0.0     # subtracted from val_bpb: a second lever on another line (lanes re-apply changes line by line)"""
BODY = """\
import json, os, time
time.sleep(SLEEP)
if DIE:
    os._exit(3)
if FAIL:
    raise RuntimeError("scripted failure")
secrets = sorted(name for name in os.environ if "KEY" in name or "TOKEN" in name)"""
REPORT = """\
json.dump({"status": "ok", "failure": None, "val_bpb": VALUE - BONUS + NOISE * SEED, "training_seconds": 0.5,
           "total_seconds": 1.0, "peak_vram_mb": 2048.0, "total_tokens_M": 0.25, "num_steps": 3,
           "seed": SEED, "env_secrets": secrets}, open(METRICS_PATH, "w"))
print("val_bpb:", VALUE - BONUS + NOISE * SEED)"""


def sandbox_notebook() -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    cells = [
        nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(CONSTANTS),
        nbformat.v4.new_code_cell(BODY),
        nbformat.v4.new_code_cell(REPORT, metadata={"tags": ["harness"]}),
    ]
    for number, cell in enumerate(cells):
        cell.id = f"cell-{number}"
    notebook.cells = cells
    return notebook


def make_repo(path: Path) -> Path:
    """A git repository with the fixture sandbox and a program.md, one commit, its own identity."""
    path.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "test")
        config.set_value("user", "email", "test@localhost")
    (path / "notebooks").mkdir(exist_ok=True)
    nbformat.write(sandbox_notebook(), path / "notebooks" / "train_template.ipynb")
    (path / "program.md").write_text("Make val_bpb lower.\n")
    repo.git.add("notebooks/train_template.ipynb", "program.md")
    repo.git.commit("-m", "project")
    return path


def set_constant(notebook: nbformat.NotebookNode, name: str, value) -> nbformat.NotebookNode:
    """A copy of the notebook with `NAME = value` rewritten in the constants cell."""
    edited = nbformat.from_dict(notebook)
    cell = edited.cells[1]
    cell.source, count = re.subn(rf"^{name} = [^#\n]*?(\s*#)", f"{name} = {value!r}\\1", cell.source, flags=re.M)
    assert count == 1, f"no constant {name} in the fixture"
    return edited


class ScriptedProposer:
    """A proposer that follows a script: each step is (description, {constant: value}) or an exception.

    A `str` step is a reply that cannot be applied (ProposalError); `"unavailable"` raises
    ProposerUnavailable. It records the contexts it was given, so tests can check what the loop passed.
    """

    name = "scripted"
    fixes_crashes = True    # a script may hold a fix

    def __init__(self, steps, usage: Usage = Usage(100, 20, 0.001)):
        self.steps = list(steps)
        self.usage = usage
        self.contexts: list[ProposalContext] = []
        self.feedbacks: list[str] = []

    def propose(self, context: ProposalContext) -> Proposal:
        self.contexts.append(context)
        if not self.steps:
            raise ProposerUnavailable("the script has no more steps")
        step = self.steps.pop(0)
        if step == "unavailable":
            raise ProposerUnavailable("scripted outage: HTTP 429")
        if isinstance(step, str):
            raise proposal_error(f"scripted invalid reply: {step}", self.usage)
        description, changes = step
        notebook = context.notebook
        for name, value in changes.items():
            notebook = set_constant(notebook, name, value)
        return Proposal(description, notebook, self.usage)

    def feedback(self, proposal: Proposal, status: str, val_bpb: float | None = None) -> None:
        self.feedbacks.append(status)


__all__ = ["ScriptedProposer", "make_repo", "sandbox_notebook", "set_constant", "ProposalError"]
