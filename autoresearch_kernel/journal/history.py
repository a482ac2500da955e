"""What the journal tells a proposer: each finished experiment (`HistoryEntry`), and what a proposal spent on
its LLM (`Usage`, which a row records). The proposers import these; the journal imports no proposer."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Usage:
    """LLM tokens spent on one proposal; cost only when prices are configured (None means unknown)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None

    def __add__(self, other: Usage) -> Usage:
        # A re-ask or a retry spends tokens twice: the proposal's usage is the sum of its calls.
        if self.cost_usd is None and other.cost_usd is None:
            cost = None
        else:
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Usage(self.prompt_tokens + other.prompt_tokens,
                     self.completion_tokens + other.completion_tokens, cost)


@dataclass(frozen=True)
class HistoryEntry:
    """One finished experiment as a proposer sees it: what was tried and how it went."""

    number: int
    description: str
    status: str                 # keep | discard | crash | noop | stale | over-budget; invalid | duplicate: nothing ran (NOT_RUN)
    val_bpb: float | None
