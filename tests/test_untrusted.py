"""Reading a run folder as untrusted (integrity/untrusted.py) and the limits' settings (integrity/limits.py):
real files, links, FIFOs and devices in a tmp folder; the limits from the profile and the environment."""
import os

import pytest

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.integrity import limits, untrusted


def test_a_regular_file_is_read_capped(tmp_path):
    (tmp_path / "metrics.json").write_text('{"val_bpb": 1.0}')
    assert untrusted.read_text(tmp_path / "metrics.json", 100) == '{"val_bpb": 1.0}'
    (tmp_path / "big.log").write_bytes(b"a" * 1000 + b"END")
    assert untrusted.read_text(tmp_path / "big.log", 3, tail=True) == "END"
    with pytest.raises(untrusted.RefusedFile, match="over the 100"):
        untrusted.read_text(tmp_path / "big.log", 100)


@pytest.mark.parametrize("kind", ["symlink", "fifo", "device", "folder"])
def test_links_fifos_devices_and_folders_are_refused(tmp_path, kind):
    target = tmp_path / "metrics.json"
    secret = tmp_path / "secret"
    secret.write_text("root:$6$hash")
    if kind == "symlink":
        target.symlink_to(secret)
    elif kind == "fifo":
        os.mkfifo(target)  # opened without blocking, then refused
    elif kind == "device":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
    with pytest.raises(untrusted.RefusedFile, match="refused"):
        untrusted.read_text(target, 1000)


def test_a_folder_reached_through_a_link_is_refused(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "metrics.json").write_text("{}")
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    with pytest.raises(OSError):
        untrusted.read_text(tmp_path / "linked" / "metrics.json", 100)


def test_a_write_never_goes_through_a_planted_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    notebook = tmp_path / "run.ipynb"
    notebook.symlink_to(victim)
    (tmp_path / ".run.ipynb.tmp").symlink_to(victim)
    untrusted.write_text(notebook, "scored")
    assert victim.read_text() == "untouched"
    assert not notebook.is_symlink() and notebook.read_text() == "scored"


def test_clean_strips_control_characters_redacts_and_caps(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-clean-0123456789")
    text = "\x1b[31mError\x1b[0m: sk-clean-0123456789\x07\x00 done\u202e\nnext"
    assert untrusted.clean(text) == "Error: *** done\nnext"
    assert untrusted.clean("x" * 50, 10) == "x" * 7 + "..."
    assert untrusted.clean("a" * 40 + "END", 10, tail=True).endswith("END")


def test_limits_come_from_the_profile_and_the_environment(monkeypatch):
    monkeypatch.delenv(limits.LIMITS_ENV, raising=False)
    cpu = limits.for_profile("cpu", cpus=2)
    assert cpu.processes == 256 and cpu.disk == 2 * limits.GB and cpu.cpus == 2
    assert cpu.memory <= 6 * limits.GB and cpu.tmp <= cpu.memory
    monkeypatch.setenv(limits.LIMITS_ENV, "memory=1GB,processes=64,disk=200MB,tmp=100MB")
    small = limits.for_profile("cpu")
    assert (small.memory, small.processes, small.disk, small.tmp) == (limits.GB, 64, 200 * limits.MB, 100 * limits.MB)
    assert small.describe() == "memory 1.0 GB (its /tmp 100 MB inside it), 64 processes, disk 200 MB"
    monkeypatch.setenv(limits.LIMITS_ENV, "swap=1GB")
    with pytest.raises(AutoresearchError, match="unknown limit"):
        limits.for_profile("cpu")


def test_limit_names_from_error_text():
    small = limits.Limits(memory=limits.GB, tmp=100 * limits.MB, processes=64, disk=200 * limits.MB)
    assert limits.name_from_error("OSError: [Errno 28] No space left on device", small) == "tmp limit 100 MB"
    assert limits.name_from_error("OSError: [Errno 27] File too large", small) == "disk limit 200 MB"
    assert limits.name_from_error("MemoryError", small) == "memory limit 1.0 GB"
    assert limits.name_from_error("BlockingIOError: [Errno 11] Resource temporarily unavailable: fork", small) \
        == "process limit 64"
    assert limits.name_from_error("ValueError: bad shape", small) is None


def test_folder_size_counts_blocks_without_following_links(tmp_path):
    (tmp_path / "data.bin").write_bytes(os.urandom(1 << 20))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "more.bin").write_bytes(os.urandom(1 << 20))
    (tmp_path / "link").symlink_to("/usr")
    assert 2 << 20 <= limits.folder_bytes(tmp_path) < 3 << 20
    assert sorted(limits.remove_large_files(tmp_path)) == ["data.bin", "sub/more.bin"]
    assert (tmp_path / "link").is_symlink()
