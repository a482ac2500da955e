"""What running one experiment needs to know of the loop's settings (`ExperimentSpec`), and nothing more.

The loop builds it once (`LoopConfig.experiment_spec`); launch and every Ray node get this, never the
LoopConfig, which also holds proposer options (an API key among them) that no run needs.
"""
from __future__ import annotations

from dataclasses import dataclass

from autoresearch_kernel import tasks


@dataclass(frozen=True)
class ExperimentSpec:
    task: tasks.Task  # the workload: its notebook contract, its budget kind and its data
    profile: str  # cpu | gpu: the prepared data's, and the jail's limits
    data_dir: str  # the prepared data (a Ray node keeps its copy at the same path)
    jailed: bool  # in the bubblewrap jail, or (only where the user or a trusted proposer allows) not
    timeout_s: float  # the whole notebook's wall-clock limit, before a retry's growth
    budget_seconds: float = 0.0  # the GPT task's budgets: at most one is set, all 0 means the profile's
    budget_tokens: int = 0
    budget_flops: float = 0.0
    budget_amount: float = 0.0  # another task's budget in its own kind (seconds, tokens, evaluations)

    @property
    def timed(self) -> bool:
        """Whether the budget is wall-clock training seconds: then nothing else of the loop's may use a run's
        device while it trains (a token, FLOP or evaluation budget measures the same on a shared device)."""
        if not self.task.is_gpt:
            return self.task.budget.kind == "seconds"
        from autoresearch_kernel.harness.profiles import choose_budget

        return choose_budget(self.profile, self.budget_seconds, self.budget_tokens, self.budget_flops).kind == "seconds"

