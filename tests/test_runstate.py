"""A run's small files: state.json round trips and refuses to guess, status.json, the tag lock, stop and abort.

Everything runs on real files in a temporary folder; the last test opens a real Loop on a real git repository
(no kernel: opening a loop reads the state and recovers, nothing is run).
"""
import dataclasses
import json
import os
import threading

import pytest
from loop_fixture import ScriptedProposer, make_repo

from autoresearch_kernel.errors import WorkspaceError
from autoresearch_kernel.journal import runstate
from autoresearch_kernel.journal.results import Row
from autoresearch_kernel.journal.runstate import FixRequest, LoopStatus, Pending, State
from autoresearch_kernel.loop.loop import Checks, Loop, LoopConfig


def a_state():
    run = Row("abc1234", 0.9, 1.0, "keep", "a change", experiment=3, kind="candidate", seed=0)
    pending = Pending(numbers=[3, 4], kind="candidate", commit="c" * 40, parent="p" * 40, description="a change",
                      usage={"prompt_tokens": 10, "completion_tokens": 2, "cost_usd": None},
                      runs=[dataclasses.asdict(run)], interrupts=1, fixes_left=1)
    return State(kept="p" * 40, flights=[pending], fix=FixRequest("f" * 40, "broke it", "Traceback ...", 1))


def test_state_round_trips_through_state_json(tmp_path):
    state = a_state()
    runstate.save_state(tmp_path, state)
    assert runstate.load_state(tmp_path) == state
    assert runstate.pending_rows(runstate.load_state(tmp_path).flights[0])[0].val_bpb == 0.9
    assert [p.name for p in tmp_path.iterdir()] == [runstate.STATE]      # the aside file was renamed over


def test_no_state_json_is_a_fresh_state(tmp_path):
    assert runstate.load_state(tmp_path) == State()


@pytest.mark.parametrize("text", ['{"kept": "abc", "pend', "[1, 2]", '{"pending": {"no_such_field": 1}}',
                                  "\xff\xfe not utf-8"])
def test_an_unreadable_state_json_says_what_to_do(tmp_path, text):
    (tmp_path / runstate.STATE).write_bytes(text.encode("latin-1"))
    with pytest.raises(WorkspaceError) as raised:
        runstate.load_state(tmp_path)
    message = str(raised.value)
    assert "\n" not in message and str(tmp_path / runstate.STATE) in message
    assert "results.tsv still holds every finished experiment" in message and "move it aside" in message


def test_write_json_replaces_the_file_whole(tmp_path):
    path = tmp_path / "x.json"
    runstate.write_json(path, {"a": 1})
    runstate.write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2} and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_two_threads_writing_one_json_file_at_once_each_replace_it_whole(tmp_path, monkeypatch):
    # Issue 22, 6: the temporary name was the pid's, so a second thread's write took the first one's file away
    # before its rename. The first writer is held just before its rename while the second writes (a barrier).
    path, replace, first = tmp_path / "status.json", os.replace, threading.current_thread()

    def replace_after_the_second(source, target):
        if threading.current_thread() is first:
            writer = threading.Thread(target=runstate.write_json, args=(path, {"writer": 2}))
            writer.start()
            writer.join(10)
        replace(source, target)

    monkeypatch.setattr(runstate.os, "replace", replace_after_the_second)
    runstate.write_json(path, {"writer": 1})
    assert json.loads(path.read_text()) == {"writer": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary left behind


def test_status_reads_back_and_a_dead_loop_reads_as_stopped(tmp_path):
    folder = tmp_path / "runs" / "t"
    folder.mkdir(parents=True)
    assert runstate.read_status(tmp_path, "t") is None                  # never started
    runstate.write_status(folder, LoopStatus(tag="t", phase="running", experiment=5, best=1.1))
    lock = runstate.TagLock(folder)
    lock.acquire("t")
    try:
        status = runstate.read_status(tmp_path, "t")
        assert (status.phase, status.experiment, status.best) == ("running", 5, 1.1) and status.updated_at > 0
    finally:
        lock.release()
    assert runstate.read_status(tmp_path, "t").phase == "stopped"       # nobody holds the lock: not running
    runstate.write_status(folder, LoopStatus(tag="t", phase="error", message="disk full"))
    assert runstate.read_status(tmp_path, "t").phase == "error"         # an error stays visible
    (folder / runstate.STATUS).write_text("{not json")
    assert runstate.read_status(tmp_path, "t") is None


def test_the_tag_lock_admits_one_loop(tmp_path):
    folder = tmp_path / "runs" / "t"
    assert not runstate.is_running(tmp_path, "t")
    first, second = runstate.TagLock(folder), runstate.TagLock(folder)
    first.acquire("t")
    assert runstate.is_running(tmp_path, "t")
    assert (folder / runstate.LOCK).read_text() == str(os.getpid())
    with pytest.raises(WorkspaceError, match=rf"run tag 't' is already running \(pid {os.getpid()}\)"):
        second.acquire("t")
    first.release()
    assert not runstate.is_running(tmp_path, "t")
    second.acquire("t")                                                 # free again
    second.release()


def test_stop_and_abort_requests_are_files(tmp_path):
    (tmp_path / "runs" / "t").mkdir(parents=True)
    runstate.request_stop(tmp_path, "t")
    runstate.request_abort(tmp_path, "t")
    assert (tmp_path / "runs" / "t" / runstate.STOP).exists() and (tmp_path / "runs" / "t" / runstate.ABORT).exists()


def test_a_loop_resumes_once_the_unreadable_state_is_moved_aside(tmp_path):
    repo = make_repo(tmp_path / "project")
    config = LoopConfig(repo=repo, tag="t", baseline_seeds=(0,), timeout_s=60)
    with Loop(config, proposer=ScriptedProposer([]), checks=Checks()) as loop:
        folder, head = loop.folder, loop.state.kept
    (folder / runstate.STATE).write_text('{"kept": "')
    resume = LoopConfig(repo=repo, tag="t", baseline_seeds=(0,), timeout_s=60, resume=True)
    with pytest.raises(WorkspaceError, match="move it aside"):
        Loop(resume, proposer=ScriptedProposer([]), checks=Checks())
    assert not runstate.is_running(repo, "t")                           # the failed start let the tag go
    (folder / runstate.STATE).rename(folder / "state.json.bad")
    with Loop(resume, proposer=ScriptedProposer([]), checks=Checks()) as loop:
        assert loop.state.kept == head


def test_a_state_json_from_before_lanes_reads_its_one_experiment_as_a_flight(tmp_path):
    old = dataclasses.asdict(a_state())
    old["pending"] = old.pop("flights")[0]
    runstate.write_json(tmp_path / runstate.STATE, old)
    assert runstate.load_state(tmp_path) == a_state()
