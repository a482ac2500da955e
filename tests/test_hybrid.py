"""The hybrid proposer: LLM code changes and Optuna's constants taking turns, over the real openai client."""

import pytest
from llm_server import scripted_llm  # noqa: F401  (a fixture)
from optuna.trial import TrialState
from sandbox_fixture import sandbox_notebook
from test_optuna_search import trials

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.proposers import HistoryEntry, Proposal, ProposalContext, make_proposer
from autoresearch_kernel.proposers.hybrid import HybridProposer


def reply(description, old, new):
    return f"Description: {description}\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"


LLM_REPLIES = [
    reply("raise the matrix learning rate", "MATRIX_LR = 0.04        # learning rate of the block matrices",
          "MATRIX_LR = 0.06        # learning rate of the block matrices"),
    reply("wider model", "MODEL_DIM = 128         # width of the residual stream",
          "MODEL_DIM = 256         # width of the residual stream"),
]


def hybrid(llm, folder, **options):
    return HybridProposer(base_url=llm.base_url, api_key="sk-test", model="scripted", study_path=folder,
                          constants="DEPTH", **options)


def test_turns_are_an_even_deterministic_share_per_seed(scripted_llm, tmp_path):
    def turns(**options):
        proposer = hybrid(scripted_llm, tmp_path, **options)
        return [proposer.turn(i) for i in range(100)]
    seed0 = turns(seed=0)
    assert seed0.count("llm") == 30 and seed0 == turns(seed=0) and seed0 != turns(seed=1)
    assert max(len(run) for run in "".join("L" if t == "llm" else "o" for t in seed0).split("L")) <= 3
    assert set(turns(llm_share=1.0)) == {"llm"} and set(turns(llm_share=0.0)) == {"optuna"}
    with pytest.raises(AutoresearchError, match="llm_share"):
        hybrid(scripted_llm, tmp_path, llm_share=1.5)


def test_each_builds_on_what_the_other_kept_and_says_who_proposed(scripted_llm, tmp_path):
    # seed 0, share 0.3: llm, optuna, optuna, llm, optuna
    scripted_llm.push(*LLM_REPLIES)
    proposer = make_proposer("hybrid", base_url=scripted_llm.base_url, api_key="sk-test", model="scripted",
                             study_path=str(tmp_path), constants="DEPTH", seed=0)
    notebook, history, made = sandbox_notebook(), [], []
    for number in range(5):
        proposal = proposer.propose(ProposalContext("", notebook, list(history), best_val_bpb=1.0, profile="cpu"))
        made.append(proposal)
        proposer.feedback(proposal, "keep", 0.9 - number / 100)
        history.append(HistoryEntry(number, proposal.description, "keep", 0.9 - number / 100))
        notebook = proposal.notebook
    assert [p.proposer for p in made] == ["llm", "optuna", "optuna", "llm", "optuna"]
    assert made[0].description == "raise the matrix learning rate"
    assert all(p.description.startswith("optuna: DEPTH ") for p in made if p.proposer == "optuna")
    assert "MATRIX_LR = 0.06" in made[1].notebook.cells[3].source       # optuna tunes on the LLM's change
    depth = made[2].description.split(" -> ")[-1]
    assert f"DEPTH = {depth}" in scripted_llm.prompt(1)                 # the LLM sees optuna's kept depth
    assert f"DEPTH = {depth}" in made[3].notebook.cells[3].source
    told = [t for t in trials(tmp_path, TrialState.COMPLETE) if t.user_attrs.get("description", "").startswith("optuna")]
    assert [t.value for t in told] == [pytest.approx(0.89), pytest.approx(0.88), pytest.approx(0.86)]
    assert len(scripted_llm.requests) == 2


def test_fixes_go_to_the_llm_and_a_resumed_proposal_goes_back_to_optuna(scripted_llm, tmp_path):
    proposer = hybrid(scripted_llm, tmp_path, seed=1)          # seed 1 starts with optuna
    scripted_llm.push(LLM_REPLIES[0].replace("Description: ", "Description: fix: "))
    fixed = proposer.propose(ProposalContext("", sandbox_notebook(), [], failure="Traceback: boom", profile="cpu"))
    assert fixed.proposer == "llm" and "boom" in scripted_llm.prompt()
    mine = proposer.propose(ProposalContext("", sandbox_notebook(), [], profile="cpu"))
    assert mine.proposer == "optuna"
    rebuilt = Proposal(mine.description, mine.notebook)         # what the loop rebuilds on resume: no proposer
    proposer.feedback(rebuilt, "crash")
    assert [t.state for t in trials(tmp_path) if t.user_attrs.get("description") == mine.description] == [
        TrialState.FAIL]
