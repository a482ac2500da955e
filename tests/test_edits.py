"""The edit format: notebook -> percent-format text, and replies (SEARCH/REPLACE or whole notebook) -> notebook."""

import ast
from pathlib import Path

import nbformat
import pytest
from reply_corpus import load_corpus, template
from sandbox_fixture import sandbox_notebook

from autoresearch_kernel.errors import ProposalError
from autoresearch_kernel.integrity.shape import check_structure
from autoresearch_kernel.proposers.edits import (
    apply_reply,
    clean_notebook,
    is_protected,
    notebook_to_text,
    parse_reply,
    strip_reasoning,
    text_to_cells,
)


def block(search, replace):
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_text_marks_cells_and_round_trips():
    notebook = sandbox_notebook()
    text = notebook_to_text(notebook)
    assert text.count("# %%") == len(notebook.cells)
    assert "# %% [markdown]\n# # Training sandbox" in text
    assert text.count("(harness-owned: do not edit)") == 3
    assert '# %% (harness-owned: do not edit) tags=["parameters"]' in text
    assert [(cell.cell_type, cell.source) for cell in notebook.cells] == text_to_cells(text)
    assert [is_protected(cell) for cell in notebook.cells] == [False, True, True, False, False, False, True]


def test_search_replace_edits_one_line_keeps_identity_and_clears_outputs():
    notebook = sandbox_notebook()
    notebook.cells[3].outputs = [nbformat.v4.new_output("stream", text="old output")]
    notebook.cells[3].execution_count = 7
    reply = ("Here is my idea.\n**Description:** raise the matrix LR\n\n```\n"
             + block("MATRIX_LR = 0.04        # learning rate of the block matrices   ",   # trailing blanks
                     "MATRIX_LR = 0.05        # learning rate of the block matrices")
             + "```\n")
    description, edited = apply_reply(notebook, reply)
    assert description == "raise the matrix LR"
    assert "MATRIX_LR = 0.05 " in edited.cells[3].source
    assert "MATRIX_LR = 0.04" not in edited.cells[3].source
    assert edited.cells[3].id == "cell-3" and edited.cells[3].outputs == [] and edited.cells[3].execution_count is None
    assert [cell.source for cell in edited.cells[4:]] == [cell.source for cell in notebook.cells[4:]]
    assert notebook.cells[3].source.count("0.04") == 1      # the input notebook is not modified
    nbformat.validate(edited)


def test_several_blocks_apply_in_order_and_can_add_and_remove_cells():
    notebook = sandbox_notebook()
    reply = "description: deeper, and a new cell\n" + block("DEPTH = 4               # number of transformer blocks", "DEPTH = 6") + block(
        "model = TinyModel().to(run.device)",
        "model = TinyModel().to(run.device)\n\n# %%\nprint(sum(p.numel() for p in model.parameters()))",
    ) + block("# # Training sandbox\n# The agent edits the cells between the harness cells.", "")
    description, edited = apply_reply(notebook, reply)
    assert description == "deeper, and a new cell"
    assert len(edited.cells) == len(notebook.cells)      # one markdown cell removed, one code cell added
    assert edited.cells[0].metadata["tags"] == ["parameters"]
    assert "DEPTH = 6" in edited.cells[2].source
    assert edited.cells[3].source.endswith("model = TinyModel().to(run.device)")
    new_cell = edited.cells[4]
    assert new_cell.source == "print(sum(p.numel() for p in model.parameters()))"
    assert new_cell.id not in {cell.id for cell in notebook.cells} and new_cell.metadata == {}
    assert edited.cells[4].id == apply_reply(notebook, reply)[1].cells[4].id     # ids are deterministic
    nbformat.validate(edited)


def test_missing_match_names_the_block_and_the_closest_line():
    with pytest.raises(ProposalError) as caught:
        apply_reply(sandbox_notebook(), "Description: x\n" + block("N_HEADS = 4             # attention heads", "N_HEADS = 2")
                    + block("MATRIX_LR = 0.4  # lr", "MATRIX_LR = 0.5")
                    + block("lr=MATRIX_LR, weight_decay=WEIGHT_DECAY)", "lr=MATRIX_LR)"))
    message = str(caught.value)
    assert "block 2 (SEARCH starting `MATRIX_LR = 0.4  # lr`) matches nothing" in message
    assert "closest existing line is `MATRIX_LR = 0.04" in message
    assert "block 3 (SEARCH starting `lr=MATRIX_LR, weight_decay=WEIGHT_DECAY)`) matches nothing" in message
    assert "SEARCH lines must be whole lines, and `optimizer = torch.optim.AdamW(" in message
    assert "block 1" not in message and message.endswith("Nothing was applied: send the corrected reply.")


@pytest.mark.parametrize("indents, how", [(("", ""), ""), (("    ", "        "), " when indentation is ignored")])
def test_ambiguous_match_is_an_error_naming_the_cells(indents, how):
    # A looser comparison (here: indentation ignored) is only used when it still matches exactly one place.
    notebook = sandbox_notebook()
    notebook.cells[4].source += f"\n{indents[0]}print('ready')"
    notebook.cells[5].source += f"\n{indents[1]}print('ready')"
    with pytest.raises(ProposalError, match=rf"block 1 .* matches 2 places{how} \(cell 4, cell 5\)"):
        apply_reply(notebook, "Description: x\n" + block("print('ready')", "print('go')"))


@pytest.mark.parametrize("reply, message", [
    ("DEPTH = 5", "no `Description: <one line>` line"),
    ("Description: nothing here", "no SEARCH/REPLACE block and no ```python block"),
    ("Description: x\n<<<<<<< SEARCH\nDEPTH = 4\n>>>>>>> REPLACE\n", "no `=======` line"),
    ("Description: x\n<<<<<<< SEARCH\nDEPTH = 4\n=======\nDEPTH = 5\n", "not closed"),
    ("Description: x\n" + block("", "DEPTH = 5"), "empty SEARCH part"),
    ("Description: x\n" + block("WEIGHT_DECAY = 0.0      # AdamW weight decay", "WEIGHT_DECAY = 0.0      # AdamW weight decay  "), "leaves the notebook unchanged"),
    ("Description: x\n```python\n# %%\na = 1\n```\n```python\n# %%\nb = 1\n```\n", "2 fenced notebooks"),
])
def test_malformed_replies_raise_actionable_errors(reply, message):
    with pytest.raises(ProposalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_reply(sandbox_notebook(), reply)


def test_whole_notebook_reply_maps_cells_back_by_content():
    notebook = sandbox_notebook()
    text = notebook_to_text(notebook)
    # The model edits the hyperparameters, inserts a cell before the training loop, drops the markdown cell,
    # and writes bare `# %%` markers (no tags) for the harness cells.
    text = text.replace("DEPTH = 4 ", "DEPTH = 8 ").replace('(harness-owned: do not edit) tags=["harness"]', "")
    text = text.replace("# %%\noptimizer", "# %%\ntorch.manual_seed(1)\n\n# %%\noptimizer")
    text = text[text.index('# %% (harness-owned: do not edit) tags=["parameters"]'):]
    description, edited = apply_reply(notebook, f"Description: depth 8\n```python\n{text}```\n")
    assert description == "depth 8"
    ids = [cell.id for cell in edited.cells]
    assert ids[:4] == ["cell-1", "cell-2", "cell-3", "cell-4"] and ids[5:] == ["cell-5", "cell-6"]
    assert [cell.metadata.get("tags") for cell in edited.cells] == [
        ["parameters"], ["harness"], None, None, None, None, ["harness"]]
    assert edited.cells[2].source.startswith("# Model\nDEPTH = 8 ")
    assert edited.cells[4].source == "torch.manual_seed(1)"
    nbformat.validate(edited)


def test_whole_notebook_reply_cannot_smuggle_tags_and_edits_to_harness_cells_stay_visible():
    notebook = sandbox_notebook()
    text = notebook_to_text(notebook).replace("harness.finish(run, model)", "print('val_bpb: 0.1')")
    text = text.replace("# %%\n# Model", '# %% tags=["harness"]\n# Model')
    _, edited = apply_reply(notebook, f"Description: cheat\n```python\n{text}```")
    # The edited report cell keeps its harness tag (so the scope guard sees a changed harness cell), and the
    # tags written by the model are ignored.
    assert edited.cells[6].metadata["tags"] == ["harness"] and "val_bpb: 0.1" in edited.cells[6].source
    assert edited.cells[3].metadata == {}


def test_parse_reply_prefers_blocks_over_fences():
    parsed = parse_reply("Description: a\n```python\n" + block("DEPTH = 4", "DEPTH = 5") + "```\n")
    assert len(parsed.blocks) == 1 and parsed.script is None
    assert parsed.blocks[0].search == "DEPTH = 4" and parsed.blocks[0].replace == "DEPTH = 5"


def test_clean_notebook_drops_volatile_metadata():
    notebook = sandbox_notebook()
    notebook.metadata["papermill"] = {"duration": 3.0}
    notebook.cells[3].metadata["execution"] = {"iopub.status.busy": "now"}
    notebook.cells[3].metadata["tags"] = ["keep-me"]
    clean_notebook(notebook)
    assert "papermill" not in notebook.metadata and notebook.cells[3].metadata == {"tags": ["keep-me"]}


def test_the_example_in_program_md_quotes_the_template_and_applies():
    # program.md documents the reply format for the model, which copies its example: the example's SEARCH
    # lines must be real lines of the shipped sandbox, quoted exactly (not merely close enough to match).
    program = (Path(__file__).resolve().parents[1] / "program.md").read_text()
    example = "Description:" + program.split("```\nDescription:", 1)[1].split("```", 1)[0]
    shown = notebook_to_text(template()).splitlines()
    (example_block,) = parse_reply(example).blocks
    assert all(line in shown for line in example_block.search.splitlines())
    description, edited = apply_reply(template(), example)
    assert description == "raise the matrix learning rate to 0.05"
    assert "\nMATRIX_LR = 0.05 " in "\n".join(cell.source for cell in edited.cells)


def test_the_shipped_sandbox_round_trips_through_text():
    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "train_template.ipynb", as_version=4)
    cells = text_to_cells(notebook_to_text(notebook))
    assert cells == [(cell.cell_type, cell.source) for cell in notebook.cells]


# -- replies as models write them -----------------------------------------------------------------------------

@pytest.mark.parametrize("reply", load_corpus(), ids=lambda reply: reply.name)
def test_every_reply_of_the_corpus_applies_to_the_template_on_the_first_try(reply):
    base = template()
    description, edited = apply_reply(base, reply.text)
    assert description == reply.description
    source = "\n".join(cell.source for cell in edited.cells)
    assert [line for line in reply.contains if line not in source] == []
    assert [line for line in reply.absent if line in source] == []
    if reply.cells is not None:
        assert len(edited.cells) == reply.cells
    # What the rest of the workbench relies on: harness cells untouched (id, tags, source), code that parses.
    assert check_structure(base, edited) is None
    for cell in edited.cells:
        if cell.cell_type == "code":
            ast.parse(cell.source)
    nbformat.validate(edited)


def test_the_corpus_is_large_and_varied():
    corpus = load_corpus()
    assert len(corpus) >= 20
    assert any("\r\n" in reply.text for reply in corpus) and any("<think>" in reply.text for reply in corpus)


def test_search_with_dropped_or_extra_indentation_is_shifted_like_the_notebook():
    notebook = sandbox_notebook()
    dropped = block("loss.backward()\noptimizer.step()", "loss.backward()\ntorch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\noptimizer.step()")
    _, edited = apply_reply(notebook, "Description: clip\n" + dropped)
    assert "    loss.backward()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.step()" in edited.cells[5].source
    extra = block("        DEPTH = 4               # number of transformer blocks", "        DEPTH = 5               # number of transformer blocks")
    _, edited = apply_reply(notebook, "Description: deeper\n" + extra)
    assert "\nDEPTH = 5               # number of transformer blocks\n" in edited.cells[3].source


def test_a_left_out_comment_stays_on_a_rewritten_assignment():
    _, edited = apply_reply(sandbox_notebook(), "Description: x\n" + block("DEPTH = 4\nMODEL_DIM = 128", "DEPTH = 6\nMODEL_DIM = 256"))
    assert "\nDEPTH = 6               # number of transformer blocks\nMODEL_DIM = 256         # width of" in edited.cells[3].source
    # Any other line is taken as written: its old comment may no longer be true.
    _, edited = apply_reply(sandbox_notebook(), "Description: x\n" + block("BATCH_SIZE = 2**5", "BATCH_SIZE = 2**6  # more"))
    assert "\nBATCH_SIZE = 2**6  # more\n" in edited.cells[3].source


def test_a_search_indented_unevenly_wrong_is_refused():
    uneven = block("loss.backward()\n        optimizer.step()", "loss.backward()")
    with pytest.raises(ProposalError, match="indentation differs from the notebook's by different amounts"):
        apply_reply(sandbox_notebook(), "Description: x\n" + uneven)


def test_reasoning_is_dropped_before_parsing():
    reply = "<think>\nDescription: a draft\n" + block("NOT_IN_THE_NOTEBOOK = 1", "x") + "</think>\nDescription: the real one\n"
    assert strip_reasoning(reply) == "\nDescription: the real one\n"
    assert strip_reasoning("thinking without its opening tag</think>\nanswer") == "\nanswer"
    assert strip_reasoning("a\r\nb\r\n") == "a\nb\n"
    description, _ = apply_reply(sandbox_notebook(), reply + block("N_HEADS = 4             # attention heads", "N_HEADS = 2"))
    assert description == "the real one"


def test_description_is_found_after_the_edit_and_never_inside_it():
    edit = block("# Model\nDEPTH = 4               # number of transformer blocks", "# Description: not this\nDEPTH = 5")
    assert parse_reply(edit + "\nDescription: deeper\n").description == "deeper"
    assert parse_reply("## Description\n\n**Deeper model**\n" + edit).description == "Deeper model"


def test_a_search_may_quote_a_cell_marker_exactly_as_shown():
    notebook = sandbox_notebook()
    _, edited = apply_reply(notebook, "Description: x\n" + block("# %%\nimport torch", "# %%\nimport math\nimport torch"))
    assert edited.cells[4].source.startswith("import math\nimport torch\n") and edited.cells[4].id == "cell-4"
