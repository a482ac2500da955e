"""Proposers: turn program.md, the sandbox notebook and the results so far into one candidate edit.

Two implementations behind one protocol (`base.Proposer`):
- `mutate` (`MutateProposer`): the offline default, a hill-climber over the sandbox's numeric constants.
- `llm` (`LLMProposer`): an OpenAI-compatible chat endpoint through the `openai` client.

`make_proposer(name, **options)` builds either from its name (the CLI's `--proposer`).
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

PROPOSERS = ("mutate", "llm")


def make_proposer(name: str, **options) -> Proposer:
    """The proposer called `name` ("mutate" | "llm"), built with its own options (see each class).

    Options that are None count as not given, so a command line can pass its flags through unfiltered.
    """
    given = {key: value for key, value in options.items() if value is not None}
    # Imported here so that `mutate` never pays for importing the openai client.
    if name == "mutate":
        from autoresearch_kernel.proposers.mutate import MutateProposer as cls
    elif name == "llm":
        from autoresearch_kernel.proposers.llm import LLMProposer as cls
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
