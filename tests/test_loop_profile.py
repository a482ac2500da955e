"""The run's profile reaches the proposers: a loop run under `gpu` while the parameters cell says `cpu`.

The sandbox of loop_fixture.py with its constants split by profile, as the shipped sandbox sizes its model:
the gpu branch reports val_bpb = GPU_VALUE + GPU_OFFSET, the cpu branch other numbers. A step of the cpu
branch would re-run the parent bit for bit; every mutate proposal must step a gpu line, and so change the
metric. The LLM's prompt (captured by the scripted server on 127.0.0.1) must name the profile and device.
"""
import re

import git
import nbformat
from llm_server import scripted_llm  # noqa: F401  (the fixture: started and stopped per test)
from loop_fixture import make_repo

from autoresearch_kernel.gate import GateConfig
from autoresearch_kernel.journal import results
from autoresearch_kernel.loop.loop import Checks, Loop, LoopConfig
from autoresearch_kernel.workspace.notebook import SANDBOX

# SLEEP, DIE, FAIL and NOISE in one tuple assignment: the loop fixture's body needs them, mutate leaves them.
CONSTANTS = """\
if PROFILE == "gpu":
    GPU_VALUE = 1.0     # the gpu branch: what a gpu run reports
    GPU_OFFSET = 0.25
else:
    CPU_VALUE = 3.0     # the cpu branch: never runs in these tests
    CPU_OFFSET = 0.5
SLEEP, DIE, FAIL, NOISE = 0, False, False, 0.001"""
REPORT = """\
VALUE = (GPU_VALUE + GPU_OFFSET) if PROFILE == "gpu" else (CPU_VALUE + CPU_OFFSET)
json.dump({"status": "ok", "failure": None, "val_bpb": VALUE + NOISE * SEED, "training_seconds": 0.5,
           "total_seconds": 1.0, "peak_vram_mb": 0.0, "total_tokens_M": 0.25, "num_steps": 3,
           "seed": SEED}, open(METRICS_PATH, "w"))"""


def profiled_repo(path):
    """The loop fixture's repository with the constants cell split by profile (PROFILE = "cpu" stays)."""
    repo = make_repo(path)
    notebook = nbformat.read(repo / SANDBOX, as_version=4)
    assert 'PROFILE = "cpu"' in notebook.cells[0].source
    notebook.cells[1].source = CONSTANTS
    notebook.cells[3].source = REPORT
    nbformat.write(notebook, repo / SANDBOX)
    git.Repo(repo).git.commit("-am", "constants per profile")
    return repo


def gpu_config(repo, **overrides):
    settings = dict(repo=repo, tag="t", profile="gpu", device="cpu", baseline_seeds=(0,), timeout_s=60,
                    pause_seconds=0.3, gate=GateConfig(z=2.0, min_margin=0.001, confirm_band=0.0, rule="means"))
    settings.update(overrides)
    return LoopConfig(**settings)


def changed_lines(repo, row):
    """The constants-cell lines the row's commit changed against its parent: (line index, new text)."""
    def cell(commit):
        text = git.Repo(repo).git.show(f"{commit}:{SANDBOX}")
        return nbformat.reads(text, as_version=4).cells[1].source.splitlines()

    before, after = cell(row.parent), cell(row.commit)
    return [(i, new) for i, (old, new) in enumerate(zip(before, after)) if old != new]


def test_every_mutate_proposal_steps_a_line_that_runs_under_the_runs_profile(tmp_path):
    repo = profiled_repo(tmp_path / "project")
    with Loop(gpu_config(repo, max_experiments=6), checks=Checks()) as loop:
        assert loop.run() == "max experiments reached"
        folder = loop.folder
    rows = results.read_rows(folder / "results.tsv")
    candidates = [r for r in rows if r.kind == "candidate"]
    assert rows[0].kind == "baseline" and rows[0].val_bpb == 1.25      # the gpu branch ran
    assert len(candidates) == 6 and not results.read_rows(folder / "invalid.tsv")
    gpu_lines = range(1, 3)     # the two lines under `if PROFILE == "gpu":`
    by_commit = {r.commit: r for r in rows}
    for row in candidates:
        assert re.match(r"GPU_(VALUE|OFFSET) ", row.description), row.description
        changes = changed_lines(repo, row)
        assert len(changes) == 1 and changes[0][0] in gpu_lines, (row.description, changes)
        assert row.val_bpb != by_commit[row.parent].val_bpb, row.description    # the step measured something


def test_the_llm_prompt_names_the_runs_profile_and_a_crash_gets_a_fix(tmp_path, scripted_llm, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    repo = profiled_repo(tmp_path / "project")

    def edit(description, old, new):
        return f"Description: {description}\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"

    constants = "SLEEP, DIE, FAIL, NOISE = 0, False, False, 0.001"
    scripted_llm.push(edit("raise", constants, constants.replace("False, False", "False, True")),
                      edit("fix: no raise", constants.replace("False, False", "False, True"),
                           constants.replace("0.001", "0.002")))
    options = dict(model="scripted", base_url=scripted_llm.base_url, retries=0)
    # fix_attempts is left at its default: the llm proposer fixes crashes, so the crash gets one fix.
    with Loop(gpu_config(repo, proposer="llm", proposer_options=options, max_experiments=2),
              checks=Checks()) as loop:
        assert loop.run() == "max experiments reached"
        folder = loop.folder
    rows = results.read_rows(folder / "results.tsv")
    assert [(r.kind, r.status) for r in rows] == [("baseline", "keep"), ("candidate", "crash"), ("fix", "noop")]  # the fix reports what its parent did on seed 0
    for number in range(2):
        prompt = scripted_llm.prompt(number)
        assert 'The experiments run with PROFILE = "gpu" (so `run.profile.name == "gpu"`) on DEVICE = "cpu".' \
            in prompt
