"""The kernel host: inside the jail, start a Jupyter kernel, warm it, then run exactly one notebook with papermill.

    python -m autoresearch_kernel.execution.kernel_host --warm-up CODE --autosave SECONDS
    stdin: one JSON line {"notebook": path, "output": path, "parameters": {...}}, held open while it runs

The kernel starts in this process's folder (the run's own) before the notebook is known, and runs `CODE`,
trusted code of the harness (imports, the data's verification and load, the export's first-time set-up),
without a trace in its history or its execution count. Then the host waits for the request, which the loop
sends when an experiment gets this kernel, and executes the notebook through papermill's own engine on the
kernel already running. Papermill's failures are its command line's: the traceback goes to the log and the
exit status is 1, the executed notebook keeps the error. A request that never comes (end of file) ends the
host with nothing run. After the request the loop holds the pipe open until the run has ended: its end before
that means the loop is gone (killed), and the host ends at once, and with it the jail and the kernel. The
jail's own death signal (bwrap --die-with-parent) is bound to the thread that started it, which may have
ended long before (a lane's kernel started ahead by its previous run's thread): measured, a killed parent
whose starting thread had ended left its jail running. Everything a cold `papermill` run does, this does, in
the same jail, later started.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading

WARM_UP_TIMEOUT_S = 300.0  # torch's import and the data's verification, on a slow disk
LOOP_GONE = 75  # the exit status when the loop's end of the pipe closed before the run ended
KERNEL = "python3"


def start_kernel(warm_up: str):
    """A started kernel manager whose kernel ran `warm_up`, or None when the kernel could not be started here
    (papermill then starts its own and fails, or not, exactly as a cold run would)."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    async def start():
        manager = AsyncKernelManager(kernel_name=KERNEL)
        # nbclient's own default for the kernels it starts: no history file in the jail's HOME
        await manager.start_kernel(cwd=os.getcwd(), extra_arguments=["--HistoryManager.hist_file=:memory:"])
        client = manager.client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=WARM_UP_TIMEOUT_S)
            if warm_up:
                reply = await client.execute_interactive(warm_up, silent=True, store_history=False,
                                                         timeout=WARM_UP_TIMEOUT_S, allow_stdin=False)
                if reply["content"]["status"] != "ok":
                    content = reply["content"]
                    print(f"warm-up failed: {content.get('ename')}: {content.get('evalue')}", file=sys.stderr)
        finally:
            client.stop_channels()
        return manager

    try:
        return run_sync(start)()  # the thread's one event loop, which nbclient uses after us
    except Exception as error:  # noqa: BLE001 - said in the log; papermill's own start says it again
        print(f"the kernel could not be started ahead: {type(error).__name__}: {error}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kernel_host", description=__doc__.splitlines()[0])
    parser.add_argument("--warm-up", default="")
    parser.add_argument("--autosave", type=int, default=10)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # papermill's command line's logging

    manager = start_kernel(args.warm_up)
    import papermill  # a second's import, paid ahead like the kernel's
    from jupyter_core.utils import run_sync

    line = sys.stdin.readline()
    if not line.strip():
        return 0  # no experiment came for this kernel
    request = json.loads(line)
    threading.Thread(target=_end_when_the_loop_is_gone, daemon=True).start()

    try:
        papermill.execute_notebook(
            request["notebook"], request["output"], parameters=request["parameters"], kernel_name=KERNEL,
            progress_bar=False, log_output=True, autosave_cell_every=args.autosave, km=manager)
    finally:
        if manager is not None:
            run_sync(manager.shutdown_kernel)(now=True)
    return 0


def _end_when_the_loop_is_gone() -> None:
    """Wait for the end of the loop's pipe; it comes before the run's end only when the loop is gone."""
    sys.stdin.read()
    os._exit(LOOP_GONE)  # the jail's namespace ends with its first process: the kernel with it


if __name__ == "__main__":
    sys.exit(main())
