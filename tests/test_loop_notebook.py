"""notebooks/loop.ipynb runs top to bottom under papermill (headless): on a finished run with no loop
running, and on a results.tsv in the reference project's five-column format. Real kernel, real papermill.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
from loop_fixture import make_repo

from autoresearch_kernel.dashboard import results_path
from autoresearch_kernel.journal import results

LOOP_NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "loop.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

REFERENCE_TSV = Path(__file__).with_name("reference_results.tsv")  # the reference project's five columns


def execute(tmp_path: Path, **parameters) -> nbformat.NotebookNode:
    output = tmp_path / "loop.out.ipynb"
    papermill.execute_notebook(
        str(LOOP_NOTEBOOK), str(output), parameters=parameters, cwd=str(tmp_path), kernel_name="python3",
        progress_bar=False, execution_timeout=120,
    )
    return nbformat.read(output, as_version=4)


def texts(notebook: nbformat.NotebookNode) -> str:
    """Everything the code cells printed or showed as text."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
            parts.append(output.get("data", {}).get("text/html", ""))
    return "\n".join(str(part) for part in parts)


def mime_types(notebook: nbformat.NotebookNode) -> set[str]:
    return {kind for cell in notebook.cells for output in cell.get("outputs", []) for kind in output.get("data", {})}


def test_committed_notebook_is_clean_and_parameterised():
    notebook = nbformat.read(LOOP_NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert code[0].metadata.get("tags") == ["parameters"]
    for name in ("REPO", "TAG", "DATA_DIR", "PROPOSER", "RESULTS_TSV"):
        assert f"\n{name} = " in "\n" + code[0].source
    assert set(notebook.metadata) == {"kernelspec", "language_info"}


def test_every_field_of_the_form_is_a_parameter_of_the_notebook():
    # A papermill user (or a shortcut) starts what the form starts: optuna and lanes included.
    import dataclasses

    from autoresearch_kernel.dashboard import Settings

    code = [cell.source for cell in nbformat.read(LOOP_NOTEBOOK, as_version=4).cells if cell.cell_type == "code"]
    for field in dataclasses.fields(Settings):
        assert f"{field.name}=" in code[1], f"loop.ipynb does not pass {field.name} to the dashboard"


def test_runs_on_a_finished_run_with_no_loop_running(tmp_path):
    project = make_repo(tmp_path / "project")
    results.append(
        results_path(project, "done"),
        results.Row("a000001", 1.000, 0.2, "keep", "baseline", experiment=1, kind="baseline", best=1.0,
                    margin=0.002, noise_std=0.001),
        results.Row("a000002", 0.990, 0.2, "keep", "LR 0.04 -> 0.05", experiment=2, best=0.99, margin=0.002),
        results.Row("a000003", 0.995, 0.2, "discard", "DEPTH 4 -> 5", experiment=3, best=0.99, margin=0.002),
        results.Row("a000004", None, None, "crash", "WIDTH 128 -> 4096", experiment=4, best=0.99, margin=0.002,
                    failure="crash: RuntimeError: out of memory"),
    )
    notebook = execute(tmp_path, REPO=str(project), TAG="done")
    shown = texts(notebook)
    assert "1 baseline run (1.000000), 3 experiments: keep 1, discard 1, crash 1" in shown
    assert "LR 0.04 -&gt; 0.05" in shown or "LR 0.04 -> 0.05" in shown
    assert "image/png" in mime_types(notebook)  # the progress chart
    assert WIDGET_VIEW in mime_types(notebook)  # the dashboard was displayed, and the cell did not block


def test_runs_on_a_reference_results_tsv(tmp_path):
    reference = tmp_path / "reference" / "results.tsv"
    reference.parent.mkdir()
    reference.write_bytes(REFERENCE_TSV.read_bytes())
    notebook = execute(tmp_path, REPO=str(tmp_path), RESULTS_TSV=str(reference))  # not even a git repository
    shown = texts(notebook)
    assert "1 baseline run (0.997900), 4 experiments: keep 2, discard 1, crash 1" in shown and "(-0.78%)" in shown
    assert "rotary base 200k" in shown
    assert "image/png" in mime_types(notebook)
