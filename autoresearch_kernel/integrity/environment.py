"""The environment a process that runs candidate code gets: an allow-list, never the loop's own environment.

The loop holds an API key, a git identity, a Jupyter token and whatever the user's shell exports; none of it
is the experiment's business. Instead of stripping names that look secret (which strips too much and misses
secrets with other names), the experiment gets exactly the variables below, with values this module sets or
passes through from the loop's environment.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import autoresearch_kernel

# Passed through unchanged when the loop has them: locale and time zone (formatting), the BLAS settings some
# processors need to compute correctly, and the user's choice of thread counts, OpenMP waiting and CUDA allocator.
PASSED_THROUGH = (
    "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "PYTORCH_CUDA_ALLOC_CONF", "CUDA_HOME", "NVIDIA_DRIVER_CAPABILITIES",
)
SCRATCH = "/tmp"  # inside the jail a fresh tmpfs; outside, the system's temporary folder
HOME = os.path.join(SCRATCH, "autoresearch-home")  # the experiment's HOME: nothing of the user's


def package_root() -> Path:
    """The folder that holds the `autoresearch_kernel` package the loop runs (a checkout or site-packages)."""
    return Path(autoresearch_kernel.__file__).resolve().parent.parent


def experiment_env(device: str | None = None, home: str | None = None, threads: int | None = None) -> dict[str, str]:
    """The whole environment of an experiment's processes (papermill, its kernel, the scorer).

    `device` "cuda:N" pins the process to that GPU; "cpu" hides all GPUs; None leaves them as they are.
    `home`: the HOME the process gets (inside the jail a fresh tmpfs folder). `threads`: torch's and the BLAS
    libraries' thread count, so that lanes sharing a CPU do not fight.
    """
    env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    home = home or HOME
    os.makedirs(home, exist_ok=True)  # outside the jail; inside, the jail makes it (see jail.HOME)
    env.update(
        # the interpreter that runs the loop, with torch and the harness, first on the PATH
        PATH=os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        HOME=home,
        # the package the loop runs, whichever checkout that is (also when it is not the installed one)
        PYTHONPATH=str(package_root()),
        PYTHONUNBUFFERED="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",  # silences a debugger warning at every kernel start
        MPLCONFIGDIR=os.path.join(home, ".matplotlib"),
        JUPYTER_PLATFORM_DIRS="1",  # jupyter_core's future default; silences its warning
    )
    if "VIRTUAL_ENV" in os.environ:
        env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
    env.setdefault("LANG", "C.UTF-8")
    # OpenMP's idle threads sleep instead of spinning: on a busy CPU a spinning thread bills CPU seconds that
    # are no work, and the loop bills an experiment its jail's CPU seconds (integrity/budget.py).
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if device is not None:
        if device.startswith("cuda"):
            _, _, index = device.partition(":")
            env["CUDA_VISIBLE_DEVICES"] = index or "0"
        elif device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
    elif "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env
