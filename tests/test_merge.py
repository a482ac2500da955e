"""The cell-level three-way merge that re-applies a stale candidate's change onto the new best."""
import nbformat
import pytest

from autoresearch_kernel.workspace.merge import merge3, merge_notebooks
from autoresearch_kernel.workspace.notebook import canonical


@pytest.mark.parametrize("base, ours, theirs, merged", [
    ("abcde", "aXcde", "abcYe", "aXcYe"),  # different items: both apply
    ("abcde", "aXcde", "abYde", "aXYde"),  # neighbours do not conflict (unlike diff3 in git)
    ("abc", "abc", "aYc", "aYc"),  # one side only
    ("abc", "aXc", "aXc", "aXc"),  # the same change on both sides
    ("abc", "abXc", "Zabc", "ZabXc"),  # insertions at different places
    ("abc", "ac", "abcY", "acY"),  # a deletion and an insertion elsewhere
])
def test_merge3_applies_both_sides(base, ours, theirs, merged):
    assert "".join(merge3(base, ours, theirs)) == merged


@pytest.mark.parametrize("base, ours, theirs", [
    ("abc", "aXc", "aYc"),  # the same item changed differently
    ("abc", "abXc", "abYc"),  # different insertions at one place
    ("abc", "ac", "aYc"),  # one deletes what the other changes
])
def test_merge3_refuses_a_conflict(base, ours, theirs):
    assert merge3(base, ours, theirs) is None


def notebook(*sources, tags=None):
    made = nbformat.v4.new_notebook()
    made.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    if tags:
        made.cells[0].metadata["tags"] = tags
    return made


PARENT = notebook("SEED = 0", "LR = 0.01\nDEPTH = 4\nWD = 0.1", "train()", tags=["parameters"])


def test_constants_on_different_lines_of_one_cell_merge():
    best = notebook("SEED = 0", "LR = 0.02\nDEPTH = 4\nWD = 0.1", "train()", tags=["parameters"])
    candidate = notebook("SEED = 0", "LR = 0.01\nDEPTH = 8\nWD = 0.1", "train()\nplot()", tags=["parameters"])
    merged = merge_notebooks(PARENT, best, candidate)
    assert [c.source for c in merged.cells] == ["SEED = 0", "LR = 0.02\nDEPTH = 8\nWD = 0.1", "train()\nplot()"]
    assert merged.cells[0].metadata["tags"] == ["parameters"]  # the contract cell keeps its tag
    nbformat.validate(merged)
    assert canonical(merged)  # committable


def test_a_cell_added_by_the_candidate_lands_after_the_best_s_changes():
    best = notebook("SEED = 0", "LR = 0.02\nDEPTH = 4\nWD = 0.1", "train()", tags=["parameters"])
    candidate = notebook("SEED = 0", "LR = 0.01\nDEPTH = 4\nWD = 0.1", "import math", "train()", tags=["parameters"])
    merged = merge_notebooks(PARENT, best, candidate)
    assert [c.source for c in merged.cells] == ["SEED = 0", "LR = 0.02\nDEPTH = 4\nWD = 0.1", "import math", "train()"]


def test_the_same_constant_moved_both_ways_does_not_merge():
    best = notebook("SEED = 0", "LR = 0.02\nDEPTH = 4\nWD = 0.1", "train()")
    candidate = notebook("SEED = 0", "LR = 0.005\nDEPTH = 4\nWD = 0.1", "train()")
    assert merge_notebooks(PARENT, best, candidate) is None
