"""The scorers' bytecode cache: filled once by the trusted side, read-only to the scorer's jail, out of an
experiment's reach (a planted .pyc must never stand in for the harness's source)."""
import subprocess
import sys

import pytest

from autoresearch_kernel.integrity import bytecode, jail

JAILED = jail.unavailable_reason() is None


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("bytecode")
    root.chmod(0o755)  # a root test run's jails run as nobody
    return bytecode.scorer_cache(root)


def test_it_is_filled_once_with_what_the_scorer_imports(cache):
    assert cache is not None and (cache / "filled").is_file()
    compiled = {path.name for path in cache.rglob("*.pyc")}
    assert any(name.startswith("flop_counter.") for name in compiled)  # torch's, which -I never writes beside it
    assert any(name.startswith("blind.") for name in compiled)  # the package's own
    filled_at = (cache / "filled").stat().st_mtime_ns
    assert bytecode.scorer_cache(cache.parent) == cache
    assert (cache / "filled").stat().st_mtime_ns == filled_at  # not filled again


def test_a_folder_that_cannot_be_written_leaves_the_scorer_a_fresh_cache(tmp_path):
    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    assert bytecode.scorer_cache(blocked) is None


def test_outside_a_jail_the_scorer_gets_the_cache_or_its_fresh_folder(cache, monkeypatch):
    monkeypatch.setattr(bytecode, "scorer_cache", lambda: cache)
    assert bytecode.with_bytecode(None, "/fresh") == (None, str(cache))
    monkeypatch.setattr(bytecode, "scorer_cache", lambda: None)
    assert bytecode.with_bytecode(None, "/fresh") == (None, "/fresh")
    assert bytecode.with_bytecode(jail.Jail(), "/fresh")[1] == "/tmp/pycache"  # the jail's own, empty /tmp


@pytest.mark.skipif(not JAILED, reason="bubblewrap cannot run here")
def test_the_scorers_jail_reads_it_and_cannot_plant_a_pyc_in_it(cache, monkeypatch, tmp_path):
    monkeypatch.setattr(bytecode, "scorer_cache", lambda: cache)
    box, prefix = bytecode.with_bytecode(jail.Jail(), "/fresh")
    assert prefix == str(cache)
    plant = f"""
import pathlib, sys
cache = pathlib.Path({str(cache)!r})
print(len(list(cache.rglob("*.pyc"))) > 100)
for target in [cache / "planted.pyc", *list(cache.rglob("blind.*.pyc"))]:
    try:
        target.write_bytes(b"planted")
        print("written", target)
    except OSError as error:
        print("refused", type(error).__name__)
"""
    done = subprocess.run(box.command([sys.executable, "-I", "-c", plant]), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "True" and "written" not in done.stdout and lines.count("refused OSError") == 2, done.stdout
    # an experiment's jail does not see the cache at all
    tmp_path.chmod(0o755)
    look = f"import os; print(os.path.exists({str(cache)!r}))"
    seen = subprocess.run(jail.Jail(writable=(tmp_path,)).command([sys.executable, "-I", "-c", look]),
                          capture_output=True, text=True)
    assert seen.stdout.strip() == "False", seen.stderr
