"""notebooks/00_prepare.ipynb: committed clean, and runs top to bottom under papermill."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "00_prepare.ipynb"


def test_committed_without_outputs_and_with_a_parameters_cell():
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    tagged = [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]
    assert len(tagged) == 1 and "DATA_DIR" in "".join(tagged[0]["source"])


def test_runs_under_papermill_into_a_temporary_data_dir(tmp_path):
    output = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(output),
        parameters={"DATA_DIR": str(tmp_path / "data"), "PROFILE": "cpu", "SOURCE": "embedded"},
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )
    assert (tmp_path / "data" / "cpu" / "manifest.json").is_file()
    text = "".join(
        output.get("text", "") for cell in nbformat.read(output, as_version=4).cells for output in cell.get("outputs", [])
    )
    assert "prepared embedded for profile cpu" in text
    assert "round trip ok: True" in text and "round trip ok: False" not in text
    assert "bytes per token" in text and "target tokens" in text
