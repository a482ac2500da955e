"""The Ray executor on a real Ray cluster on 127.0.0.1 (started once for the module), with real kernels in the
real jail, real git and the loop's tiny fixture notebook (loop_fixture.py).

It shows: a loop with two lanes on Ray writes its rows and the executed notebooks into the run folder, each
row naming its node; a worker killed mid-experiment runs it again once, and a second kill makes it a crash
that says why; a resume runs the experiments an abort left in flight, once each; a run of the real training
notebook is scored by the node's scorer. No row is ever lost or written twice.
"""
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from loop_fixture import ScriptedProposer, make_repo

import autoresearch_kernel
from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.execution.ray_node import (
    SCRATCH,
    Expected,
    PreparedData,
    check_node,
    package_fingerprint,
    prepared_data,
)
from autoresearch_kernel.execution.runner import kill_tree
from autoresearch_kernel.execution.scoring import SCORED_HEADING
from autoresearch_kernel.gate import GateConfig
from autoresearch_kernel.journal import results, runstate
from autoresearch_kernel.loop.guard import Guard
from autoresearch_kernel.loop.loop import Loop, LoopConfig

FIXTURE_GATE = GateConfig(z=2.0, min_margin=0.001, confirm_band=1.0, prior_sd=0.001, rule="means")  # as test_loop
WORKER = "ray::LaneWorker"  # the title Ray gives a lane's actor process


# -- the cluster ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_cluster(temp_dir: Path) -> None:
    """Kill this cluster's processes, by id: those whose command line names its temporary folder (the GCS,
    the raylet, Ray's own agents), with every descendant (the workers, their jails).

    Not `ray stop --force`: that kills every Ray process of the machine, other people's clusters included."""
    ours = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    for process in psutil.process_iter(["cmdline"]):
        if process.pid not in ours and any(str(temp_dir) in part for part in process.info["cmdline"] or ()):
            kill_tree(process.pid)


@pytest.fixture(scope="module")
def cluster():
    """The address of a one-node Ray cluster on 127.0.0.1 with 2 CPUs; stopped after the module, whatever happens."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    address = f"127.0.0.1:{free_port()}"
    package = str(Path(autoresearch_kernel.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=package)  # the node runs this checkout, as the loop does
    ray = str(Path(sys.executable).parent / "ray")
    try:
        started = time.monotonic()
        done = subprocess.run(
            [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={address.rsplit(':', 1)[1]}",
             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}"],
            env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stdout + done.stderr
        print(f"ray start: {time.monotonic() - started:.1f} s")
        yield address
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def config(repo, address, data_dir, **overrides):
    settings = dict(repo=repo, tag="t", baseline_seeds=(0,), timeout_s=60, pause_seconds=0.3, fix_attempts=0,
                    gate=FIXTURE_GATE, executor="ray", ray_address=address, data_dir=str(data_dir))
    settings.update(overrides)
    return LoopConfig(**settings)


def running_workers() -> list[psutil.Process]:
    """The lanes' actor processes that are running a notebook now (a kernel host below them, in its jail)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if " ".join(process.info["cmdline"] or ()).startswith(WORKER) and any(
                    "kernel_host" in " ".join(child.cmdline()) for child in process.children(recursive=True)):
                found.append(process)
        except psutil.NoSuchProcess:
            pass
    return found


def left_running(commits) -> list[str]:
    """Processes still running one of these commits' notebooks (a jail that outlived its worker): a jail names
    the experiment's folder, notebooks/<n>-<commit>/, in its command line, a kernel host works in it."""
    marks, left = [f"-{commit[:7]}" for commit in commits], []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        line = " ".join(process.info["cmdline"] or ()) + " " + (process.info["cwd"] or "")
        if any(mark in line for mark in marks):
            left.append(line)
    return left


def in_thread(loop: Loop) -> threading.Thread:
    thread = threading.Thread(target=lambda: setattr(loop, "why", loop.run()))
    thread.start()
    return thread


# -- the node's checks (no cluster needed) -------------------------------------------------------------------
def test_a_node_must_run_the_loops_code_and_hold_its_data(tmp_path, prepared_dir):
    data = prepared_data(str(prepared_dir), "cpu")
    expected = Expected(autoresearch_kernel.__version__, package_fingerprint(), str(tmp_path / "node"), "cpu", data,
                        jailed=False, scored_outside=False)
    check_node(expected, "n1")  # no data there: the embedded corpus is prepared, to the same files
    assert prepared_data(str(tmp_path / "node"), "cpu") == data
    with pytest.raises(AutoresearchError, match=r"^node n1 runs autoresearch_kernel \S+ \(sources \w{12}\) but the "
                                                r"loop runs 0\.0\.1 \(sources \w{12}\): install"):
        check_node(dataclasses.replace(expected, version="0.0.1"), "n1")
    other = PreparedData("embedded", {**data.files, "tokenizer.json": "0" * 64})
    with pytest.raises(AutoresearchError, match="^node n1 holds other prepared data"):
        check_node(dataclasses.replace(expected, data=other), "n1")
    elsewhere = dataclasses.replace(expected, data_dir=str(tmp_path / "empty"), data=PreparedData("climbmix", data.files))
    with pytest.raises(AutoresearchError, match=r"^node n1 has no prepared data .* --source climbmix"):
        check_node(elsewhere, "n1")


def test_a_cluster_address_where_nothing_listens_is_a_clear_error(tmp_path, prepared_dir):
    repo = make_repo(tmp_path / "project")
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(AutoresearchError, match=f"^nothing answers at {address} .*: start it with `ray start --head`"):
        Loop(config(repo, address, prepared_dir), proposer=ScriptedProposer([]))
    with Loop(config(repo, address, prepared_dir, executor="local", resume=True, max_experiments=0),
              proposer=ScriptedProposer([])):
        pass  # the failed start released the tag


# -- loops on the cluster -------------------------------------------------------------------------------------
def test_a_node_that_runs_other_code_stops_the_loop_with_a_message(cluster, tmp_path, prepared_dir, monkeypatch):
    repo = make_repo(tmp_path / "project")
    monkeypatch.setattr(autoresearch_kernel, "__version__", "0.0.1")  # the loop's side only: the node has the real one
    with Loop(config(repo, cluster, prepared_dir), proposer=ScriptedProposer([])) as loop:
        with pytest.raises(AutoresearchError, match=r"^node \S+ runs autoresearch_kernel \S+ \(sources \w{12}\) but "
                                                    r"the loop runs 0\.0\.1"):
            loop.run()
        assert loop.status.phase == "error"
    assert not loop.results_path.exists() or results.read_rows(loop.results_path) == []


def test_two_lanes_on_ray_write_rows_notebooks_and_nodes(cluster, tmp_path, prepared_dir):
    repo = make_repo(tmp_path / "project")
    script = [("better", {"VALUE": 0.9}), ("worse", {"VALUE": 1.5})]
    with Loop(config(repo, cluster, prepared_dir, baseline_seeds=(0, 1), lanes=2, max_experiments=2),
              proposer=ScriptedProposer(script)) as loop:
        why = loop.run()
    rows = results.read_rows(loop.results_path)
    assert why == "max experiments reached"
    assert sorted(r.experiment for r in rows) == [1, 2, 3, 4]
    assert {r.description: r.status for r in rows if r.kind == "candidate"} == {"better": "keep", "worse": "discard"}
    assert {r.lane for r in rows} == {1, 2}  # both lanes ran
    assert all(r.node and r.node != os.uname().nodename for r in rows), [r.node for r in rows]  # "<ip>/<node id>"
    for row in rows:  # the executed notebooks came back from the node into the run folder
        executed = nbformat.read(loop.folder / row.notebook, as_version=4)
        assert any("val_bpb:" in out.get("text", "") for cell in executed.cells for out in cell.get("outputs", []))
        assert (loop.folder / row.notebook).with_suffix(".metrics.json").is_file()
        assert row.notebook.startswith(f"notebooks/{row.experiment:04d}-{row.commit}/")


def test_a_killed_worker_runs_it_again_once_then_it_is_a_crash_that_says_why(cluster, tmp_path, prepared_dir):
    repo = make_repo(tmp_path / "project")
    script = [("killed once", {"VALUE": 0.9, "SLEEP": 6}), ("killed twice", {"VALUE": 0.8, "SLEEP": 6})]
    loop = Loop(config(repo, cluster, prepared_dir, lanes=1, max_experiments=2), proposer=ScriptedProposer(script))
    thread = in_thread(loop)
    kills = {2: 1, 3: 2}  # experiment -> how often its worker is killed mid-run
    killed = []
    while thread.is_alive():
        number = next((lane["experiment"] for lane in loop.status.lanes if lane["experiment"]), None)
        workers = running_workers()
        if workers and kills.get(number):
            workers[0].send_signal(signal.SIGKILL)
            killed.append(workers[0].pid)
            workers[0].wait(10)
            kills[number] -= 1
        time.sleep(0.1)
    loop.close()
    rows = results.read_rows(loop.results_path)
    assert kills == {2: 0, 3: 0} and loop.why == "max experiments reached"
    assert [(r.experiment, r.description, r.status) for r in rows] == [
        (1, "baseline (seed 0)", "keep"), (2, "killed once", "keep"), (3, "killed twice", "crash")]
    assert rows[1].val_bpb == 0.9 and rows[1].node
    # the machine's fault, not the code's: marked so, and never a duplicate that blocks this code (records.py)
    assert rows[2].failure.startswith("machine fault: crash: WorkerLost: lost: the Ray worker died 2 times while "
                                      "running it"), rows[2].failure
    assert (loop.folder / rows[2].notebook).is_file()  # the candidate, with a note saying it was lost
    # the next worker on the node removed the folder a killed one left (the last one's waits for the next)
    assert [pid for pid in killed[:-1] if list(Path(tempfile.gettempdir()).glob(f"{SCRATCH}{pid}-*"))] == []
    # the killed workers' jails died with them: the kernel host ends when its worker's end of the pipe closes
    # (bwrap's --die-with-parent alone is bound to the thread that started the jail)
    assert left_running(r.commit for r in rows) == []


def test_a_resume_runs_the_experiments_an_abort_left_in_flight_once_each(cluster, tmp_path, prepared_dir):
    repo = make_repo(tmp_path / "project")
    script = [("slow better", {"VALUE": 0.9, "SLEEP": 12}), ("slow worse", {"VALUE": 1.5, "SLEEP": 12})]
    loop = Loop(config(repo, cluster, prepared_dir, lanes=2, max_experiments=2), proposer=ScriptedProposer(script))
    thread = in_thread(loop)
    deadline = time.monotonic() + 120
    while len(running_workers()) < 2 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len([lane for lane in loop.status.lanes if lane["experiment"]]) == 2, "two experiments in flight"
    started = time.monotonic()
    loop.abort()
    thread.join(60)
    loop.close()
    assert loop.why == "aborted" and time.monotonic() - started < 30
    assert [r.experiment for r in results.read_rows(loop.results_path)] == [1]  # no row for what was aborted
    assert sorted(f.description for f in runstate.load_state(loop.folder).flights) == ["slow better", "slow worse"]

    with Loop(LoopConfig.resumed(repo, "t", max_experiments=0), proposer=ScriptedProposer([])) as again:
        assert again.config.executor == "ray"  # the run's stored settings
        why = again.run()
    rows = results.read_rows(again.results_path)
    assert why == "max experiments reached"
    assert sorted((r.experiment, r.description, r.status) for r in rows) == [
        (1, "baseline (seed 0)", "keep"), (2, "slow better", "keep"), (3, "slow worse", "discard")]
    assert runstate.load_state(again.folder).flights == []


def test_a_training_run_is_scored_by_the_nodes_scorer(cluster, tmp_path, prepared_dir):
    from test_integrity import STEP_TOKENS
    from test_integrity import make_repo as make_training_repo

    repo = make_training_repo(tmp_path / "project")
    guard = Guard()
    with Loop(config(repo, cluster, prepared_dir, device="cpu", budget_tokens=2 * STEP_TOKENS, timeout_s=300,
                     max_experiments=0), checks=guard) as loop:
        loop.run()
    (row,) = results.read_rows(loop.results_path)
    assert row.status == "keep" and row.val_bpb > 0 and row.node, row.failure
    assert guard.scored_outside and guard.scores and guard.scores[0].val_bpb == pytest.approx(row.val_bpb, abs=1e-6)
    executed = nbformat.read(loop.folder / row.notebook, as_version=4)
    assert executed.cells[-1].source.startswith(SCORED_HEADING)  # the node's scorer appended its summary
    assert (loop.folder / row.notebook).with_suffix(".program.pt2").is_file()  # the kept model came back
    assert "scored" in loop.run_folder.integrity_log.read_text()
