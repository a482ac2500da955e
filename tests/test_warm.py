"""Kernels started ahead (execution/warm.py, harness/warm.py): real kernels in real jails on tiny notebooks, and
the real training notebook scored the same warm as cold.

A kernel started ahead must run its warm-up before the notebook and leave no trace of it, run one notebook
only, hand over a folder named as the experiment's with nothing of the slot left, be replaced when it died
waiting, start ahead only where no run's figure can change, and see nothing a cold kernel could not: not the
next kernel waiting beside it, not the slots' folder.
"""
import json
import os
import threading

import nbformat
import pytest
from test_integrity import tiny_template

from autoresearch_kernel import tasks
from autoresearch_kernel.execution.lanes import Job, Lane
from autoresearch_kernel.execution.launch import experiment_jail, run_experiment, warm_kernels
from autoresearch_kernel.execution.runner import Kernel
from autoresearch_kernel.execution.spec import ExperimentSpec
from autoresearch_kernel.execution.warm import WarmKernels
from autoresearch_kernel.harness import data as harness_data
from autoresearch_kernel.harness import warm as harness_warm
from autoresearch_kernel.integrity import jail
from autoresearch_kernel.integrity.environment import experiment_env
from autoresearch_kernel.workspace.runfolder import RunFolder

JAILED = jail.unavailable_reason() is None
LANE = Lane(0, "cpu")
WRITE_METRICS = "import json\njson.dump({'status': 'ok', 'val_bpb': 1.0}, open(METRICS_PATH, 'w'))"


def notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell('METRICS_PATH = "metrics.json"', metadata={"tags": ["parameters"]})
    nb.cells = [parameters] + [nbformat.v4.new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def pool(tmp_path, warm_up="", ahead=True) -> WarmKernels:
    """Kernels started ahead in slots under tmp_path, jailed where bubblewrap runs (the loop's way)."""
    slots = tmp_path / "kernels"
    make_jail = (lambda lane, folder: jail.Jail(writable=(folder,))) if JAILED else (lambda lane, folder: None)
    return WarmKernels(slots, make_jail, lambda lane: experiment_env("cpu"), warm_up, ahead)


def run_in(kernel_and_folder, source, name="0001-abcdef0"):
    kernel, folder = kernel_and_folder
    copy = folder / f"{name}.source.ipynb"
    copy.write_bytes(source.read_bytes())
    return kernel, kernel.run(copy, folder / f"{name}.ipynb", {"METRICS_PATH": f"{name}.metrics.json"},
                              timeout_s=120)


def run_warm(tmp_path, source, warm_up):
    """(the kernel, its result): `source` run in a kernel started ahead with `warm_up`, the pool closed after."""
    kernels = pool(tmp_path, warm_up=warm_up)
    try:
        return run_in(kernels.take(LANE), source)
    finally:
        kernels.close()


def test_the_warm_up_runs_before_the_notebook_and_leaves_no_trace(tmp_path):
    source = notebook(tmp_path / "nb.ipynb", """\
import sys
assert "decimal" in sys.modules, "the warm-up did not run first"
assert not [name for name in dir() if "warm" in name or name == "decimal"], dir()""", WRITE_METRICS)
    kernel, result = run_warm(tmp_path, source, "__import__('decimal')")
    assert result.status == "ok", result.failure
    executed = nbformat.read(result.output_path, as_version=4)
    assert [cell.execution_count for cell in executed.cells] == [1, 2, 3, 4]  # papermill's parameters cell too
    assert not kernel.alive  # one notebook, then the kernel is gone
    assert result.log_path == result.output_path.with_suffix(".log") and result.log_path.exists()


def test_a_failing_warm_up_leaves_the_notebook_to_fail_or_not_on_its_own(tmp_path):
    source = notebook(tmp_path / "nb.ipynb", WRITE_METRICS)
    _, result = run_warm(tmp_path, source, "raise ValueError('no data here')")
    assert result.status == "ok", result.failure
    assert "warm-up failed: ValueError: no data here" in result.log_path.read_text()


def test_ahead_the_next_kernel_starts_at_once_else_only_after_the_run(tmp_path):
    ahead, after = pool(tmp_path / "a"), pool(tmp_path / "b", ahead=False)
    try:
        first = ahead.take(LANE)
        assert LANE.index in ahead._waiting and ahead._waiting[LANE.index][1] != first[1]
        second = after.take(LANE)
        assert LANE.index not in after._waiting  # a time budget's run trains alone
        after.after_run(LANE)
        assert LANE.index in after._waiting
    finally:
        for kernel, _ in (first, second):
            kernel.close()
        ahead.close()
        after.close()
    assert os.listdir(tmp_path / "a" / "kernels") == [first[1].name]  # close removed the waiting one's
    for kernel, _ in (first, second):
        assert not kernel.alive


def test_when_the_loop_starts_every_lane_gets_a_kernel_ahead_but_not_under_a_time_budget(tmp_path):
    lanes = [Lane(0, "cpu"), Lane(1, "cpu"), Lane(2, "cpu")]
    ahead, after = pool(tmp_path / "a"), pool(tmp_path / "b", ahead=False)
    try:
        ahead.fill(lanes)
        after.fill(lanes)
        assert sorted(ahead._waiting) == [0, 1, 2] and after._waiting == {}
        kernels = [kernel for kernel, _ in ahead._waiting.values()]
        ahead.fill(lanes)  # one kernel per lane at most
        assert [kernel for kernel, _ in ahead._waiting.values()] == kernels
    finally:
        ahead.close()
        after.close()
    assert not any(kernel.alive for kernel in kernels)


def test_the_warm_up_serves_only_a_notebook_whose_harness_cells_use_the_harness():
    template = nbformat.read(os.path.join(os.path.dirname(__file__), "..", "notebooks", "train_template.ipynb"),
                             as_version=4)
    assert harness_warm.serves(template)
    sleeper = nbformat.v4.new_notebook()
    sleeper.cells = [nbformat.v4.new_code_cell("import time\ntime.sleep(1)"),
                     nbformat.v4.new_code_cell("import json", metadata={"tags": ["harness"]})]
    assert not harness_warm.serves(sleeper)
    # the harness's name in the agent's own cells is not the harness cells' use of it
    sleeper.cells.append(nbformat.v4.new_code_cell("from autoresearch_kernel import harness"))
    assert not harness_warm.serves(sleeper)


def test_a_kernel_that_died_waiting_is_replaced_and_close_removes_the_waiting(tmp_path):
    source = notebook(tmp_path / "nb.ipynb", WRITE_METRICS)
    kernels = pool(tmp_path, ahead=False)
    kernels.after_run(LANE)
    dead, dead_folder = kernels._waiting[LANE.index]
    dead.close()
    try:
        taken = kernels.take(LANE)
        assert taken[1] != dead_folder and not dead_folder.exists()
        _, result = run_in(taken, source)
        assert result.status == "ok", result.failure
        kernels.after_run(LANE)
        waiting, folder = kernels._waiting[LANE.index]
    finally:
        kernels.close()
    assert not waiting.alive and not folder.exists()


@pytest.mark.skipif(not JAILED, reason="bubblewrap cannot run here")
def test_a_candidate_sees_neither_the_kernel_waiting_beside_it_nor_the_slots(tmp_path):
    """The attack a clever candidate would try: find the next experiment's kernel (its process, its connection
    file, its folder) and write into it, to pass its own code on or spoil a rival's run."""
    source = notebook(tmp_path / "nb.ipynb", """\
import glob, json, os
kernels = [pid for pid in os.listdir("/proc") if pid.isdigit()
           and b"ipykernel" in open(f"/proc/{pid}/cmdline", "rb").read()]
from ipykernel import get_connection_file
own = get_connection_file()
connections = [own] + [path for path in glob.glob(os.path.join(os.path.dirname(own), "*.json")) if path != own]
beside = sorted(os.listdir(".."))
planted = []
for folder in glob.glob("../*") + glob.glob("../../*") + glob.glob("../../.warm/*"):
    try:
        open(os.path.join(folder, "planted.py"), "w").write("stolen = True")
        planted.append(os.path.realpath(folder))
    except OSError:
        pass
json.dump({"status": "ok", "kernels": kernels, "connections": connections, "beside": beside,
           "planted": planted}, open(METRICS_PATH, "w"))""")
    kernels = pool(tmp_path)
    try:
        taken = kernels.take(LANE)
        waiting_folder = kernels._waiting[LANE.index][1]
        _, result = run_in(taken, source)
    finally:
        kernels.close()
    assert result.status == "ok", result.failure
    found = result.metrics
    assert len(found["kernels"]) == 1 and len(found["connections"]) == 1  # its own, nothing else
    assert found["beside"] == [taken[1].name]
    assert set(found["planted"]) <= {str(taken[1])}  # its own folder at most, by any path
    assert not (waiting_folder / "planted.py").exists()


def test_a_preloaded_training_split_is_taken_once(prepared_dir):
    harness_data.preload(prepared_dir, "cpu")
    first = harness_data.load_prepared(prepared_dir, "cpu", validation=False)
    assert harness_data.load_prepared(prepared_dir, "cpu", validation=False) is not first  # verified again
    harness_data.preload(prepared_dir / "nowhere", "cpu")  # a DataError is left to the experiment's own load
    assert not harness_data._preloaded


@pytest.mark.slow
def test_the_training_notebook_scores_the_same_in_a_kernel_started_ahead(prepared_dir, tmp_path):
    """The training notebook (its model shrunk to one narrow layer, as test_integrity's loops run it), a few steps
    on the same seed: cold and warm, jailed where bubblewrap runs, scored by the loop's scorer. The warm run's
    folder is the experiment's, with nothing of its slot left."""
    from autoresearch_kernel.execution.scoring import score_result
    from autoresearch_kernel.integrity.scorer import Scorer

    spec = ExperimentSpec(task=tasks.load(tasks.DEFAULT, tmp_path), profile="cpu", data_dir=str(prepared_dir),
                          jailed=JAILED, timeout_s=300, budget_tokens=2 * 2048)
    folder = RunFolder(tmp_path / "runs" / "t")
    template = tiny_template()
    jobs = [Job(1, "a" * 40, 3, "baseline"), Job(2, "b" * 40, 3, "baseline")]
    for job in jobs:
        folder.candidate(job.number, job.commit).parent.mkdir(parents=True, exist_ok=True)
        folder.candidate(job.number, job.commit).write_text(template)
    cold = run_experiment(spec, folder, jobs[0], LANE, threading.Event())
    kernels = warm_kernels(spec, folder, nbformat.reads(template, as_version=4))
    try:
        warm = run_experiment(spec, folder, jobs[1], LANE, threading.Event(), kernels)
    finally:
        kernels.close()
    assert cold.ok and warm.ok, (cold.failure, warm.failure)
    assert warm.output_path.parent == folder.experiment(2, "b" * 40)
    assert sorted(p.name for p in warm.output_path.parent.iterdir()) == sorted(
        p.name.replace("0001-aaaaaaa", "0002-bbbbbbb") for p in cold.output_path.parent.iterdir())
    assert not any(p.name.endswith(".source.ipynb") for p in warm.output_path.parent.iterdir())
    assert not list(folder.kernel_slots.iterdir())
    with Scorer(str(prepared_dir), "cpu") as scorer:
        scored = [score_result(result, scorer, "cpu")[0] for result in (cold, warm)]
    assert scored[0].metrics["val_bpb"] == scored[1].metrics["val_bpb"]
    for result in (cold, warm):
        assert json.loads(result.output_path.with_suffix(".metrics.json").read_text())["status"] == "ok"


def test_the_jail_of_a_kernel_started_ahead_is_the_experiments(tmp_path, prepared_dir):
    spec = ExperimentSpec(task=tasks.load(tasks.DEFAULT, tmp_path), profile="cpu", data_dir=str(prepared_dir),
                          jailed=True, timeout_s=300)
    made = experiment_jail(spec, LANE, tmp_path / "slot")
    assert made.writable == (tmp_path / "slot",)
    assert set(made.readonly) == set(harness_data.training_files(str(prepared_dir), "cpu"))
    assert made.masked and made.limits is not None


def test_unused_kernel_closed_without_a_request_leaves_nothing_running(tmp_path):
    kernel = Kernel(tmp_path, experiment_env("cpu"))
    kernel.close()
    assert not kernel.alive
