"""One jail's limits in force (integrity/limits.py, cgroups.py) and its unprivileged uid (jail.py): real
bubblewrap, real processes, the machine's own cgroups (or the rlimits fall-back where it has none)."""
import dataclasses
import os
import subprocess
import sys

import pytest

from autoresearch_kernel.integrity import jail, limits

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(jail.unavailable_reason() is not None, reason="bubblewrap cannot run here")]

SMALL = limits.Limits(memory=256 * limits.MB, tmp=16 * limits.MB, processes=32, disk=8 * limits.MB, cpus=1)


def run_jailed(folder, code: str, limits_=SMALL):
    box = jail.Jail(writable=(folder,), limits=limits_)
    confinement = box.confine()
    try:
        done = subprocess.run(box.command([sys.executable, "-c", code]), capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL, **confinement.popen_options())
        confinement.kill()
        return done, confinement.exceeded(done.stderr, folder), confinement.usage()
    finally:
        confinement.close()


def test_memory_over_the_limit_is_named(tmp_path):
    done, hit, usage = run_jailed(tmp_path, f"x = b'x' * {2 * SMALL.memory}")
    assert done.returncode != 0 and hit == "memory limit 256 MB", (done.stderr[-300:], hit)
    if limits.mechanism()[0] != "rlimits":
        assert usage.peak_memory_bytes is not None and usage.peak_memory_bytes <= SMALL.memory * 1.05


def test_processes_over_the_limit_are_refused_and_named(tmp_path):
    code = "import os, time\nfor _ in range(200):\n    if os.fork() == 0:\n        time.sleep(30); os._exit(0)"
    done, hit, _ = run_jailed(tmp_path, code)
    assert "Resource temporarily unavailable" in done.stderr and hit == "process limit 32", (done.stderr[-300:], hit)


def test_tmp_and_files_are_bounded(tmp_path):
    roomy = dataclasses.replace(SMALL, disk=128 * limits.MB)  # a file may be larger than /tmp: /tmp ends it
    done, hit, _ = run_jailed(tmp_path, "open('/tmp/fill', 'wb').write(b't' * (64 << 20))", roomy)
    assert "No space left on device" in done.stderr and hit == "tmp limit 16 MB"
    done, hit, _ = run_jailed(tmp_path, "open('big', 'wb').write(b'd' * (64 << 20))")
    assert "File too large" in done.stderr and hit == "disk limit 8 MB"


def test_cpu_time_is_measured(tmp_path):
    done, hit, usage = run_jailed(tmp_path, "sum(i * i for i in range(3_000_000))")
    assert done.returncode == 0 and hit is None
    if limits.mechanism()[0] != "rlimits":
        assert usage.cpu_seconds is not None and usage.cpu_seconds > 0.05


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop is for a loop running as root")
def test_a_root_loop_jail_runs_as_nobody_without_root_files(tmp_path):
    code = ("import os; print(os.getresuid(), os.getgroups()); open('made', 'w').write('x')\n"
            "for path in ('/etc/shadow', '/etc/gshadow', '/etc/sudoers', '/etc/ssh', '/etc/ssl/private'):\n"
            "    print(path, os.path.exists(path))")
    done, hit, _ = run_jailed(tmp_path, code)
    uid, gid = limits.jail_ids()
    assert done.returncode == 0, done.stderr
    assert f"({uid}, {uid}, {uid}) []" in done.stdout and "True" not in done.stdout
    made = (tmp_path / "made").stat()
    assert (made.st_uid, made.st_gid) == (uid, gid)  # the host sees the unprivileged owner
    assert (tmp_path.stat().st_uid, tmp_path.stat().st_mode & 0o777) == (uid, 0o700)
