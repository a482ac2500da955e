"""The runner executes real notebooks in real kernels: ok, crash, timeout, kernel death, abort, secrets."""
import json
import subprocess
import sys
import threading
import time

import nbformat
import psutil
import pytest

from autoresearch_kernel.execution.runner import Kernel, run_notebook
from autoresearch_kernel.integrity.environment import PASSED_THROUGH, experiment_env

PARAMETERS = 'METRICS_PATH = "metrics.json"\nVALUE = 1.0'
WRITE_METRICS = (
    "import json, os\n"
    "json.dump({'status': 'ok', 'val_bpb': VALUE, 'env': sorted(os.environ)}, open(METRICS_PATH, 'w'))"
)


def make_notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters] + [nbformat.v4.new_code_cell(source) for source in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_ok_run_returns_metrics_and_keeps_the_executed_notebook(tmp_path):
    notebook = make_notebook(tmp_path / "nb.ipynb", "print('hello from the kernel')", WRITE_METRICS)
    result = run_notebook(notebook, tmp_path / "runs" / "0001-abc.ipynb", {"VALUE": 2.5}, timeout_s=120)
    assert result.status == "ok", result.failure
    assert result.metrics["val_bpb"] == 2.5
    assert result.failure is None
    executed = nbformat.read(result.output_path, as_version=4)
    assert any("hello from the kernel" in out.get("text", "") for out in executed.cells[-2].outputs)
    assert "hello from the kernel" in result.log_path.read_text()


def test_exception_in_a_cell_is_a_crash_with_its_traceback(tmp_path):
    notebook = make_notebook(tmp_path / "nb.ipynb", "raise ValueError('learning rate too hot')", WRITE_METRICS)
    result = run_notebook(notebook, tmp_path / "out.ipynb", timeout_s=120)
    assert result.status == "crash"
    assert result.error_name == "ValueError"
    assert "learning rate too hot" in result.error_message
    assert "ValueError" in result.traceback_tail
    assert result.failure.startswith("crash: ValueError")
    assert result.output_path.exists()


def test_timeout_kills_the_kernel_and_keeps_the_notebook(tmp_path):
    notebook = make_notebook(
        tmp_path / "nb.ipynb",
        "import os; open('kernel.pid', 'w').write(str(os.getpid()))",
        "import time; time.sleep(600)",
    )
    result = run_notebook(notebook, tmp_path / "out.ipynb", timeout_s=8, cwd=tmp_path)
    assert result.status == "timeout"
    assert result.wall_seconds < 30
    kernel_pid = int((tmp_path / "kernel.pid").read_text())
    assert not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == psutil.STATUS_ZOMBIE
    executed = nbformat.read(result.output_path, as_version=4)
    assert "wall-clock limit" in executed.cells[-1].source


def test_a_run_past_its_cpu_ceiling_is_stopped_as_over_its_budget(tmp_path):
    """The loop's ceiling (integrity/budget.ceiling_seconds): CPU seconds of the kernel's whole tree, a child
    process's included, stop the run long before its wall-clock limit, and the notebook says why."""
    notebook = make_notebook(tmp_path / "nb.ipynb", """\
import multiprocessing, time
def burn():
    while True:
        pass
multiprocessing.Process(target=burn, daemon=True).start()
burn()""", WRITE_METRICS)
    kernel = Kernel(tmp_path, experiment_env(None), None)
    result = kernel.run(notebook, tmp_path / "out.ipynb", timeout_s=300, cpu_ceiling_s=6.0)
    assert (result.status, result.error_name) == ("crash", "OverBudget"), result.failure
    assert "passed 6 CPU seconds, more than any run on its budget may spend" in result.error_message
    assert 6.0 < result.cpu_seconds < 30 and result.wall_seconds < 60
    assert "more than any run on its budget may spend" in nbformat.read(result.output_path, 4).cells[-1].source
    assert not kernel.alive


PARENT = """\
import sys, threading, time
from pathlib import Path
from autoresearch_kernel.execution.runner import Kernel
from autoresearch_kernel.integrity.environment import experiment_env
folder = Path(sys.argv[1])
kernel = Kernel(folder, experiment_env(None), None)
Path(folder, "host.pid").write_text(str(kernel.process.pid))
# run in a thread that ends first (as a lane's kernel started ahead by its previous run's thread)
threading.Thread(target=lambda: kernel._send({"notebook": sys.argv[2], "output": str(folder / "out.ipynb"),
                                               "parameters": {}})).start()
time.sleep(600)
"""


def test_a_killed_parent_takes_its_kernel_with_it_whatever_thread_started_it(tmp_path):
    """A killed loop's kernels end with it: the host ends when the loop's end of its pipe closes."""
    notebook = make_notebook(tmp_path / "nb.ipynb", "import os; open('kernel.pid', 'w').write(str(os.getpid()))",
                             "import time; time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), str(notebook)])
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "kernel.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        host = psutil.Process(int((tmp_path / "host.pid").read_text()))
        kernel = psutil.Process(int((tmp_path / "kernel.pid").read_text()))
        parent.kill()
        parent.wait(10)
        gone, alive = psutil.wait_procs([host, kernel], timeout=20)
    finally:
        parent.kill()
    assert alive == [], [p.cmdline() for p in alive]


def test_kernel_death_is_a_crash(tmp_path):
    notebook = make_notebook(tmp_path / "nb.ipynb", "import os; os._exit(3)", WRITE_METRICS)
    result = run_notebook(notebook, tmp_path / "out.ipynb", timeout_s=120)
    assert result.status == "crash"
    assert result.metrics is None
    assert result.error_name
    assert result.output_path.exists()


def test_a_notebook_that_writes_no_metrics_is_a_crash(tmp_path):
    notebook = make_notebook(tmp_path / "nb.ipynb", "x = 1")
    result = run_notebook(notebook, tmp_path / "out.ipynb", timeout_s=120)
    assert (result.status, result.error_name) == ("crash", "NoMetrics")


def test_stale_metrics_from_an_earlier_attempt_are_not_reused(tmp_path):
    stale = tmp_path / "out.metrics.json"
    stale.write_text(json.dumps({"status": "ok", "val_bpb": 0.1}))
    notebook = make_notebook(tmp_path / "nb.ipynb", "x = 1")
    result = run_notebook(notebook, tmp_path / "out.ipynb", timeout_s=120)
    assert result.status == "crash"


def test_abort_kills_the_run(tmp_path):
    notebook = make_notebook(tmp_path / "nb.ipynb", "import time; time.sleep(600)")
    cancel = threading.Event()
    threading.Timer(6, cancel.set).start()
    result = run_notebook(notebook, tmp_path / "out.ipynb", timeout_s=300, cancel=cancel)
    assert result.status == "aborted"
    assert result.wall_seconds < 30


def test_the_kernel_gets_an_allow_list_never_the_loops_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    monkeypatch.setenv("AWS_SESSION", "aws-secret")  # a secret whose name says nothing
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    notebook = make_notebook(tmp_path / "nb.ipynb", WRITE_METRICS)
    result = run_notebook(notebook, tmp_path / "out.ipynb", timeout_s=120, device="cpu")
    assert result.ok, result.failure
    env = set(result.metrics["env"])
    assert not {"OPENAI_API_KEY", "AWS_SESSION", "TOKENIZERS_PARALLELISM"} & env
    assert {"PATH", "HOME", "PYTHONPATH"} <= env
    set_by_jupyter = {name for name in env if name.startswith(("JPY", "MPL", "PYDEVD", "CLICOLOR"))}
    assert env - set_by_jupyter <= set(experiment_env("cpu")) | set(PASSED_THROUGH) | {
        "FORCE_COLOR", "GIT_PAGER", "PAGER", "TERM", "PWD"}
    assert "sk-test-secret" not in result.output_path.read_text()


@pytest.mark.parametrize(
    ("device", "visible"), [("cuda:1", "1"), ("cuda", "0"), ("cpu", ""), (None, "untouched")]
)
def test_device_sets_cuda_visible_devices(device, visible, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "untouched")
    env = experiment_env(device)
    assert env["CUDA_VISIBLE_DEVICES"] == visible


def test_openmp_threads_sleep_when_idle_unless_the_user_chose_otherwise(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert experiment_env("cpu")["OMP_WAIT_POLICY"] == "PASSIVE"  # spinning would bill CPU seconds of no work
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert experiment_env("cpu")["OMP_WAIT_POLICY"] == "ACTIVE"
