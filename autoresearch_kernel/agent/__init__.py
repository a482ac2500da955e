"""The coding-agent seat: a coding agent drives the loop one `autoresearch step` at a time.

    seat.py  `step` and `status_lines`: one experiment from the agent's edit, the outcome as exit codes
    init.py  `autoresearch agent init`: a run tag, the worktree, the agent's instructions and the twin
    cli.py   the `step`, `status` and `agent` commands
    twin.py  the sandbox's jupytext twin: the Python file the agent edits
"""
from autoresearch_kernel.agent.seat import EXIT_CODES, EXIT_ERROR, AgentProposer, StepOutcome, status_lines, step

__all__ = ["EXIT_CODES", "EXIT_ERROR", "AgentProposer", "StepOutcome", "status_lines", "step"]
