"""A coding agent's seat, driven the way an agent drives it: a separate process edits the sandbox's Python twin in
the run's worktree and calls `autoresearch step`, reading its exit codes and output (tiny fixture notebook,
real git, real kernels in the jail).
"""
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import git
import pytest
from loop_fixture import ScriptedProposer, make_repo
from test_loop import config

from autoresearch_kernel import agent, report
from autoresearch_kernel.agent.twin import TWIN
from autoresearch_kernel.dashboard.shown import NBSP, table_rows
from autoresearch_kernel.gate import GateConfig
from autoresearch_kernel.journal import results, runstate
from autoresearch_kernel.loop.loop import Loop
from autoresearch_kernel.workspace.worktree import SANDBOX

CLI = [sys.executable, "-m", "autoresearch_kernel"]

# The scripted agent: for each action, edit files (text replacements; in the notebook, within cell sources),
# call `autoresearch step`, record what it printed and its exit code. Results are saved after every step.
AGENT = textwrap.dedent("""
    import json, subprocess, sys, time
    import nbformat
    tag, actions, record = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    done = []
    for action in actions:
        for path, old, new in action.get("edits", []):
            if path.endswith(".ipynb"):
                notebook = nbformat.read(path, as_version=4)
                for cell in notebook.cells:
                    cell.source = cell.source.replace(old, new)
                nbformat.write(notebook, path)
            else:
                text = open(path).read()
                assert old in text, (path, old)
                open(path, "w").write(text.replace(old, new))
        if action.get("then") == "hang":  # killed here, between its edit and its step
            time.sleep(600)
        step = subprocess.run([sys.executable, "-m", "autoresearch_kernel", "step", "--tag", tag,
                               "-m", action["message"]], capture_output=True, text=True)
        done.append({"code": step.returncode, "out": step.stdout, "err": step.stderr})
        json.dump(done, open(record, "w"))
""")


def run_agent(worktree, tag, actions, record, wait=True):
    process = subprocess.Popen([sys.executable, "-c", AGENT, tag, json.dumps(actions), str(record)], cwd=worktree)
    if wait:
        assert process.wait(300) == 0
        return json.loads(Path(record).read_text())
    return process


def agent_init(repo, tag="t", seeds=2):
    init = subprocess.run(CLI + ["agent-init", "--tag", tag, "--baseline-seeds", str(seeds), "--timeout", "60"],
                          cwd=repo, capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr
    return init


def fields(output):
    """The `key: value` lines of a step's output (the traceback's indented lines left out)."""
    return dict(line.split(": ", 1) for line in output.splitlines() if ": " in line and not line.startswith(" "))


def edit(old, new, path=TWIN):
    return [path, old, new]


HARNESS_LINE = 'print("val_bpb:", VALUE - BONUS + NOISE * SEED)'
MAIN_ACTIONS = [
    {"message": "no edit"},                                                               # refused
    # gains well beyond the cpu profile's default noise (sd 0.0156), so that each keep is kept at once
    {"message": "VALUE 1.0 -> 0.8", "edits": [edit("VALUE = 1.0 ", "VALUE = 0.8 ")]},    # keep
    {"message": "VALUE 0.8 -> 1.5", "edits": [edit("VALUE = 0.8 ", "VALUE = 1.5 ")]},    # discard
    {"message": "raise", "edits": [edit("FAIL = False", "FAIL = True")]},                 # crash
    {"message": "both files", "edits": [edit("VALUE = 0.8 ", "VALUE = 0.7 "),
                                        edit("VALUE = 0.8 ", "VALUE = 0.6 ", SANDBOX)]},  # refused
    {"message": "notebook edited", "edits": [edit("VALUE = 0.7 ", "VALUE = 0.8 "),        # (twin put back)
                                             edit("VALUE = 0.6 ", "VALUE = 0.5 ", SANDBOX)]},  # keep
    {"message": "touch the harness", "edits": [edit(HARNESS_LINE, HARNESS_LINE + "  # mine")]},  # crash
]


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("agent") / "project")
    init = agent_init(repo)
    worktree = repo / "runs" / "t" / "worktree"
    twin_after_init = (worktree / TWIN).read_text()
    steps = run_agent(worktree, "t", MAIN_ACTIONS, repo.parent / "steps.json")
    return dict(repo=repo, worktree=worktree, init=init, steps=steps, twin_after_init=twin_after_init,
                rows=results.read_rows(repo / "runs" / "t" / "results.tsv"))


def test_agent_init_runs_the_baseline_and_writes_the_agents_files(agent_run):
    worktree = agent_run["worktree"]
    assert "VALUE = 1.0" in agent_run["twin_after_init"] and "(harness-owned: do not edit)" in agent_run["twin_after_init"]
    assert [(r.kind, r.status, r.proposer) for r in agent_run["rows"][:2]] == [("baseline", "keep", "")] * 2
    instructions = (worktree / "AGENTS.md").read_text()
    for needed in ("step --tag t -m", "status --tag t", "NEVER STOP", "NEVER ASK", TWIN, "| 10 | discard |",
                   "Make val_bpb lower."):  # the last: program.md
        assert needed in instructions
    assert "AGENTS.md" in (worktree / "CLAUDE.md").read_text()
    assert f"start it in {worktree}" in agent_run["init"].stdout


def test_each_outcome_has_its_exit_code_and_its_lines(agent_run):
    codes = [step["code"] for step in agent_run["steps"]]
    assert codes == [12, 0, 10, 11, 12, 0, 11], [s["out"] + s["err"] for s in agent_run["steps"]]
    refused, keep, discard, crash, both, notebook, harness = (fields(s["out"]) for s in agent_run["steps"])
    assert refused["status"] == "refused" and "nothing changed" in refused["reason"]
    assert keep["status"] == "keep" and keep["val_bpb"] == "0.800000" and keep["best"] == "0.800000"
    # the paired rule's first look: z = 3.09 (a tenth of its 1% false-keep budget) times the re-draw prior,
    # sqrt(2) x the noise bound (the 2 baseline runs pooled with the cpu default)
    assert keep["previous_best"] == "1.000500" and keep["margin"] == "0.107495"
    assert discard["status"] == "discard" and discard["val_bpb"] == "1.500000" and discard["best"] == "0.800000"
    assert crash["status"] == "crash" and crash["val_bpb"] == "-" and "RuntimeError: scripted failure" in crash["failure"]
    assert 'raise RuntimeError("scripted failure")' in agent_run["steps"][3]["out"]  # the traceback's end
    assert both["status"] == "refused" and "both" in both["reason"]
    assert notebook["status"] == "keep" and notebook["val_bpb"] == "0.500000"
    assert harness["status"] == "crash" and "integrity" in harness["failure"]


def test_rows_say_agent_and_the_branch_holds_the_keeps(agent_run):
    rows = agent_run["rows"]
    assert [(r.experiment, r.status, r.description, r.proposer) for r in rows[2:]] == [
        (3, "keep", "VALUE 1.0 -> 0.8", "agent"), (4, "discard", "VALUE 0.8 -> 1.5", "agent"),
        (5, "crash", "raise", "agent"), (6, "keep", "notebook edited", "agent"),
        (7, "crash", "touch the harness", "agent")]
    repo = git.Repo(agent_run["repo"])
    assert repo.heads["autoresearch/t"].commit.hexsha.startswith(rows[5].commit)
    assert repo.commit("refs/autoresearch/t/discarded/4").hexsha.startswith(rows[3].commit)
    # the twin is written again from the kept notebook; git sees neither it nor the instructions
    assert "VALUE = 0.5" in (agent_run["worktree"] / TWIN).read_text()
    assert not git.Repo(agent_run["worktree"]).is_dirty(untracked_files=True)
    assert not repo.is_dirty(untracked_files=True) and repo.active_branch.name == "main"
    changed = repo.git.diff("--name-only", rows[0].commit, rows[5].commit).splitlines()
    assert changed == [SANDBOX]


def test_status_report_and_dashboard_show_the_agents_rows(agent_run):
    status = subprocess.run(CLI + ["status", "--tag", "t"], cwd=agent_run["worktree"], capture_output=True,
                            text=True)
    assert status.returncode == 0
    assert "best: 0.500000" in status.stdout and "running: nothing" in status.stdout
    assert "notebook edited" in status.stdout
    frame = results.load(agent_run["repo"] / "runs" / "t" / "results.tsv")
    assert list(frame["proposer"][2:]) == ["agent"] * 5
    assert report.summary(frame).keep == 2
    assert any("notebook edited" in line.replace(NBSP, " ") for line, _ in table_rows(frame))


def test_step_refuses_a_tag_without_its_baseline_or_without_a_run(tmp_path):
    repo = make_repo(tmp_path / "project")
    missing = subprocess.run(CLI + ["step", "--tag", "nope", "-m", "x"], cwd=repo, capture_output=True, text=True)
    assert missing.returncode == 12 and "agent-init --tag nope" in missing.stdout
    with Loop(config(repo, proposer="agent"), proposer=ScriptedProposer([])):
        pass  # the tag exists; its baseline never ran
    early = subprocess.run(CLI + ["step", "--tag", "t", "-m", "x"], cwd=repo, capture_output=True, text=True)
    assert early.returncode == 12 and "baseline" in fields(early.stdout)["reason"]


def wait_for_running(repo, tag="t"):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = runstate.read_status(repo, tag)
        if status and status.phase == "running" and status.kind == "candidate":
            return
        time.sleep(0.2)
    pytest.fail("the step never started its experiment")


def test_a_second_step_or_a_step_during_a_loop_is_refused(tmp_path):
    repo = make_repo(tmp_path / "project")
    agent_init(repo, seeds=1)
    worktree = repo / "runs" / "t" / "worktree"
    # long enough that the second step's start (a CLI's imports, slow on a busy machine) finds it running
    slow = run_agent(worktree, "t", [{"message": "slow", "edits": [edit("SLEEP = 0 ", "SLEEP = 15 ")]}],
                     tmp_path / "slow.json", wait=False)
    wait_for_running(repo)
    second = subprocess.run(CLI + ["step", "--tag", "t", "-m", "meanwhile"], cwd=worktree, capture_output=True,
                            text=True)
    assert slow.wait(120) == 0
    assert second.returncode == 12 and "busy" in fields(second.stdout)["reason"]
    assert json.loads((tmp_path / "slow.json").read_text())[0]["code"] == 10  # 1.0 again: not better
    # the built-in loop holds the tag: the agent's step is refused and changes nothing
    with Loop(config(repo, baseline_seeds=(0,), resume=True, gate=GateConfig()), proposer=ScriptedProposer([])):
        steps = run_agent(worktree, "t", [{"message": "during a loop", "edits": [edit("VALUE = 1.0 ", "VALUE = 0.9 ")]}],
                          tmp_path / "during.json")
    assert steps[0]["code"] == 12 and "busy" in fields(steps[0]["out"])["reason"]
    assert len(results.read_rows(repo / "runs" / "t" / "results.tsv")) == 2


def test_resume_after_kills_between_the_edit_and_the_step_and_during_the_step(tmp_path):
    repo = make_repo(tmp_path / "project")
    agent_init(repo, seeds=1)
    worktree = repo / "runs" / "t" / "worktree"
    # 1. the agent is killed after its edit, before its step: the edit waits in the twin for the next agent
    hanging = run_agent(worktree, "t", [{"message": "x", "edits": [edit("VALUE = 1.0 ", "VALUE = 0.7 ")],
                                         "then": "hang"}], tmp_path / "hang.json", wait=False)
    deadline = time.monotonic() + 30
    while "VALUE = 0.7" not in (worktree / TWIN).read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    hanging.send_signal(signal.SIGKILL)
    hanging.wait(10)
    # 2. the next agent adds to it and steps; that step is killed mid-experiment
    twin = worktree / TWIN
    twin.write_text(twin.read_text().replace("SLEEP = 0 ", "SLEEP = 6 "))
    step = subprocess.Popen(CLI + ["step", "--tag", "t", "-m", "lower VALUE, slowly"], cwd=worktree)
    wait_for_running(repo)
    time.sleep(1.0)
    step.send_signal(signal.SIGKILL)
    step.wait(10)
    assert len(results.read_rows(repo / "runs" / "t" / "results.tsv")) == 1  # no row yet
    # 3. a step again (the worktree as the killed step left it): the interrupted experiment is finished
    steps = run_agent(worktree, "t", [{"message": "lower VALUE, slowly"}], tmp_path / "again.json")
    assert steps[0]["code"] == 0, steps[0]
    out = fields(steps[0]["out"])
    assert out["experiment"] == "2" and out["val_bpb"] == "0.700000" and out["previous_best"] == "1.000000"
    rows = results.read_rows(repo / "runs" / "t" / "results.tsv")
    assert [(r.experiment, r.status, r.description) for r in rows] == [
        (1, "keep", "baseline (seed 0)"), (2, "keep", "lower VALUE, slowly")]
    assert "SLEEP = 6" in twin.read_text() and not git.Repo(worktree).is_dirty(untracked_files=True)
    assert agent.EXIT_CODES == {"keep": 0, "discard": 10, "noop": 10, "crash": 11, "refused": 12, "over-budget": 13,
                                "suspect": 14}
    assert set(agent.EXIT_CODES) >= set(results.STATUSES) - {"stale"}  # a step never runs beside another
