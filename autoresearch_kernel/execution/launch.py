"""Launching one experiment: the jail or not, the folder it writes, the parameters it is told, the runner.

The loop decides what to run (a commit, a seed, an experiment number) and on which lane; this module knows
how: the sandbox notebook as committed (the loop writes it to runs/<tag>/candidates/), executed by `runner.run_notebook` in its own folder
runs/<tag>/notebooks/<n>-<commit>/ (the one place it may write), inside the bubblewrap jail with the
training split and the notebook read-only (and the inputs the data was prepared from masked, wherever a
bound path holds them), under the run's wall-clock limit.
"""
from __future__ import annotations

import os
import shutil

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.execution.lanes import Job, Lane
from autoresearch_kernel.execution.runner import RunResult, run_notebook
from autoresearch_kernel.execution.spec import ExperimentSpec
from autoresearch_kernel.harness.data import input_paths, training_files
from autoresearch_kernel.harness.parameters import ExperimentParameters
from autoresearch_kernel.integrity import jail, limits
from autoresearch_kernel.workspace.runfolder import RunFolder

# Proposers whose edits are the project's own code (not a model's): they may run without the jail, with a
# warning, where bubblewrap is missing. Every other proposer's code runs jailed or not at all.
TRUSTED_PROPOSERS = ("mutate",)


def choose_sandbox(sandbox: bool, proposer: str) -> tuple[bool, str]:
    """(jailed, warning): the jail where it can be made (`sandbox`: the user did not say --no-sandbox); else
    run a trusted proposer's edits unjailed with a warning, and refuse a model's code."""
    if not sandbox:
        return False, "running WITHOUT the sandbox (--no-sandbox): experiment code can reach this machine"
    reason = jail.unavailable_reason()
    if reason is None:
        return True, ""
    if proposer in TRUSTED_PROPOSERS:
        return False, f"running WITHOUT the sandbox: {reason}"
    raise AutoresearchError(
        f"the {proposer} proposer runs model-written code, which needs the sandbox: {reason}; "
        "or pass --no-sandbox to run it unsandboxed at your own risk")


def run_experiment(spec: ExperimentSpec, folder: RunFolder, job: Job, lane: Lane, cancel) -> RunResult:
    """Execute the job's committed notebook (written by the loop to `folder.candidate`) once, on the lane's
    device and thread share; `cancel` aborts it."""
    notebook = folder.candidate(job.number, job.commit)
    output_folder = folder.experiment(job.number, job.commit)  # the one folder the experiment may write
    shutil.rmtree(output_folder, ignore_errors=True)  # what an interrupted attempt left
    output_folder.mkdir(parents=True)
    output = output_folder / f"{output_folder.name}.ipynb"
    device = lane.device
    timeout_s = spec.timeout_s * job.timeout_scale
    if not spec.task.is_gpt:
        return _run_task(spec, job, lane, cancel, notebook, output, timeout_s)
    parameters = ExperimentParameters(
        profile=spec.profile,
        data_dir=spec.data_dir,
        # the runner narrows CUDA_VISIBLE_DEVICES to the assigned GPU, which the kernel sees as cuda
        device="cuda" if device.startswith("cuda:") else device,
        seed=job.seed,
        budget_seconds=float(spec.budget_seconds),
        budget_tokens=int(spec.budget_tokens),
        budget_flops=float(spec.budget_flops),
        metrics_path=str(output.with_suffix(".metrics.json")),
        evaluate=False,  # the scorer measures the model, outside the jail
    )
    cell_jail = None
    if spec.jailed:  # read-only: the candidate and the training split; writable: its own folder
        readonly = (notebook, *training_files(spec.data_dir, spec.profile))
        cell_jail = jail.Jail(readonly=readonly, writable=(output_folder,), gpu=device.startswith("cuda"),
                              limits=limits.for_profile(spec.profile, cpus=lane.threads or os.cpu_count()),
                              masked=tuple(input_paths(spec.data_dir, spec.profile)))
    return run_notebook(
        notebook, output, parameters.for_papermill(), timeout_s=timeout_s,
        cwd=output_folder, device=device if device.startswith("cuda") or device == "cpu" else None,
        cancel=cancel, jail=cell_jail, threads=lane.threads,
    )


def task_parameters(spec: ExperimentSpec, seed: int, output, public) -> dict:
    """What a task's notebook is told (its parameters cell's names): the seed, its budget, where its public
    data is, where it writes its artifact and its own figures."""
    task = spec.task
    return {"SEED": seed, "BUDGET": spec.budget_amount, "DATA_DIR": str(public) if public.exists() else "",
            "DEVICE": "cpu", "ARTIFACT_PATH": str(output.parent / (task.artifact_name or "artifact")),
            "METRICS_PATH": str(output.with_suffix(".metrics.json"))}


def _run_task(spec: ExperimentSpec, job: Job, lane: Lane, cancel, notebook, output, timeout_s: float) -> RunResult:
    """A task other than the GPT: its notebook in the jail with its public data read-only, under the profile's
    limits as every experiment; its private data (held-out labels, ...) is never bound there."""
    from autoresearch_kernel import tasks

    public, _ = tasks.prepare(spec.task, spec.data_dir)
    cell_jail = None
    if spec.jailed:
        readonly = (notebook, public) if public.exists() else (notebook,)
        cell_jail = jail.Jail(readonly=readonly, writable=(output.parent,),
                              limits=limits.for_profile(spec.profile, cpus=lane.threads or os.cpu_count()))
    return run_notebook(notebook, output, task_parameters(spec, job.seed, output, public),
                        timeout_s=timeout_s, cwd=output.parent, device="cpu", cancel=cancel,
                        jail=cell_jail, threads=lane.threads)
