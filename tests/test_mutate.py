"""The offline mutate proposer: which constants it steps, how, and how it adapts and avoids repeats."""

import math
import re
from pathlib import Path

import nbformat
import pytest
from sandbox_fixture import sandbox_notebook

from autoresearch_kernel.errors import AutoresearchError, ProposalError
from autoresearch_kernel.proposers import HistoryEntry, ProposalContext, Usage, make_proposer
from autoresearch_kernel.proposers.mutate import MutateProposer
from autoresearch_kernel.workspace.constants import Effects, find_constants


def one_constant(line):
    """The fixture sandbox with a single agent constant, so every proposal steps that one."""
    notebook = sandbox_notebook()
    notebook.cells[3].source = f"# Optimisation\n{line}"
    return notebook


def propose(proposer, notebook, history=(), profile=None):
    return proposer.propose(ProposalContext(program="", notebook=notebook, history=list(history), profile=profile))


def test_finds_constants_in_the_agents_cells_only():
    notebook = sandbox_notebook()
    notebook.cells[2].source += "\nHARNESS_STEPS = 10"                  # a harness cell: never touched
    notebook.cells[4].source += "\nSEED_OFFSET = 1\nSCALE = 0.0\n    INDENTED = 3\nDEPTH = 99"
    kinds = {c.name: c.kind for c in find_constants(notebook)}
    assert kinds == {"DEPTH": "int", "MODEL_DIM": "pow2", "N_HEADS": "pow2", "BATCH_SIZE": "pow2",
                     "MATRIX_LR": "scale", "EMBED_LR": "scale", "WEIGHT_DECAY": "fraction",
                     "WARMDOWN_FRAC": "fraction"}
    assert next(c for c in find_constants(notebook) if c.name == "DEPTH").value == 4     # first assignment


def test_constants_of_the_profile_branch_that_runs_are_the_ones_stepped():
    notebook = one_constant('if run.profile.name == "gpu":\n    DEPTH = 8  # layers\nelse:\n    DEPTH = 4  # layers\n'
                            'if ON_CUDA:\n    WIDTH = 64\nfor i in range(2):\n    LR = 0.1')
    assert [(c.name, c.text, c.line) for c in find_constants(notebook, "gpu")] == [("DEPTH", "8", 2)]
    assert [(c.name, c.text, c.line) for c in find_constants(notebook)] == [("DEPTH", "4", 4)]  # PROFILE = "cpu"
    proposal = propose(MutateProposer(), notebook, profile="gpu")
    assert proposal.description in ("DEPTH 8 -> 6", "DEPTH 8 -> 10")
    lines = proposal.notebook.cells[3].source.splitlines()
    assert lines[2] == f"    DEPTH = {proposal.description.split()[-1]}  # layers" and lines[4] == "    DEPTH = 4  # layers"


def test_a_proposal_rewrites_one_literal_and_keeps_the_comment_column():
    notebook = sandbox_notebook()
    proposal = propose(MutateProposer(seed=1), notebook)
    name, old, arrow, new = proposal.description.split(" ")
    assert arrow == "->" and old != new
    before, after = notebook.cells[3].source.splitlines(), proposal.notebook.cells[3].source.splitlines()
    changed = [(b, a) for b, a in zip(before, after) if b != a]
    assert len(changed) == 1 and changed[0][1].startswith(f"{name} = {new}")
    assert changed[0][1].index("#") == changed[0][0].index("#")
    assert [c.source for i, c in enumerate(proposal.notebook.cells) if i != 3] == [
        c.source for i, c in enumerate(notebook.cells) if i != 3]
    assert proposal.usage == Usage() and proposal.notebook is not notebook
    assert notebook.cells[3].source == sandbox_notebook().cells[3].source
    nbformat.validate(proposal.notebook)


@pytest.mark.parametrize("line, pattern", [
    ("MATRIX_LR = 0.04  # lr", r"^MATRIX_LR 0\.04 -> (0\.05|0\.032)$"),
    ("EMBED_LR = 3e-4", r"^EMBED_LR 3e-4 -> (3\.75e-4|2\.4e-4)$"),
    ("BATCH_SIZE = 2**5", r"^BATCH_SIZE 2\*\*5 -> 2\*\*(4|6)$"),
    ("MODEL_DIM = 128", r"^MODEL_DIM 128 -> (64|256)$"),
    ("DEPTH = 8", r"^DEPTH 8 -> (6|10)$"),
    ("WARMDOWN_FRAC = 0.5", r"^WARMDOWN_FRAC 0\.5 -> (0\.4|0\.6)$"),
])
def test_step_shapes_by_kind(line, pattern):
    description = propose(MutateProposer(), one_constant(line)).description
    assert re.match(pattern, description), description


def test_same_seed_and_history_give_the_same_proposals_and_seeds_differ():
    def run(seed):
        proposer, notebook, history, out = MutateProposer(seed=seed), sandbox_notebook(), [], []
        for number in range(6):
            proposal = propose(proposer, notebook, history)
            status = "keep" if number % 2 else "discard"
            proposer.feedback(proposal, status)
            history.append(HistoryEntry(number, proposal.description, status, 1.0))
            notebook = proposal.notebook if status == "keep" else notebook
            out.append(proposal.description)
        return out
    assert run(0) == run(0)
    assert run(0) != run(1)


def test_keep_grows_the_step_in_the_same_direction_discard_shrinks_and_flips():
    proposer = MutateProposer()
    notebook = one_constant("MATRIX_LR = 0.04")
    first = propose(proposer, notebook)
    proposer.feedback(first, "keep")
    second = propose(proposer, first.notebook)
    old, new = (float(x) for x in first.description.split()[1::2])
    old2, new2 = (float(x) for x in second.description.split()[1::2])
    assert old2 == new and (new2 > old2) == (new > old)
    assert abs(math.log(new2 / old2)) > abs(math.log(new / old))            # a bigger step
    proposer.feedback(second, "discard")
    third = propose(proposer, first.notebook)
    old3, new3 = (float(x) for x in third.description.split()[1::2])
    assert old3 == new and (new3 > old3) != (new2 > old2)                   # the other way
    assert abs(math.log(new3 / old3)) < abs(math.log(new2 / old2))          # a smaller step


def test_a_size_that_is_no_power_of_two_keeps_its_granularity():
    # HEAD_DIM 48 once became 41, an odd head dim that rotary embeddings cannot split: a wasted crash.
    proposer, notebook, history = MutateProposer(), one_constant("HEAD_DIM = 48"), []
    for number in range(6):
        try:
            proposal = propose(proposer, notebook, history)
        except ProposalError:
            break
        proposer.feedback(proposal, "discard")
        history.append(HistoryEntry(number, proposal.description, "discard", 1.1))
    values = [int(entry.description.split(" -> ")[1]) for entry in history]
    assert values and all(value % 16 == 0 and value > 0 for value in values), values


def test_changes_already_tried_are_not_proposed_again():
    notebook = one_constant("MATRIX_LR = 0.04")
    history = [HistoryEntry(1, "MATRIX_LR 0.04 -> 0.05", "discard", 1.1),
               HistoryEntry(2, "MATRIX_LR 0.04 -> 0.032", "discard", 1.1)]
    description = propose(MutateProposer(), notebook, history).description
    assert description not in {"MATRIX_LR 0.04 -> 0.05", "MATRIX_LR 0.04 -> 0.032"}
    assert description.startswith("MATRIX_LR 0.04 -> ")


def test_a_duplicate_counts_as_tried_and_teaches_the_steps_nothing():
    """The loop refused the step as a repeat of an earlier run's (memory.py): the next proposal is another one,
    and the step size and direction stay as they were (nothing was measured)."""
    notebook = one_constant("MATRIX_LR = 0.04")
    proposer = MutateProposer()
    first = propose(proposer, notebook)
    proposer.feedback(first, "duplicate", 1.2)
    assert proposer.steps == {}
    history = [HistoryEntry(1, first.description, "duplicate", 1.2)]
    assert propose(proposer, notebook, history).description != first.description
    replayed = MutateProposer()
    propose(replayed, notebook, history)
    assert replayed.steps == {}


def test_no_change_is_proposed_twice_and_an_exhausted_space_is_a_proposal_error():
    # 2**2 may move within 2**0 .. 2**6: at most six other values, none proposed twice, then nothing is left.
    proposer, notebook, history = MutateProposer(), one_constant("BATCH_SIZE = 2**2"), []
    with pytest.raises(ProposalError, match="tried every step"):
        for number in range(20):
            proposal = propose(proposer, notebook, history)
            proposer.feedback(proposal, "discard")
            history.append(HistoryEntry(number, proposal.description, "discard", 1.1))
    descriptions = [entry.description for entry in history]
    assert len(set(descriptions)) == len(descriptions) >= 4
    assert set(descriptions) <= {f"BATCH_SIZE 2**2 -> 2**{n}" for n in (0, 1, 3, 4, 5, 6)}


def test_fixes_and_sandboxes_without_constants_raise_proposal_error():
    with pytest.raises(ProposalError, match="cannot fix a crash"):
        MutateProposer().propose(ProposalContext("", sandbox_notebook(), [], failure="Traceback ..."))
    with pytest.raises(ProposalError, match="no `UPPER_CASE = <number>` constants"):
        propose(MutateProposer(), one_constant("lr = 0.1"))


def test_a_resumed_proposer_rebuilds_its_state_from_the_history():
    notebook, history = one_constant("MATRIX_LR = 0.04"), []
    live = MutateProposer(seed=5)
    for number, status in enumerate(["keep", "discard", "crash", "keep"]):
        proposal = propose(live, notebook, history)
        live.feedback(proposal, status)
        history.append(HistoryEntry(number, proposal.description, status, 1.0))
        notebook = proposal.notebook if status == "keep" else notebook
    resumed = MutateProposer(seed=5)
    assert propose(resumed, notebook, history).description == propose(live, notebook, history).description


def test_make_proposer():
    assert make_proposer("mutate", seed=3).seed == 3
    assert make_proposer("mutate", seed=None).seed == 0                     # None: not given
    with pytest.raises(AutoresearchError, match="the mutate proposer cannot take these options"):
        make_proposer("mutate", model="gpt")
    with pytest.raises(AutoresearchError, match="choose one of mutate, llm"):
        make_proposer("random")


def test_the_shipped_sandbox_has_constants_to_climb_under_each_profile():
    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "train_template.ipynb", as_version=4)
    for profile in ("cpu", "gpu"):
        names = {c.name for c in find_constants(notebook, profile)}
        assert {"DEPTH", "MATRIX_LR", "WEIGHT_DECAY"} <= names, (profile, names)
    proposal = propose(MutateProposer(), notebook, profile="cpu")
    nbformat.validate(proposal.notebook)
    changed = [i for i, (a, b) in enumerate(zip(notebook.cells, proposal.notebook.cells)) if a.source != b.source]
    assert len(changed) == 1 and not proposal.notebook.cells[changed[0]].metadata.get("tags")


def test_a_step_whose_effective_value_is_unchanged_is_not_proposed():
    # TOTAL_BATCH_SIZE is read only by GRAD_ACCUM_STEPS = max(1, round(TOTAL / (DEVICE x SEQ_LEN))): on the cpu
    # profile (SEQ_LEN 256) 2048 -> 1024 or 512 is still one pass of 8 x 256 tokens, the parent bit for bit.
    notebook = one_constant("DEVICE_BATCH_SIZE = 8  # rows per pass\nTOTAL_BATCH_SIZE = 2048\n"
                            "SEQ_LEN = run.profile.seq_len\n"
                            "GRAD_ACCUM_STEPS = max(1, round(TOTAL_BATCH_SIZE / (DEVICE_BATCH_SIZE * SEQ_LEN)))")
    history = [HistoryEntry(1, "DEVICE_BATCH_SIZE 8 -> 16", "discard", 1.0),
               HistoryEntry(2, "DEVICE_BATCH_SIZE 8 -> 4", "discard", 1.0)]
    for seed in range(20):
        proposal = propose(MutateProposer(seed=seed), notebook, history, profile="cpu")
        assert proposal.description.startswith("TOTAL_BATCH_SIZE 2048 -> "), proposal.description
        assert int(proposal.description.split()[-1]) >= 4096, proposal.description   # 2 passes or more
    # On the gpu profile (SEQ_LEN 2048) a smaller total is one pass instead of more: a real change.
    gpu = one_constant("DEVICE_BATCH_SIZE = 1\nTOTAL_BATCH_SIZE = 4096\nSEQ_LEN = run.profile.seq_len\n"
                       "GRAD_ACCUM_STEPS = max(1, round(TOTAL_BATCH_SIZE / (DEVICE_BATCH_SIZE * SEQ_LEN)))")
    descriptions = {propose(MutateProposer(seed=seed), gpu, history, profile="gpu").description for seed in range(20)}
    assert "TOTAL_BATCH_SIZE 4096 -> 2048" in descriptions


def test_a_constant_used_elsewhere_is_stepped_whatever_its_rules_give():
    # LR also reaches a function body, which the check does not evaluate: it counts as an effect.
    notebook = one_constant("LR = 0.04\nLR_STEPS = max(1, round(LR))\ndef lr():\n    return LR")
    assert propose(MutateProposer(), notebook, profile="cpu").description.startswith("LR 0.04 -> ")


def test_the_effects_of_the_shipped_sandbox():
    notebook = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / "train_template.ipynb", as_version=4)
    cpu, gpu = Effects(notebook, "cpu"), Effects(notebook, "gpu")
    assert cpu.changes_nothing("TOTAL_BATCH_SIZE", "1024") and cpu.changes_nothing("TOTAL_BATCH_SIZE", "512")
    assert not cpu.changes_nothing("TOTAL_BATCH_SIZE", "4096")          # two passes of 8 x 256
    assert not gpu.changes_nothing("TOTAL_BATCH_SIZE", "262144")        # one pass of 128 x 2048 instead of two
    for name, new in [("DEVICE_BATCH_SIZE", "4"), ("DEPTH", "5"), ("HEAD_DIM", "64"), ("MATRIX_LR", "0.05")]:
        assert not cpu.changes_nothing(name, new), name
