"""The sandbox's Python twin: a lossless round trip of the real template, and which file an agent edited."""
from pathlib import Path

import nbformat
import pytest
from loop_fixture import sandbox_notebook

from autoresearch_kernel.agent.twin import TWIN, read_edit, twin_text, write_twin
from autoresearch_kernel.errors import StepRefused
from autoresearch_kernel.integrity.shape import check_structure
from autoresearch_kernel.proposers.edits import rebuild
from autoresearch_kernel.workspace.worktree import SANDBOX, canonical

TEMPLATE = Path(__file__).parent.parent / SANDBOX


def test_the_template_survives_the_round_trip_byte_for_byte():
    notebook = nbformat.read(TEMPLATE, as_version=4)
    back = rebuild(notebook, twin_text(notebook))
    assert canonical(back) == canonical(notebook) == TEMPLATE.read_text()
    assert check_structure(notebook, back) is None
    assert twin_text(notebook).startswith("# %%") and "(harness-owned: do not edit)" in twin_text(notebook)


def test_an_edit_of_the_twin_keeps_the_harness_cells_ids_and_tags(tmp_path):
    base = sandbox_notebook()
    twin = _worktree(tmp_path, base) / TWIN
    twin.write_text(twin.read_text().replace("VALUE = 1.0 ", "VALUE = 0.5 "))
    edited_file, edited = read_edit(tmp_path, base)
    assert edited_file == TWIN and "VALUE = 0.5" in edited.cells[1].source
    assert [c.id for c in edited.cells] == [c.id for c in base.cells]
    assert check_structure(base, edited) is None


def _worktree(tmp_path, base):
    (tmp_path / "notebooks").mkdir()
    nbformat.write(base, tmp_path / SANDBOX)
    write_twin(tmp_path, base)
    return tmp_path


def test_nothing_edited_reads_as_none_and_a_metadata_only_save_too(tmp_path):
    base = sandbox_notebook()
    worktree = _worktree(tmp_path, base)
    assert read_edit(worktree, base) is None
    saved = nbformat.read(worktree / SANDBOX, as_version=4)
    saved.metadata["language_info"] = {"name": "python"}  # what Jupyter adds on save
    saved.cells[1].execution_count = 3
    nbformat.write(saved, worktree / SANDBOX)
    (worktree / TWIN).unlink()  # a loop's clean-up removed the twin: not an edit either
    assert read_edit(worktree, base) is None


def test_an_edit_of_the_notebook_is_taken_and_both_edited_is_refused(tmp_path):
    base = sandbox_notebook()
    worktree = _worktree(tmp_path, base)
    notebook = nbformat.read(worktree / SANDBOX, as_version=4)
    notebook.cells[1].source = notebook.cells[1].source.replace("VALUE = 1.0", "VALUE = 0.7")
    nbformat.write(notebook, worktree / SANDBOX)
    assert read_edit(worktree, base)[0] == SANDBOX
    twin = worktree / TWIN
    twin.write_text(twin.read_text().replace("VALUE = 1.0", "VALUE = 0.7"))
    assert read_edit(worktree, base)[0] == TWIN  # the same edit in both: fine
    twin.write_text(twin.read_text().replace("VALUE = 0.7", "VALUE = 0.6"))
    with pytest.raises(StepRefused, match="both"):
        read_edit(worktree, base)
