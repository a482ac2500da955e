"""The dashboard in a real JupyterLab, clicked in a real (headless) Chromium through Playwright.

A temporary git repository holds copies of the notebooks and program.md; JupyterLab serves it on 127.0.0.1
with a token. The test opens notebooks/loop.ipynb, runs its cells, sets a run up (mutate proposer, a tiny
token budget, the session's prepared data), clicks Start, waits for two rows in the table and a chart of
them, clicks Stop, and checks that the loop stopped. Screenshots land in test-artifacts/ (ignored by git).

It drives Debian's Chromium (`/usr/bin/chromium`) and never downloads a browser (`playwright install` is
neither needed nor wanted); where that binary is missing the test is skipped. Whatever happens, the test
ends what it started: the browser, the JupyterLab server and the loop process (which outlives its kernel
by design).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import git
import psutil
import pytest

from autoresearch_kernel.execution.runner import kill_tree
from autoresearch_kernel.journal import runstate

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "dashboard-test-token"
TAG = "browser"
TOKEN_BUDGET = 4096  # training tokens per experiment: one optimizer step of the cpu profile, so rows come soon
UI_TIMEOUT_MS = 60_000
# two rows: two baseline seeds of the real notebook, each also scored outside, on two cores that `make test`
# shares with a second worker (a deadline, not a sleep: the wait ends when the rows are there)
EXPERIMENTS_TIMEOUT_MS = 300_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def lab_project(tmp_path) -> Path:
    """A git repository with the project's notebooks and program.md, as a user's checkout would have them."""
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    for name in ("loop.ipynb", "train_template.ipynb"):
        shutil.copy(ROOT / "notebooks" / name, project / "notebooks" / name)
    shutil.copy(ROOT / "program.md", project / "program.md")
    repo = git.Repo.init(project, initial_branch="main")
    with repo.config_writer() as config:
        config.set_value("user", "name", "test")
        config.set_value("user", "email", "test@localhost")
    repo.git.add("notebooks", "program.md")
    repo.git.commit("-m", "project")
    return project


def _lab_settings(folder: Path) -> Path:
    """User settings that keep JupyterLab quiet: no news or update pop-ups over the widgets."""
    path = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    return folder


@pytest.fixture
def lab_url(lab_project, tmp_path):
    """JupyterLab on 127.0.0.1 (a free port, a token) serving the project; stopped afterwards."""
    port = free_port()
    home = tmp_path / "jupyter"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               IPYTHONDIR=str(home / "ipython"), MPLBACKEND="module://matplotlib_inline.backend_inline")
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
        f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={lab_project}",
        f"--LabApp.user_settings_dir={_lab_settings(home / 'settings')}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
    ]
    if os.geteuid() == 0:  # CI containers run as root; JupyterLab refuses that unless told
        command.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "wb")
    server = subprocess.Popen(command, cwd=lab_project, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(url, server, tmp_path / "jupyterlab.log")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill_tree(server.pid)
        log.close()


def _wait_for_server(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"JupyterLab exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            request = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {TOKEN}"})
            with urllib.request.urlopen(request, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("JupyterLab did not answer within 60 s")


@pytest.fixture
def page():
    """A headless Chromium page; the browser is closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1600})
        finally:
            browser.close()


@pytest.fixture
def loop_reaper(lab_project):
    """Ends the loop process the dashboard started, if it still runs when the test ends (it outlives kernels).

    Found by its command line, which names this test's own temporary repository (so also before it takes
    its lock), and ended by pid.
    """
    yield
    for process in psutil.process_iter(["pid", "cmdline"]):
        command = process.info["cmdline"] or []
        if "autoresearch_kernel" in command and "loop" in command and str(lab_project.resolve()) in command:
            kill_tree(process.info["pid"])


def run_all_cells(page) -> None:
    page.locator("#jp-main-statusbar").get_by_text("Idle").wait_for(timeout=UI_TIMEOUT_MS)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()


def fill(page, css: str, value: str) -> None:
    """Type into a widget's input and leave it, so that ipywidgets syncs the value to the kernel."""
    field = page.locator(f".ark-dashboard {css} input")
    field.fill(value)
    field.press("Tab")


def test_start_watch_and_stop_the_loop_from_jupyterlab(lab_url, lab_project, prepared_dir, page, loop_reaper):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(f"{lab_url}/lab/tree/notebooks/loop.ipynb?token={TOKEN}")
    page.locator(".jp-Notebook").first.wait_for(timeout=UI_TIMEOUT_MS)
    run_all_cells(page)
    board = page.locator(".ark-dashboard")
    try:
        board.wait_for(timeout=UI_TIMEOUT_MS)
        fill(page, ".ark-tag", TAG)
        page.locator(".ark-dashboard .ark-budget-kind select").select_option(label="tokens / experiment")
        fill(page, ".ark-budget", str(TOKEN_BUDGET))
        fill(page, ".ark-data-dir", str(prepared_dir))
        board.get_by_text("a new run").wait_for(timeout=UI_TIMEOUT_MS)  # the kernel has the tag
        board.locator("button.ark-start").click()

        # live: the phase line, then two rows in the table and a chart of them
        board.locator(".ark-phase").get_by_text("running").wait_for(timeout=UI_TIMEOUT_MS)
        rows = board.locator(".ark-table option")
        page.wait_for_function(
            "() => document.querySelectorAll('.ark-dashboard .ark-table option').length >= 2",
            timeout=EXPERIMENTS_TIMEOUT_MS,
        )
        # the widgets' updates reach the page one message at a time: the chart may trail the table a moment
        page.wait_for_function(
            "() => { const c = document.querySelector('.ark-dashboard .ark-chart-caption');"
            " const m = c && c.innerText.match(/over (\\d+)/); return m && Number(m[1]) >= 2; }",
            timeout=UI_TIMEOUT_MS,
        )
        assert board.locator("img.ark-chart").get_attribute("src")  # the chart image is there
        assert "keep" in board.locator(".ark-counts").inner_text()
        board.screenshot(path=str(ARTIFACTS / "dashboard-running.png"))

        # stop after this experiment: the loop finishes it, writes its row, and exits
        board.locator("button.ark-stop").click()
        board.locator(".ark-phase").get_by_text("stopped").wait_for(timeout=EXPERIMENTS_TIMEOUT_MS)
        expect(board.locator("button.ark-start")).to_be_enabled(timeout=UI_TIMEOUT_MS)  # the lock is released
        assert not runstate.is_running(lab_project, TAG)
        status = runstate.read_status(lab_project, TAG)
        assert status.phase == "stopped" and "stopped on request" in status.message
        assert board.locator(".ark-error-line").inner_text().strip() == ""

        # a row's detail: its executed notebook opens in JupyterLab from the link
        rows.first.click()
        board.locator(".ark-link a").wait_for(timeout=UI_TIMEOUT_MS)
        board.screenshot(path=str(ARTIFACTS / "dashboard.png"))
        board.locator(".ark-link a").click()
        page.locator(".lm-TabBar-tab", has_text="0001-").first.wait_for(timeout=UI_TIMEOUT_MS)
    finally:
        page.screenshot(path=str(ARTIFACTS / "jupyterlab.png"))
