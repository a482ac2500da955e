"""Shared fixtures and the test tiers.

`prepared_dir`: the embedded corpus prepared once per test session (cpu profile).

Tiers: `make test` runs everything; `make test-fast` (`pytest -m "not slow"`) leaves out the tests marked
`slow` here, in one place: whole modules that start kernels, loops, training or scoring subprocesses or the
browser, and single slow tests of otherwise quick modules. A test may also carry `@pytest.mark.slow` itself.

Order: the slow modules run first, the longest first (`SLOW_MODULES`' order), the others after them in their
usual order. Alone this changes nothing; where pytest-xdist hands whole modules to two workers (`make test`),
starting the longest first keeps one long module from starting last, while the other worker stands idle.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from autoresearch_kernel.harness.prepare import SplitSecret, prepare

# A preparation draws its split key and packing seed at random (secret by design), so every figure of a loop
# test would change from one session to the next and a small gain would be kept in one and not another. The
# tests prepare with one fixed secret instead: the same split, rows and figures in every session.
TEST_SECRET = SplitSecret(key=bytes(32), pack_seed=0)

# The longest first, by a quiet full run's figures (seconds per module, `--durations`, two workers).
SLOW_MODULES = (
    "test_budget_loop",        # loops whose candidates train past their budget (419 s)
    "test_integrity",          # loops whose candidates try to cheat (290 s)
    "test_agent",              # a scripted coding agent calling `autoresearch step` on real kernels (194 s)
    "test_loop",               # loops on real kernels, kills and resumes (183 s)
    "test_train_template",     # the sandbox notebook trains (161 s)
    "test_recovery",           # loops killed at each persistence point, then resumed (142 s)
    "test_scorer_attacks",     # hostile programs against the scorer, a corpus hunt through the loop (130 s)
    "test_cli_loop",           # the CLI's loop in a subprocess (128 s)
    "test_ray_executor",       # a Ray cluster on 127.0.0.1, loops on it, killed workers (111 s)
    "test_browser",            # JupyterLab in Chromium (102 s)
    "test_jail_attacks",       # resource and file attacks from the jail, through the loop (100 s)
    "test_task_init",          # autoresearch init on the example, then the loop on its task
    "test_warm",               # kernels started ahead, in jails, and the training notebook warm and cold
    "test_loop_paired",        # the paired gate's runs of the best, kills during them
    "test_loop_lanes",         # two lanes on real kernels: stale candidates, stop, abort and resume
    "test_scorer",             # exports and the warm scoring process
    "test_task_loop",          # the circle-packing task through the loop, its scorer in its jail
    "test_loop_profile",       # loops under the gpu profile
    "test_loop_overlap",       # a loop whose next run trains while the last one is scored
    "test_memory_loop",        # the idea memory in loops on real kernels
    "test_search_loop",        # the hybrid and optuna proposers in the loop
    "test_intake",             # a loop on real kernels: what a proposal is built from
    "test_loop_notebook",      # the controller notebook through papermill
    "test_jail",               # escape attempts in a jailed kernel
    "test_runner",             # papermill kernels: timeouts, kernel deaths
    "test_prepare_notebook",   # the prepare notebook through papermill
    "test_bytecode",           # the scorers' bytecode cache filled (torch's imports compiled), jails reading it
)
SLOW_TESTS = {
    "test_dashboard": {"test_start_runs_the_cli_loop_detached_and_shows_its_rows_diff_and_notebook"},
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.path.stem
        if module in SLOW_MODULES or item.originalname in SLOW_TESTS.get(module, ()):
            item.add_marker(pytest.mark.slow)
    rank = {module: place for place, module in enumerate(SLOW_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a module's tests stay together


@pytest.fixture(scope="session")
def prepared_dir(tmp_path_factory) -> Path:
    """The data_dir Path holding the embedded corpus prepared for profile "cpu" (about 1 s, once).

    Use it as `load_prepared(data_dir=prepared_dir, profile="cpu")` or pass `DATA_DIR=str(prepared_dir)`,
    `PROFILE="cpu"` to a notebook. Treat it as read-only: other tests share it.
    """
    data_dir = tmp_path_factory.mktemp("prepared")
    data_dir.chmod(0o755)  # readable by others, as ~/.cache's folders are: a root run's jails run as nobody
    prepare(source="embedded", profile="cpu", data_dir=data_dir, progress=False, secret=TEST_SECRET)
    return data_dir
