"""Launching one experiment: the jail or not, the folder it writes, the parameters it is told, the runner.

The loop decides what to run (a commit, a seed, an experiment number) and on which lane; this module knows
how: the sandbox notebook as committed (the loop writes it to runs/<tag>/candidates/), copied into the
folder of the kernel that runs it (one started ahead, execution/warm.py, or one started now), executed there
by the runner's `Kernel` inside the bubblewrap jail with the training split read-only (and the inputs the
data was prepared from masked, wherever a bound path holds them), under the run's wall-clock limit. The
folder ends up as runs/<tag>/notebooks/<n>-<commit>/, the one place the experiment may write.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.execution.lanes import Job, Lane
from autoresearch_kernel.execution.runner import Kernel, RunResult
from autoresearch_kernel.execution.spec import ExperimentSpec
from autoresearch_kernel.execution.warm import WarmKernels, settle_folder
from autoresearch_kernel.harness import warm as harness_warm
from autoresearch_kernel.harness.data import input_paths, training_files
from autoresearch_kernel.harness.parameters import ExperimentParameters
from autoresearch_kernel.integrity import jail, limits
from autoresearch_kernel.integrity.environment import experiment_env
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


def run_experiment(spec: ExperimentSpec, folder: RunFolder, job: Job, lane: Lane, cancel,
                   kernels: WarmKernels | None = None) -> RunResult:
    """Execute the job's committed notebook (written by the loop to `folder.candidate`) once, on the lane's
    device and thread share, in the lane's kernel started ahead (`kernels`) or in one started now; `cancel`
    aborts it. Either way the run reads its own copy of the notebook, in its own folder, in a jail made
    by `experiment_jail`, and leaves everything in notebooks/<n>-<commit>/."""
    final = folder.experiment(job.number, job.commit)  # the one folder the experiment may write
    if kernels is None:
        shutil.rmtree(final, ignore_errors=True)  # what an interrupted attempt left
        final.mkdir(parents=True)
        kernel, where = Kernel(final, experiment_environment(lane), experiment_jail(spec, lane, final)), final
    else:
        kernel, where = kernels.take(lane)
    name = final.name
    source = where / f"{name}.source.ipynb"  # the kernel's copy: the loop's own stays in candidates/
    shutil.copyfile(folder.candidate(job.number, job.commit), source)
    try:
        # relative to the kernel's folder, so that the executed notebook names its files as they end up
        result = kernel.run(source, where / f"{name}.ipynb", _parameters(spec, job.seed, name, lane),
                            timeout_s=spec.timeout_s * job.timeout_scale, cancel=cancel,
                            cpu_ceiling_s=job.cpu_ceiling_s)
    finally:
        kernel.close()
        _remove_copy(source)
        if kernels is not None and not (cancel is not None and cancel.is_set()):
            kernels.after_run(lane)  # under a time budget the lane's next kernel starts only now
    if where == final:
        return result
    settle_folder(where, final)
    return dataclasses.replace(result, output_path=final / result.output_path.name,
                               log_path=final / result.log_path.name)


def _remove_copy(source: Path) -> None:
    """The kernel's copy of the notebook, gone; the experiment could have made the name anything (a folder, a
    link: never followed), and what it made stays in its folder rather than stop the loop."""
    try:
        os.unlink(source)
    except OSError:
        pass


def warm_kernels(spec: ExperimentSpec, folder: RunFolder, notebook) -> WarmKernels:
    """The loop's kernels started ahead, one per lane (execution/warm.py); the GPT task's also warm up, where
    the sandbox `notebook`'s harness cells use the harness."""
    serves = spec.task.is_gpt and harness_warm.serves(notebook)
    code = harness_warm.warm_up_code(spec.profile, spec.data_dir) if serves else ""
    return WarmKernels(folder.kernel_slots, lambda lane, where: experiment_jail(spec, lane, where),
                       experiment_environment, code, ahead=not spec.timed)


def experiment_jail(spec: ExperimentSpec, lane: Lane, writable: Path) -> jail.Jail | None:
    """The jail of a run writing `writable` on `lane`: read-only, the task's public data (the GPT's training
    split, with the inputs it was prepared from masked wherever a bound path holds them); writable, that
    folder alone; the profile's resource limits at the lane's share of the cores. None when unjailed."""
    if not spec.jailed:
        return None
    device = lane.device
    resource = limits.for_profile(spec.profile, cpus=lane.threads or os.cpu_count())
    if spec.task.is_gpt:
        return jail.Jail(readonly=tuple(training_files(spec.data_dir, spec.profile)), writable=(writable,),
                         gpu=device.startswith("cuda"), limits=resource,
                         masked=tuple(input_paths(spec.data_dir, spec.profile)))
    public = _public_data(spec)  # a task's private data (held-out labels, ...) is never bound there
    return jail.Jail(readonly=(public,) if public.exists() else (), writable=(writable,), limits=resource)


def experiment_environment(lane: Lane) -> dict[str, str]:
    """A run's environment on `lane`: its device (a GPU lane sees its GPU as cuda) and its thread share."""
    device = lane.device
    return experiment_env(device if device.startswith("cuda") or device == "cpu" else None, threads=lane.threads)


def _parameters(spec: ExperimentSpec, seed: int, name: str, lane: Lane) -> dict:
    """What the notebook is told (its parameters cell's names); its own files by names relative to its
    folder."""
    if not spec.task.is_gpt:
        return task_parameters(spec, seed, name, _public_data(spec))
    device = lane.device
    return ExperimentParameters(
        profile=spec.profile,
        data_dir=spec.data_dir,
        # the runner narrows CUDA_VISIBLE_DEVICES to the assigned GPU, which the kernel sees as cuda
        device="cuda" if device.startswith("cuda:") else device,
        seed=seed,
        budget_seconds=float(spec.budget_seconds),
        budget_tokens=int(spec.budget_tokens),
        budget_flops=float(spec.budget_flops),
        metrics_path=f"{name}.metrics.json",
        evaluate=False,  # the scorer measures the model, outside the jail
    ).for_papermill()


def task_parameters(spec: ExperimentSpec, seed: int, name: str, public: Path) -> dict:
    """What a task's notebook is told (its parameters cell's names): the seed, its budget, where its public
    data is, where it writes its artifact and its own figures (in its folder)."""
    return {"SEED": seed, "BUDGET": spec.budget_amount, "DATA_DIR": str(public) if public.exists() else "",
            "DEVICE": "cpu", "ARTIFACT_PATH": spec.task.artifact_name or "artifact",
            "METRICS_PATH": f"{name}.metrics.json"}


def _public_data(spec: ExperimentSpec) -> Path:
    from autoresearch_kernel import tasks

    public, _ = tasks.prepare(spec.task, spec.data_dir)
    return public
