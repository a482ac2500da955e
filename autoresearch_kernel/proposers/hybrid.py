"""The hybrid proposer: the LLM's code changes on a share of experiments, Optuna's tuning of the constants on the rest.

An LLM is good at ideas and poor at tuning a learning rate to its third digit; a sampler is the other way
round. Each proposal goes to one of them (`llm_share` of them to the LLM, 0.3 by default), and each builds on
what the other kept, since both are handed the current kept notebook. Fixes of a crash always go to the LLM:
only it reads a traceback. The turn is a function of the seed and the number of experiments so far, spread
evenly (every 1 / llm_share-th, with a phase drawn from the seed), so a resumed run takes the turn it would
have taken. Each proposal says who made it (`Proposal.proposer`: llm | optuna) and its feedback goes back there.

Options: `llm_share`, `seed`, the optuna proposer's (`study_path`, `sampler`, `constants`), `plateau_after`
for both, and every other option is the llm proposer's (`model`, `base_url`, ...).
"""

from __future__ import annotations

import dataclasses
import math
import random

from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.proposers.base import PLATEAU_AFTER, Proposal, ProposalContext
from autoresearch_kernel.proposers.llm import LLMProposer
from autoresearch_kernel.proposers.optuna_search import PREFIX, OptunaProposer


class HybridProposer:
    """LLM code changes and Optuna's constants, taking turns; see the module docstring for the options."""

    name = "hybrid"
    fixes_crashes = True  # fixes go to the LLM

    def __init__(self, llm_share: float = 0.3, seed: int = 0, study_path=None, sampler: str = "tpe",
                 constants: str | list[str] | None = None, plateau_after: int = PLATEAU_AFTER, **llm_options):
        if not 0.0 <= llm_share <= 1.0:
            raise AutoresearchError(f"llm_share is the share of experiments the LLM proposes: give 0 to 1, "
                                    f"not {llm_share}")
        self.llm_share = float(llm_share)
        self.phase = random.Random(seed).random()
        self.llm = LLMProposer(plateau_after=plateau_after, **llm_options)
        self.optuna = OptunaProposer(study_path=study_path, sampler=sampler, seed=seed, constants=constants,
                                     plateau_after=plateau_after)

    def turn(self, index: int) -> str:
        """Who proposes experiment `index` (0-based, invalid replies counted): llm | optuna."""
        before = math.floor(index * self.llm_share + self.phase)
        return "llm" if math.floor((index + 1) * self.llm_share + self.phase) > before else "optuna"

    def propose(self, context: ProposalContext) -> Proposal:
        who = "llm" if context.failure else self.turn(len(context.history))
        proposal = (self.llm if who == "llm" else self.optuna).propose(context)
        return dataclasses.replace(proposal, proposer=who)

    def feedback(self, proposal: Proposal, status: str, val_bpb: float | None = None) -> None:
        # A proposal rebuilt on resume carries no `proposer`: the optuna proposer's descriptions say it.
        who = proposal.proposer or ("optuna" if proposal.description.startswith(PREFIX) else "llm")
        (self.optuna if who == "optuna" else self.llm).feedback(proposal, status, val_bpb)
