"""The environment an experiment's processes get (its kernel, the clean re-score): the loop's, less every secret.

Kept apart from the runner so that the clean re-score can use it without papermill's and Jupyter's imports.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Environment variables whose names contain these words never reach the experiment's kernel: the loop's
# API keys and tokens are no business of the sandbox (OPENAI_API_KEY, HF_TOKEN, JUPYTER_TOKEN, ...).
SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE")


def experiment_env(base: dict[str, str] | None = None, device: str | None = None) -> dict[str, str]:
    """The environment an experiment's kernel gets: the loop's own, less every secret.

    `device` "cuda:N" pins the experiment to that GPU; "cpu" hides all GPUs; None leaves them as they are.
    """
    source = os.environ if base is None else base
    env = {name: value for name, value in source.items() if not is_secret_name(name)}
    if device is not None:
        if device.startswith("cuda"):
            _, _, index = device.partition(":")
            env["CUDA_VISIBLE_DEVICES"] = index or "0"
        elif device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
    # The kernel must run the interpreter that runs this code (the one with torch and the harness), even
    # when the caller's PATH names another python first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # silences a debugger warning at every kernel start
    return env


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)
