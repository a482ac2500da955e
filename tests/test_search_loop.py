"""The search proposers in the real loop: the hybrid hands experiments to the LLM (the real openai client against
the scripted server) and to Optuna, each row names who proposed it, and the Optuna study resumes with the run."""
import optuna
import pytest
from llm_server import ScriptedLLM
from loop_fixture import make_repo

from autoresearch_kernel.gate import GateConfig
from autoresearch_kernel.journal import results
from autoresearch_kernel.loop.loop import Loop, LoopConfig

LLM_EDIT = ("Description: more noise\n<<<<<<< SEARCH\nNOISE = 0.001   # val_bpb grows by this per seed: the baseline's "
            "spread\n=======\nNOISE = 0.002   # val_bpb grows by this per seed: the baseline's spread\n>>>>>>> REPLACE\n")


def hybrid_config(repo, llm, **overrides):
    options = dict(model="scripted", base_url=llm.base_url, retries=0, llm_share=0.5, constants="VALUE", seed=0)
    settings = dict(repo=repo, tag="h", baseline_seeds=(0,), timeout_s=60, proposer="hybrid", fix_attempts=0,
                    proposer_options=options, gate=GateConfig(min_margin=0.001, confirm_band=0.0, rule="means"))
    settings.update(overrides)
    return LoopConfig(**settings)


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("OPENAI_API_KEY", "sk-test-hybrid")
    repo = make_repo(tmp_path_factory.mktemp("hybrid") / "project")
    with ScriptedLLM(responder=lambda body: LLM_EDIT) as llm:
        with Loop(hybrid_config(repo, llm, max_experiments=4)) as loop:
            loop.run()
            folder = loop.folder
        first = results.read_rows(folder / "results.tsv")
        with Loop(hybrid_config(repo, llm, max_experiments=2, resume=True)) as loop:
            loop.run()
    return dict(first=first, rows=results.read_rows(folder / "results.tsv"), folder=folder)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_hybrid_alternates_and_each_row_names_its_proposer(hybrid_run):
    proposed = [r for r in hybrid_run["first"] if r.kind != "baseline"]
    assert len(proposed) == 4 and {r.proposer for r in proposed} == {"llm", "optuna"}
    for row in proposed:
        assert row.description.startswith("optuna: VALUE") if row.proposer == "optuna" else row.description == "more noise"


def test_the_optuna_study_lives_in_the_run_folder_and_resumes(hybrid_run):
    storage = f"sqlite:///{hybrid_run['folder'] / 'optuna.db'}"
    trials = [t for s in optuna.get_all_study_summaries(storage) for t in optuna.load_study(
        study_name=s.study_name, storage=storage).trials]
    told = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    optuna_rows = [r for r in hybrid_run["rows"] if r.proposer == "optuna"]
    # the resumed run made its 2 proposals: experiments, or duplicates of earlier ones (the scripted LLM always
    # sends the same edit), which the idea memory refuses before they run
    duplicates = [r for r in results.read_rows(hybrid_run["folder"] / "invalid.tsv") if r.status == "duplicate"]
    assert len(hybrid_run["rows"]) + len(duplicates) == len(hybrid_run["first"]) + 2
    assert len(told) >= len(optuna_rows) >= 2  # every optuna experiment's value reached the study
