"""Lanes: the plan of lanes from --lanes/--devices, and the scheduler that hands back outcomes as they finish."""
import threading
import time
from pathlib import Path

import pytest

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.execution.lanes import Job, Lane, Lanes, plan_lanes
from autoresearch_kernel.execution.runner import RunResult


def test_one_lane_by_default_keeps_the_kernel_s_own_threads():
    assert plan_lanes(None, None, "auto", cpus=8) == [Lane(0, "auto", None)]


def test_cpu_lanes_share_the_cores():
    assert [(lane.device, lane.threads) for lane in plan_lanes(4, None, "cpu", cpus=8)] == [("cpu", 2)] * 4
    assert [lane.threads for lane in plan_lanes(3, None, "cpu", cpus=2)] == [1, 1, 1]  # never zero


def test_devices_give_one_lane_each_and_more_lanes_share_them():
    assert [lane.device for lane in plan_lanes(None, "cuda:0,cuda:1", "auto")] == ["cuda:0", "cuda:1"]
    lanes = plan_lanes(4, "cuda:0,cuda:1", "auto")
    assert [lane.device for lane in lanes] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert all(lane.threads is None for lane in lanes)


@pytest.mark.parametrize("devices, message", [("gpu0", "unknown device"), (" , ", "empty"), ("cuda:x", "unknown")])
def test_bad_devices_are_one_line_errors(devices, message):
    with pytest.raises(AutoresearchError, match=message):
        plan_lanes(None, devices, "auto")


def test_devices_all_without_a_gpu_says_what_to_do():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(AutoresearchError, match="found no GPU"):
        plan_lanes(None, "all", "auto")


def result(status="ok"):
    return RunResult(status, {"val_bpb": 1.0}, 0.1, Path("out.ipynb"), Path("out.log"))


def test_outcomes_come_back_in_the_order_runs_finish():
    def execute(job, lane, cancel):
        time.sleep(job.seed)  # the job's seed is its duration here
        return result()

    lanes = Lanes(plan_lanes(2, None, "cpu", cpus=2), execute, threading.Event())
    lanes.start(Job(1, "a" * 40, seed=1, kind="candidate"), lanes.free()[0])
    lanes.start(Job(2, "b" * 40, seed=0, kind="candidate"), lanes.free()[0])
    assert lanes.free() == [] and lanes.numbers_running() == {1, 2}
    first = None
    while first is None:
        first = lanes.next_finished(0.2)
    second = None
    while second is None:
        second = lanes.next_finished(0.2)
    assert (first.job.number, second.job.number) == (2, 1)
    assert first.lane.index == 1 and first.started_at <= first.finished_at and first.node
    assert not lanes.busy
    lanes.close()


def test_an_executor_bug_reaches_the_loop_s_thread():
    def execute(job, lane, cancel):
        raise ValueError("a bug")

    lanes = Lanes(plan_lanes(1, None, "cpu"), execute, threading.Event())
    lanes.start(Job(1, "a" * 40, 0, "candidate"), lanes.free()[0])
    with pytest.raises(ValueError, match="a bug"):
        while True:
            lanes.next_finished(0.2)
    assert lanes.free()  # the lane is free again
    lanes.close()


def test_the_local_scorer_scores_one_result_at_a_time_and_never_an_aborted_run():
    inside, most = [0], [0]
    lock = threading.Lock()

    def score(run_result):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.2)
        with lock:
            inside[0] -= 1
        return run_result

    lanes = Lanes(plan_lanes(3, None, "cpu"), lambda job, lane, cancel: result(), threading.Event(), score=score)
    for number in (1, 2, 3):
        lanes.start(Job(number, "a" * 40, 0, "candidate"), lanes.free()[0])
    done = 0
    while done < 3:
        done += lanes.next_finished(0.5) is not None
    assert most[0] == 1
    lanes.close()
    aborted = Lanes(plan_lanes(1, None, "cpu"), lambda job, lane, cancel: result("aborted"), threading.Event(),
                    score=lambda r: pytest.fail("scored"))
    aborted.start(Job(4, "a" * 40, 0, "candidate"), aborted.free()[0])
    outcome = None
    while outcome is None:
        outcome = aborted.next_finished(0.5)
    assert outcome.result.status == "aborted"
    aborted.close()


def test_with_overlap_a_lane_takes_its_next_job_while_its_last_run_is_scored():
    scoring, release = threading.Event(), threading.Event()

    def score(run_result):
        scoring.set()
        assert release.wait(10)
        return run_result

    lanes = Lanes(plan_lanes(1, None, "cpu"), lambda job, lane, cancel: result(), threading.Event(), score=score,
                  overlap=lambda run_result: run_result.ok)
    first, second = Job(1, "a" * 40, 0, "candidate"), Job(2, "b" * 40, 0, "candidate")
    lanes.start(first, lanes.free()[0])
    assert scoring.wait(10)
    while lanes.free() == []:  # the release comes through the loop's thread, as every change of the lanes
        assert lanes.next_finished(0.2) is None
    assert lanes.busy and lanes.numbers_running() == {1}  # scored, not yet decided: never started twice
    lanes.start(second, lanes.free()[0])
    assert lanes.numbers_running() == {1, 2}
    release.set()
    finished = []
    while len(finished) < 2:
        outcome = lanes.next_finished(0.5)
        if outcome is not None:
            finished.append(outcome.job.number)
    assert finished == [1, 2] and not lanes.busy
    lanes.close()


def test_drain_waits_for_every_job_and_frees_the_lanes_even_with_an_outcome_unread():
    cancel = threading.Event()

    def execute(job, lane, flag):
        while not flag.is_set():
            time.sleep(0.05)
        return result("aborted")

    lanes = Lanes(plan_lanes(2, None, "cpu"), execute, cancel)
    for number in (1, 2):
        lanes.start(Job(number, "a" * 40, 0, "candidate"), lanes.free()[0])
    cancel.set()
    outcomes = lanes.drain()
    assert sorted(o.job.number for o in outcomes) == [1, 2] and not lanes.busy and len(lanes.free()) == 2
    lanes.close()
