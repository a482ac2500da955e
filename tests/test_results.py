"""results.tsv: the reference's formats, atomic appends, torn-line repair, and loading both file shapes."""
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from autoresearch_kernel.journal import results
from autoresearch_kernel.journal.results import COLUMNS, Row


def _row(n, status="keep", val=0.9979, **extra):
    return Row(commit="abcdef1234567", val_bpb=val, memory_gb=44.0039, status=status,
               description=f"idea\t{n}\nsecond line", experiment=n, **extra)


def test_header_starts_with_the_reference_columns(tmp_path):
    path = results.ensure_file(tmp_path / "results.tsv")
    header = path.read_text().splitlines()[0].split("\t")
    assert header[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert tuple(header) == COLUMNS


def test_row_formats_match_the_reference(tmp_path):
    path = tmp_path / "results.tsv"
    results.append(path, _row(1), _row(2, status="crash", val=None, failure="Boom:\tbad\nthing"))
    lines = path.read_text().splitlines()
    keep = lines[1].split("\t")
    crash = lines[2].split("\t")
    assert keep[:5] == ["abcdef1", "0.997900", "44.0", "keep", "idea 1 second line"]
    assert crash[:4] == ["abcdef1", "0.000000", "0.0", "crash"]
    assert crash[COLUMNS.index("failure")] == "Boom: bad thing"
    assert all(len(line.split("\t")) == len(COLUMNS) for line in lines)


def test_round_trip_through_rows(tmp_path):
    path = tmp_path / "results.tsv"
    original = _row(3, kind="confirm", parent="1234567aaaa", seed=2, wall_seconds=12.34, margin=0.002,
                    best=0.99, noise_std=0.001, prompt_tokens=120, completion_tokens=30, cost_usd=0.0012,
                    notebook="notebooks/0003-abcdef1.ipynb", finished_at="2026-01-01T00:00:00")
    results.append(path, original, _row(4, status="crash", val=None, failure="timeout"))
    rows = results.read_rows(path)
    assert rows[0].val_bpb == pytest.approx(0.9979)
    assert rows[0].memory_gb == pytest.approx(44.0)
    assert (rows[0].kind, rows[0].parent, rows[0].seed, rows[0].prompt_tokens) == ("confirm", "1234567", 2, 120)
    assert rows[0].cost_usd == pytest.approx(0.0012)
    assert rows[1].val_bpb is None and rows[1].memory_gb is None and rows[1].cost_usd is None
    assert rows[1].failure == "timeout"


def test_an_over_budget_row_keeps_its_score_or_reads_none_when_stopped_before_scoring(tmp_path):
    path = tmp_path / "results.tsv"
    results.append(path, _row(1, status="over-budget"), _row(2, status="over-budget", val=None))
    scored, stopped = results.read_rows(path)
    assert scored.val_bpb == pytest.approx(0.9979)
    assert stopped.val_bpb is None and stopped.memory_gb is None  # written 0.000000, read as no value


def test_numeric_looking_commit_stays_text(tmp_path):
    path = tmp_path / "results.tsv"
    results.append(path, Row("1234500", 1.0, 1.0, "keep", "d", experiment=1, parent="0000001"))
    assert results.read_rows(path)[0].commit == "1234500"
    assert results.load(path)["commit"].tolist() == ["1234500"]


def test_unknown_status_is_refused(tmp_path):
    with pytest.raises(ValueError, match="status"):
        results.append(tmp_path / "r.tsv", _row(1, status="maybe"))


def test_torn_final_line_is_ignored_and_repaired_by_the_next_append(tmp_path):
    path = tmp_path / "results.tsv"
    results.append(path, _row(1))
    with open(path, "a") as handle:
        handle.write("abcdef1\t0.99")  # what a kill in the middle of a naive write would leave
    assert len(results.load(path)) == 1
    results.append(path, _row(2))
    assert [r.experiment for r in results.read_rows(path)] == [1, 2]
    assert path.read_text().count("\n") == 3


def test_concurrent_writers_never_interleave_rows(tmp_path):
    path = tmp_path / "results.tsv"
    script = textwrap.dedent(f"""
        import sys
        from autoresearch_kernel.journal import results
        from autoresearch_kernel.journal.results import Row
        for n in range(200):
            results.append({str(path)!r}, Row("abcdef1", 1.0, 1.0, "keep", "x" * 500, experiment=int(sys.argv[1]) * 1000 + n))
    """)
    writers = [subprocess.Popen([sys.executable, "-c", script, str(i)]) for i in range(2)]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    rows = results.read_rows(path)
    assert len(rows) == 400
    assert sorted(r.experiment for r in rows) == sorted([n for n in range(200)] + [1000 + n for n in range(200)])
    assert all(r.description == "x" * 197 + "..." for r in rows)  # long descriptions are cut to 200
    assert all(len(line.split("\t")) == len(COLUMNS) for line in path.read_text().splitlines())


def test_a_writer_waits_for_one_midway_through_its_row_instead_of_cutting_it_as_torn(tmp_path):
    # The interleaving that lost a row under load: one writer read another's row half-written, took it for
    # the torn tail of a kill, and truncated it.
    path = results.ensure_file(tmp_path / "results.tsv")
    line = results.format_row(Row("abcdef1", 1.0, 1.0, "keep", "first", experiment=1)).encode()
    appending = threading.Thread(target=results.append, args=(path, Row("abcdef2", 1.0, 1.0, "keep", "second",
                                                                          experiment=2)))
    with open(path, "ab") as other:  # another writer, its lock taken, midway through its row
        fcntl.flock(other, fcntl.LOCK_EX)
        other.write(line[:40])
        other.flush()
        appending.start()
        appending.join(timeout=1.0)
        assert appending.is_alive()  # it waits its turn
        other.write(line[40:])
        other.flush()
        fcntl.flock(other, fcntl.LOCK_UN)
    appending.join(timeout=30)
    assert [r.experiment for r in results.read_rows(path)] == [1, 2]


def test_a_killed_writer_leaves_only_whole_rows(tmp_path):
    path = tmp_path / "results.tsv"
    script = textwrap.dedent(f"""
        from autoresearch_kernel.journal import results
        from autoresearch_kernel.journal.results import Row
        n = 0
        while True:
            n += 1
            results.append({str(path)!r}, Row("abcdef1", 1.0, 1.0, "keep", "y" * 150, experiment=n))
    """)
    writer = subprocess.Popen([sys.executable, "-c", script])
    try:
        import time
        deadline = time.time() + 30
        while (not path.exists() or path.stat().st_size < 20000) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
    rows = results.read_rows(path)
    assert len(rows) > 10
    assert [r.experiment for r in rows] == list(range(1, len(rows) + 1))


def test_loads_the_reference_five_column_file(tmp_path):
    path = tmp_path / "results.tsv"
    path.write_text(
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
        "b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04\n"
        "c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation\n"
        "d4e5f6g\t0.000000\t0.0\tcrash\tdouble model width (OOM)\n"
    )
    frame = results.load(path)
    assert frame["experiment"].tolist() == [1, 2, 3, 4]
    assert frame["status"].tolist() == ["keep", "keep", "discard", "crash"]
    assert frame["val_bpb"].iloc[1] == pytest.approx(0.9932)
    rows = results.read_rows(path)
    assert rows[3].val_bpb is None and rows[0].kind == "candidate"


def test_missing_file_loads_empty(tmp_path):
    assert len(results.load(tmp_path / "none.tsv")) == 0
    assert results.read_rows(tmp_path / "none.tsv") == []


def test_a_file_from_an_older_version_gains_the_new_columns(tmp_path):
    path = tmp_path / "results.tsv"
    old_columns = results.COLUMNS[:-2]  # before `sandbox` and `proposer` existed
    old_row = results.format_row(Row("abcdef1", 1.5, 1.0, "keep", "baseline", experiment=1))
    path.write_text("\t".join(old_columns) + "\n" + "\t".join(old_row.split("\t")[:len(old_columns)]) + "\n")
    results.ensure_file(path)
    results.append(path, Row("1234567", 1.4, 1.0, "keep", "better", experiment=2, sandbox="bwrap", proposer="llm"))
    rows = results.read_rows(path)
    assert [(r.experiment, r.sandbox, r.proposer) for r in rows] == [(1, "", ""), (2, "bwrap", "llm")]


def test_the_console_line_reads_a_baseline_seed_as_baseline_not_keep():
    seed = results.console_line(Row("abcdef1", 1.5, 1.0, "keep", "baseline (seed 0)", experiment=1, kind="baseline"))
    kept = results.console_line(Row("1234567", 1.4, 1.0, "keep", "better", experiment=2))
    assert " baseline " in seed and " keep " not in seed
    assert " keep " in kept


def _blocked_on_a_lock(path, timeout=30.0):
    """Wait until some process or thread waits for a flock on `path` (/proc/locks lists waiters with "->")."""
    inode = os.stat(path).st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open("/proc/locks") as locks:
            if any(line.split()[1] == "->" and line.split()[6].endswith(f":{inode}") for line in locks
                   if len(line.split()) > 6):
                return True
        time.sleep(0.01)
    return False


def test_a_writer_that_waited_while_the_header_was_upgraded_appends_to_the_new_file(tmp_path):
    # An older file's header is upgraded by replacing the file. A writer that opened the old file and waited
    # for its lock meanwhile must not append to the replaced copy, which nobody reads again.
    path = results.ensure_file(tmp_path / "results.tsv")
    appending = threading.Thread(target=results.append, args=(path, _row(2)))
    with open(path, "ab") as upgrader:
        fcntl.flock(upgrader, fcntl.LOCK_EX)
        appending.start()
        assert _blocked_on_a_lock(path)
        upgraded = tmp_path / "upgraded.tsv"
        upgraded.write_text(results.HEADER + results.format_row(_row(1)))
        os.replace(upgraded, path)
        fcntl.flock(upgrader, fcntl.LOCK_UN)
    appending.join(timeout=30)
    assert [r.experiment for r in results.read_rows(path)] == [1, 2]


def test_rows_as_written_are_the_rows_read_back():
    [written] = results.as_written([_row(1, val=1.23456789, best=1.2345678, margin=0.00123456)])
    assert (written.val_bpb, written.best, written.margin, written.description) == (1.234568, 1.234568, 0.001235,
                                                                                    "idea 1 second line")


def test_the_paired_columns_round_trip_and_a_file_without_them_reads_with_none(tmp_path):
    path = tmp_path / "results.tsv"
    before = results.COLUMNS[:results.COLUMNS.index("pair_experiment")]  # a file written before the paired gate
    old_row = results.format_row(Row("abcdef1", 1.5, 1.0, "keep", "baseline", experiment=1))
    path.write_text("\t".join(before) + "\n" + "\t".join(old_row.split("\t")[:len(before)]) + "\n")
    results.append(path, Row("1234567", 1.4, 1.0, "keep", "better", experiment=2, pair_experiment=1,
                             paired_gain=0.0123456789))
    rows = results.read_rows(path)
    assert [(r.pair_experiment, r.paired_gain) for r in rows] == [(0, None), (1, 0.012346)]
    assert results.load(path)["paired_gain"].isna().tolist() == [True, False]
