"""Proposers: turn program.md, the sandbox notebook and the results so far into one candidate edit.

Four implementations behind one protocol (`base.Proposer`):
- `mutate` (`MutateProposer`): the offline default, a hill-climber over the sandbox's numeric constants.
- `llm` (`LLMProposer`): an OpenAI-compatible chat endpoint through the `openai` client.
- `optuna` (`OptunaProposer`): Optuna's TPE or CMA-ES over the same constants, its study in the run folder.
- `hybrid` (`HybridProposer`): the LLM's code changes on a share of experiments, Optuna's tuning on the rest.

`make_proposer(name, **options)` builds one from its name (the CLI's `--proposer`).
"""

from __future__ import annotations

from autoresearch_kernel.errors import AutoresearchError, ProposalError, ProposerUnavailable
from autoresearch_kernel.proposers.base import (
    HistoryEntry,
    Proposal,
    ProposalContext,
    Proposer,
    Usage,
    proposal_error,
    usage_of,
)

PROPOSERS = ("mutate", "llm", "optuna", "hybrid")


def make_proposer(name: str, **options) -> Proposer:
    """The proposer called `name` (one of `PROPOSERS`), built with its own options (see each class).

    Options that are None count as not given, so a command line can pass its flags through unfiltered.
    """
    given = {key: value for key, value in options.items() if value is not None}
    # Imported here so that `mutate` never pays for importing the openai client, nor anyone for optuna.
    if name == "mutate":
        from autoresearch_kernel.proposers.mutate import MutateProposer as cls
    elif name == "llm":
        from autoresearch_kernel.proposers.llm import LLMProposer as cls
    elif name in ("optuna", "hybrid"):
        try:
            from autoresearch_kernel.proposers.hybrid import HybridProposer
            from autoresearch_kernel.proposers.optuna_search import OptunaProposer
        except ModuleNotFoundError as error:    # optuna is an optional extra
            raise AutoresearchError(f"the {name} proposer needs {error.name}: pip install -e '.[search]'") from None
        cls = OptunaProposer if name == "optuna" else HybridProposer
    else:
        raise AutoresearchError(f"unknown proposer {name!r}: choose one of {', '.join(PROPOSERS)}")
    try:
        return cls(**given)
    except TypeError as error:      # an option this proposer does not take, e.g. --model for mutate
        raise AutoresearchError(f"the {name} proposer cannot take these options ({error}); see "
                                f"{cls.__module__} for the ones it takes") from None


__all__ = [
    "HistoryEntry", "Proposal", "ProposalContext", "Proposer", "Usage", "ProposalError",
    "ProposerUnavailable", "make_proposer", "proposal_error", "usage_of", "PROPOSERS",
]
