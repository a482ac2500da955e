"""A small sandbox notebook shaped like notebooks/train_template.ipynb, for the proposer tests.

Parameters cell, harness set-up cell, the agent's cells with `UPPER_CASE = number` constants, harness report
cell. It is never executed: the proposer tests only read and edit it.
"""

import nbformat

PARAMETERS = 'PROFILE = "cpu"\nSEED = 0\nBUDGET_SECONDS = 0.0\nBUDGET_TOKENS = 0\nMETRICS_PATH = "metrics.json"'
SETUP = "from autoresearch_kernel import harness\nrun = harness.start(profile=PROFILE, seed=SEED)"
HYPERPARAMETERS = """\
# Model
DEPTH = 4               # number of transformer blocks
MODEL_DIM = 128         # width of the residual stream
N_HEADS = 4             # attention heads
# Optimisation
BATCH_SIZE = 2**5       # sequences per step
MATRIX_LR = 0.04        # learning rate of the block matrices
EMBED_LR = 3e-4         # learning rate of the embeddings
WEIGHT_DECAY = 0.0      # AdamW weight decay
WARMDOWN_FRAC = 0.5     # fraction of the budget spent decaying the learning rate"""
MODEL = """\
import torch
import torch.nn as nn

class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(run.profile.vocab_size, MODEL_DIM)
        self.head = nn.Linear(MODEL_DIM, run.profile.vocab_size)

    def forward(self, idx):
        return self.head(self.emb(idx))

model = TinyModel().to(run.device)"""
TRAIN = """\
optimizer = torch.optim.AdamW(model.parameters(), lr=MATRIX_LR, weight_decay=WEIGHT_DECAY)
for step, (x, y, epoch) in enumerate(run.batches(BATCH_SIZE)):
    loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    run.tick(step, loss)
    if run.done():
        break"""
REPORT = "harness.finish(run, model)"


def sandbox_notebook() -> nbformat.NotebookNode:
    """A fresh copy of the fixture sandbox (nbformat 4.5, with cell ids and tags)."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    cells = [
        nbformat.v4.new_markdown_cell("# Training sandbox\nThe agent edits the cells between the harness cells."),
        nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(SETUP, metadata={"tags": ["harness"]}),
        nbformat.v4.new_code_cell(HYPERPARAMETERS),
        nbformat.v4.new_code_cell(MODEL),
        nbformat.v4.new_code_cell(TRAIN),
        nbformat.v4.new_code_cell(REPORT, metadata={"tags": ["harness"]}),
    ]
    for number, cell in enumerate(cells):
        cell.id = f"cell-{number}"      # fixed ids, so tests can check which cell kept its identity
    notebook.cells = cells
    nbformat.validate(notebook)
    return notebook
