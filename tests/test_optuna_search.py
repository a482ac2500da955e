"""The optuna proposer: ask-and-tell over the sandbox's constants, a study that resumes from its SQLite file."""

from pathlib import Path

import nbformat
import optuna
import pytest
from optuna.trial import TrialState
from sandbox_fixture import sandbox_notebook

from autoresearch_kernel.errors import AutoresearchError, ProposalError
from autoresearch_kernel.loop.settings import BY_NAME
from autoresearch_kernel.proposers import HistoryEntry, ProposalContext, make_proposer
from autoresearch_kernel.proposers.optuna_search import SAMPLERS, STUDY_FILE, OptunaProposer
from autoresearch_kernel.workspace.constants import find_constants, literal_value


def propose(proposer, notebook, history=(), profile="cpu", best=1.0):
    return proposer.propose(ProposalContext(program="", notebook=notebook, history=list(history), profile=profile,
                                            best_val_bpb=best))


def changes(description):
    """{NAME: (old, new)} from `optuna: A 1 -> 2, B 3 -> 4`."""
    assert description.startswith("optuna: "), description
    pairs = [part.split(" ") for part in description[len("optuna: "):].split(", ")]
    return {name: (old, new) for name, old, arrow, new in pairs}


def trials(folder, state=None):
    storage = f"sqlite:///{folder / STUDY_FILE}"
    found = []
    for name in sorted(optuna.get_all_study_names(storage)):
        found += optuna.load_study(study_name=name, storage=storage).get_trials(
            states=None if state is None else (state,))
    return found


def climb(proposer, notebook, statuses, history=None, value=lambda number: 1.0 + number / 100):
    """Propose and feed back once per status; kept proposals become the notebook. Returns the history."""
    history = [] if history is None else history
    for status in statuses:
        proposal = propose(proposer, notebook, history)
        number = len(history)
        val_bpb = None if status == "crash" else value(number)
        proposer.feedback(proposal, status, val_bpb)
        history.append(HistoryEntry(number, proposal.description, status, val_bpb))
        notebook = proposal.notebook if status == "keep" else notebook
    return history, notebook


def test_a_proposal_sets_the_constants_of_the_profile_that_runs_and_nothing_else(tmp_path):
    notebook = sandbox_notebook()
    notebook.cells[3].source += ('\nif run.profile.name == "gpu":\n    GPU_LR = 0.5\nelse:\n    CPU_LR = 0.5'
                                 "\ndef f():\n    INNER = 3")
    proposal = propose(OptunaProposer(tmp_path), notebook)
    changed = changes(proposal.description)
    assert changed and set(changed) <= {c.name for c in find_constants(notebook, "cpu")}
    assert "GPU_LR" not in changed and "INNER" not in changed
    before, after = notebook.cells[3].source.splitlines(), proposal.notebook.cells[3].source.splitlines()
    for old_line, new_line in zip(before, after):
        if old_line != new_line:
            name = old_line.split(" = ")[0].strip()
            old, new = changed[name]
            assert old_line.replace(old, new, 1).split("#")[0].rstrip() == new_line.split("#")[0].rstrip()
            if "#" in old_line:     # the comment stays in its column
                assert new_line.index("#") == old_line.index("#") or new_line.split("#")[0].endswith(" ")
    assert len(before) == len(after)
    assert [c.source for i, c in enumerate(proposal.notebook.cells) if i != 3] == [
        c.source for i, c in enumerate(notebook.cells) if i != 3]
    assert proposal.proposer == "optuna"
    nbformat.validate(proposal.notebook)


def test_values_keep_their_kinds_sense_of_range(tmp_path):
    proposer, notebook = OptunaProposer(tmp_path, seed=3), sandbox_notebook()
    seen = {}
    for number in range(12):
        proposal = propose(proposer, notebook)
        proposer.feedback(proposal, "discard", 1.0 + number / 100)
        for name, (_old, new) in changes(proposal.description).items():
            seen.setdefault(name, set()).add(new)
    for new in seen.get("BATCH_SIZE", ()):
        assert new.startswith("2**")                                    # powers of two stay powers of two
    for new in seen.get("MODEL_DIM", ()) | seen.get("N_HEADS", ()):
        assert int(new) & (int(new) - 1) == 0
    for new in seen.get("DEPTH", ()):
        assert new.isdigit() and 1 <= int(new)                          # integers stay integers
    for new in seen.get("WARMDOWN_FRAC", ()):
        assert 0.0 <= float(new) < 1.0
    for new in seen.get("MATRIX_LR", ()):
        assert 0.04 / 3 <= float(new) <= 0.04 * 3 * 1.01                # a factor 3 either way at width 1
    assert len(seen) >= 5


def test_values_told_back_reach_the_study_and_a_crash_fails_its_trial(tmp_path):
    proposer, notebook = OptunaProposer(tmp_path), sandbox_notebook()
    climb(proposer, notebook, ["discard", "crash", "keep"], value=lambda n: [1.25, None, 0.75][n])
    done = trials(tmp_path)
    proposed = [t for t in done if t.user_attrs.get("description", "").startswith("optuna: ")]
    assert [t.state for t in proposed] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert [t.value for t in proposed] == [1.25, None, 0.75]
    anchor = [t for t in done if t.user_attrs.get("description") == "the kept notebook"]
    assert len(anchor) == 1 and anchor[0].value == 1.0                 # the kept notebook, worth the best


def test_a_duplicate_is_told_the_earlier_value_and_a_repeated_crash_fails(tmp_path):
    """The loop did not run it: an earlier experiment ran these very parameters, so its value is the trial's."""
    proposer, notebook = OptunaProposer(tmp_path), sandbox_notebook()
    climb(proposer, notebook, ["duplicate", "duplicate"], value=lambda n: [1.25, None][n])
    proposed = [t for t in trials(tmp_path) if t.user_attrs.get("description", "").startswith("optuna: ")]
    assert [(t.state, t.value) for t in proposed] == [(TrialState.COMPLETE, 1.25), (TrialState.FAIL, None)]
    # a loop killed between the invalid.tsv row and the feedback: the history tells it
    waiting = propose(proposer, notebook)
    propose(proposer, notebook, [HistoryEntry(3, waiting.description, "duplicate", 1.5)])
    told = next(t for t in trials(tmp_path) if t.user_attrs.get("description") == waiting.description)
    assert told.state == TrialState.COMPLETE and told.value == 1.5


def test_without_a_value_the_result_is_read_from_the_history(tmp_path):
    # A loop that does not pass val_bpb yet: the trial waits, and the next proposal tells it from the history.
    proposer, notebook = OptunaProposer(tmp_path), sandbox_notebook()
    first = propose(proposer, notebook)
    proposer.feedback(first, "discard")
    assert trials(tmp_path, TrialState.RUNNING)
    propose(proposer, notebook, [HistoryEntry(1, first.description, "discard", 1.5)])
    told = next(t for t in trials(tmp_path) if t.user_attrs.get("description") == first.description)
    assert told.state == TrialState.COMPLETE and told.value == 1.5


def test_the_study_resumes_from_its_sqlite_file_in_a_new_proposer(tmp_path):
    notebook = sandbox_notebook()
    history, _ = climb(OptunaProposer(tmp_path, seed=1), notebook, ["discard"] * 4)
    assert (tmp_path / STUDY_FILE).exists()
    resumed = OptunaProposer(tmp_path, seed=1)
    proposal = propose(resumed, notebook, history)
    assert proposal.description not in {h.description for h in history}   # no replay of the first draws
    resumed.feedback(proposal, "discard", 1.1)
    values = [t.value for t in trials(tmp_path, TrialState.COMPLETE)
              if t.user_attrs.get("description", "").startswith("optuna: ")]
    assert values == [1.0, 1.01, 1.02, 1.03, 1.1]


def test_same_seed_and_study_give_the_same_proposals(tmp_path):
    def run(folder, seed):
        history, _ = climb(OptunaProposer(folder, seed=seed), sandbox_notebook(), ["discard", "keep", "discard"])
        return [h.description for h in history]
    assert run(tmp_path / "a", 0) == run(tmp_path / "b", 0)
    assert run(tmp_path / "a2", 0) != run(tmp_path / "c", 1)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_makes_valid_proposals(tmp_path, sampler):
    proposer = make_proposer("optuna", study_path=str(tmp_path), sampler=sampler, seed=0)
    notebook = nbformat.read(sandbox_notebook_path(), as_version=4)
    names = {c.name: c for c in find_constants(notebook, "cpu")}
    history, _ = climb(proposer, notebook, ["discard"] * 6)
    for entry in history:
        for name, (old, new) in changes(entry.description).items():
            assert name in names and literal_value(old) == names[name].value and literal_value(new) != names[name].value
    assert all(t.state == TrialState.COMPLETE for t in trials(tmp_path) if t.user_attrs.get("description"))
    nbformat.validate(propose(proposer, notebook, history).notebook)


def test_the_random_sampler_draws_the_same_whatever_the_results_and_is_a_loop_option(tmp_path):
    # The yardstick for the model-based samplers: its draws depend on the seed only, not on what was measured.
    def run(folder, value):
        proposer = make_proposer("optuna", study_path=str(folder), sampler="random", seed=3)
        history, _ = climb(proposer, sandbox_notebook(), ["discard"] * 12, value=value)
        return [h.description for h in history]
    rising = run(tmp_path / "a", lambda number: 1.0 + number / 100)
    assert rising == run(tmp_path / "b", lambda number: 1.0 - number / 100)
    assert len(set(rising)) == len(rising)
    study = OptunaProposer(tmp_path / "a", sampler="random")._load("region-1")
    assert isinstance(study.sampler, optuna.samplers.RandomSampler)
    assert BY_NAME["sampler"].choices == SAMPLERS     # every sampler can be chosen with --sampler


def sandbox_notebook_path():
    return Path(__file__).resolve().parents[1] / "notebooks" / "train_template.ipynb"


def test_a_trial_that_changes_nothing_computed_is_not_proposed(tmp_path):
    # Only TOTAL_BATCH_SIZE is searched; on the cpu profile anything up to 2048 is one pass of 8 x 256 tokens.
    notebook = sandbox_notebook()
    notebook.cells[3].source = ("DEVICE_BATCH_SIZE = 8\nTOTAL_BATCH_SIZE = 2048\nSEQ_LEN = run.profile.seq_len\n"
                                "GRAD_ACCUM_STEPS = max(1, round(TOTAL_BATCH_SIZE / (DEVICE_BATCH_SIZE * SEQ_LEN)))")
    proposer = OptunaProposer(tmp_path, constants="TOTAL_BATCH_SIZE")
    for _ in range(4):
        proposal = propose(proposer, notebook)
        assert int(changes(proposal.description)["TOTAL_BATCH_SIZE"][1]) >= 4096, proposal.description
        proposer.feedback(proposal, "discard", 1.1)
    parents = [t for t in trials(tmp_path, TrialState.COMPLETE) if not t.user_attrs.get("description")]
    assert all(t.value == 1.0 for t in parents)     # the no-ops were told what the parent measures


def test_a_plateau_recentres_the_search_on_the_kept_values_and_widens_it(tmp_path):
    proposer, notebook = OptunaProposer(tmp_path, plateau_after=3, constants="MATRIX_LR"), sandbox_notebook()
    history, kept = climb(proposer, notebook, ["keep"])
    kept_lr = literal_value(changes(history[0].description)["MATRIX_LR"][1])
    history, _ = climb(proposer, kept, ["discard"] * 3, history)
    storage = f"sqlite:///{tmp_path / STUDY_FILE}"
    assert optuna.get_all_study_names(storage) == ["region-1"]
    proposal = propose(proposer, kept, history)       # the 4th without a keep: a new, wider region
    region = optuna.load_study(study_name="region-2", storage=storage)
    assert region.user_attrs["width"] == 2.0 and region.user_attrs["centres"]["MATRIX_LR"] == kept_lr
    new = literal_value(changes(proposal.description)["MATRIX_LR"][1])
    assert kept_lr / 9 * 0.99 <= new <= kept_lr * 9 * 1.01
    low, high = region.get_trials()[0].distributions["MATRIX_LR"].low, region.get_trials()[0].distributions["MATRIX_LR"].high
    assert low == pytest.approx(kept_lr / 9) and high == pytest.approx(kept_lr * 9)
    # Within the new region, no new plateau is called until it has had its own plateau_after experiments.
    proposer.feedback(proposal, "discard", 1.2)
    history.append(HistoryEntry(len(history), proposal.description, "discard", 1.2))
    propose(proposer, kept, history)
    assert optuna.get_all_study_names(storage) == ["region-1", "region-2"]


def test_a_constant_another_proposer_moved_out_of_range_starts_a_region_around_it(tmp_path):
    proposer, notebook = OptunaProposer(tmp_path, constants="MATRIX_LR"), sandbox_notebook()
    climb(proposer, notebook, ["discard"])
    moved = sandbox_notebook()
    moved.cells[3].source = moved.cells[3].source.replace("MATRIX_LR = 0.04", "MATRIX_LR = 2.0 ")
    proposal = propose(proposer, moved)
    assert changes(proposal.description)["MATRIX_LR"][0] == "2.0"
    assert 2.0 / 3 <= literal_value(changes(proposal.description)["MATRIX_LR"][1]) <= 2.0 * 3 * 1.01


def test_refusals(tmp_path):
    with pytest.raises(ProposalError, match="cannot fix a crash"):
        OptunaProposer(tmp_path).propose(ProposalContext("", sandbox_notebook(), [], failure="Traceback ..."))
    bare = sandbox_notebook()
    bare.cells[3].source = "lr = 0.1"
    with pytest.raises(ProposalError, match="no `UPPER_CASE = <number>` constants"):
        propose(OptunaProposer(tmp_path), bare)
    with pytest.raises(AutoresearchError, match="unknown sampler"):
        OptunaProposer(tmp_path, sampler="grid")
    with pytest.raises(AutoresearchError, match="the optuna proposer cannot take these options"):
        make_proposer("optuna", model="gpt")


def test_an_in_memory_study_needs_no_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proposer = OptunaProposer()
    proposal = propose(proposer, sandbox_notebook())
    proposer.feedback(proposal, "discard", 1.5)
    assert changes(proposal.description) and not list(tmp_path.iterdir())
