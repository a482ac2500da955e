"""Scoring one finished run: the scorer's figure replaces whatever the kernel wrote, the morning's notebook
gets the scorer's summary, a run without a program to score is a crash, a figure below the profile's floor is
suspect. Called by the loop's guard and by a Ray node's lane worker, each with its own warm scorer.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import nbformat

from autoresearch_kernel.integrity import untrusted
from autoresearch_kernel.integrity.scorer import Scorer

SCORED_HEADING = "**Scored outside the experiment** by the loop's scorer (the kernel above measured nothing):"


def scoring_device(device: str) -> str:
    """Where the scorer measures: where the experiment trained (`auto` resolved as harness.start resolves it),
    so that an exported program runs on the device, and under the precision, it was traced for."""
    if device != "auto":
        return device
    from autoresearch_kernel.harness.experiment import pick_device

    return pick_device("auto").type


def score_result(result, scorer: Scorer, device: str):
    """(the result as scored, the Score or None): the scorer's val_bpb replaces whatever the kernel wrote, and
    its summary is appended to the executed notebook; a run without a program to score is a crash. Called by
    the loop's Guard and by a Ray node's lane worker (ray_executor), each with its own warm scorer.

    `device`: the scorer's device type (cuda scores under bf16, as the program was traced)."""
    if not result.ok:
        return result, None
    metrics = dict(result.metrics or {}, val_bpb=None)
    program = program_path_of(result)
    if metrics.get("export_failure"):
        return failed(result, "ExportFailed", f"the model could not be exported for the scorer: "
                                               f"{metrics['export_failure']}"), None
    try:
        os.close(untrusted.open_in(program.parent, program.name))  # a regular file, reached through no link
    except untrusted.RefusedFile as error:
        return failed(result, "RefusedFile", str(error)), None
    except OSError:
        return failed(result, "NoProgram", "the run left no exported program (harness.finish exports it)"), None
    measured = scorer.score(program, bf16=device == "cuda")
    if not measured.ok:
        return failed(result, "ScoringFailed", untrusted.clean(measured.failure)), measured
    metrics["val_bpb"] = round(measured.val_bpb, 6)
    append_summary(result.output_path, metrics, measured.seconds)
    scored = dataclasses.replace(result, metrics=metrics, forward_flops_per_token=measured.forward_flops_per_token,
                                 forward_us_per_token=measured.forward_us_per_token)
    suspect = suspect_reason(measured.val_bpb, scorer.profile)
    if suspect:
        return dataclasses.replace(scored, status="suspect", error_name="BelowFloor", error_message=suspect), measured
    return scored, measured


def suspect_reason(val_bpb: float, profile: str) -> str | None:
    """Why a scored val_bpb is not believed (below the profile's floor), or None."""
    from autoresearch_kernel.harness.profiles import get_profile

    floor = get_profile(profile).bpb_floor
    if val_bpb >= floor:
        return None
    return (f"val_bpb {val_bpb:.6f} is below {floor:g}, the floor no honest model of profile {profile} reaches: "
            "a leak of validation text or a cheat; not kept")


def failed(result, name: str, message: str):
    return dataclasses.replace(result, status="crash", error_name=name, error_message=message)


def append_summary(notebook: Path, metrics: dict, seconds: float) -> None:
    """The scorer's summary block as the executed notebook's last cell, so the morning's notebook is complete.

    `metrics` came from the kernel (but val_bpb): only finite numbers of the summary's names are shown."""
    from types import SimpleNamespace

    from autoresearch_kernel.harness.finish import SUMMARY_NAMES, summary
    from autoresearch_kernel.harness.metrics import finite_figure

    block = summary(SimpleNamespace(**{name: finite_figure(metrics.get(name)) for name in SUMMARY_NAMES}))
    append_cell(notebook, f"{SCORED_HEADING}\n\n```\n{block}\n```\n\nscored in {seconds:.1f} s")


def append_cell(notebook: Path, text: str) -> None:
    """A markdown cell at the end of the executed notebook (the scorer's word, for the morning)."""
    try:
        executed = nbformat.reads(untrusted.read_text(notebook, untrusted.NOTEBOOK_BYTES), as_version=4)
        executed.cells.append(nbformat.v4.new_markdown_cell(text))
        untrusted.write_text(notebook, nbformat.writes(executed))  # never through a link the jail planted
    except Exception:  # the kernel wrote that notebook: an unreadable one still gets its row, unannotated
        return


def program_path_of(result) -> Path:
    """Where harness.finish exported the model: derived from the run's own output path, never from
    metrics.json (which the experiment wrote)."""
    from autoresearch_kernel.harness.finish import program_path

    return program_path(result.output_path.with_suffix(".metrics.json"))
