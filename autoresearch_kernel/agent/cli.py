"""The agent's sub-commands of `autoresearch`: agent-init, step, status (thin: parse, call, print).

Kept apart from cli.py so that the loop's own options can change without touching these. Exit codes are
`agent.EXIT_CODES` (0 keep, 10 discard or noop, 11 crash, 12 refused) and 2 for every other error.
"""
from __future__ import annotations

import argparse
import signal

from autoresearch_kernel.errors import StepRefused

# agent.EXIT_CODES, spelled out so that parsing the command line does not import the loop (and torch)
STEP_HELP = "exit codes: 0 keep, 10 discard (or noop), 11 crash, 12 refused, 2 error"


def add_agent_commands(commands) -> None:
    init = commands.add_parser("agent-init", help="make a run ready for a coding agent: baseline, AGENTS.md, twin")
    init.add_argument("--tag", required=True, help="run tag: branch autoresearch/TAG, worktree runs/TAG/worktree")
    init.add_argument("--repo", default=".", help="the project's git repository (default: here)")
    budget = init.add_mutually_exclusive_group()
    budget.add_argument("--budget-seconds", type=float, default=0.0, help="training seconds per experiment")
    budget.add_argument("--budget-tokens", type=int, default=0, help="training tokens per experiment instead")
    budget.add_argument("--budget-flops", type=float, default=0.0, help="training FLOPs per experiment instead")
    init.add_argument("--baseline-seeds", type=int, default=3, help="seeds the unmodified notebook runs on first")
    init.add_argument("--timeout", type=float, default=None, help="wall-clock seconds per run (default: from the budget)")
    init.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    init.add_argument("--profile", default="cpu", help="cpu | gpu: as the data was prepared")
    init.add_argument("--data-dir", default=None, help="prepared data folder (default: the harness's)")
    init.add_argument("--no-sandbox", action="store_true", help="run experiments without the bubblewrap jail")
    init.set_defaults(handler=_agent_init)

    step = commands.add_parser("step", help="run the agent's edit of the run's sandbox as one experiment",
                               epilog=STEP_HELP)
    step.add_argument("--tag", required=True, help="the run tag given to agent-init")
    step.add_argument("-m", "--message", required=True, help="one line: what the experiment changes")
    step.add_argument("--repo", default=None, help="the project's repository (default: found from here)")
    step.set_defaults(handler=_step)

    status = commands.add_parser("status", help="a run's best, recent rows and what is running")
    status.add_argument("--tag", required=True)
    status.add_argument("--repo", default=None, help="the project's repository (default: found from here)")
    status.add_argument("--rows", type=int, default=10, help="recent rows to show")
    status.set_defaults(handler=_status)


def project_root(repo: str | None) -> str:
    """The user's repository, also from inside a run's worktree (where agents run `step`)."""
    from pathlib import Path

    import git

    from autoresearch_kernel.errors import WorkspaceError

    try:
        found = git.Repo(repo or ".", search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise WorkspaceError(f"{repo or 'here'} is not inside a git repository: pass --repo") from None
    try:  # a worktree's common git dir is the main repository's .git, whose parent is the project
        common = Path(found.common_dir).resolve()
        return str(common.parent if common.name == ".git" else found.working_tree_dir)
    finally:
        found.close()


def _agent_init(args: argparse.Namespace) -> int:
    from autoresearch_kernel import agent
    from autoresearch_kernel.agent.init import INSTRUCTIONS, agent_init
    from autoresearch_kernel.agent.twin import TWIN
    from autoresearch_kernel.journal import results
    from autoresearch_kernel.loop.loop import LoopConfig
    from autoresearch_kernel.workspace.runfolder import RunFolder

    config = LoopConfig(
        repo=args.repo, tag=args.tag, data_dir=args.data_dir, profile=args.profile,
        budget_seconds=args.budget_seconds, budget_tokens=args.budget_tokens, budget_flops=args.budget_flops,
        baseline_seeds=tuple(range(args.baseline_seeds)), timeout_s=args.timeout, device=args.device,
        sandbox=not args.no_sandbox,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a terminate ends cleanly, resumably

    def show(event) -> None:
        for row in event.rows:
            print(results.console_line(row), flush=True)

    try:
        config = agent_init(config, on_event=show)
    except StepRefused as error:
        print(f"refused: {error}")
        return agent.EXIT_CODES["refused"]
    worktree = RunFolder.of(config.repo, args.tag).worktree
    print(f"run {args.tag} is ready for a coding agent: start it in {worktree}")
    print(f"  it edits {TWIN}, reads {INSTRUCTIONS}, and runs: autoresearch step --tag {args.tag} -m \"...\"")
    print(f"  first message: Read {INSTRUCTIONS} and start the experiment loop now.")
    return 0


def _step(args: argparse.Namespace) -> int:
    from autoresearch_kernel import agent
    from autoresearch_kernel.agent.init import write_agent_files
    from autoresearch_kernel.workspace.worktree import read_program

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    root = project_root(args.repo)
    try:
        outcome = agent.step(root, args.tag, args.message,
                             after=lambda worktree: write_agent_files(worktree, args.tag, read_program(root)))
    except StepRefused as error:
        outcome = agent.StepOutcome("refused", reason=str(error))
    print("\n".join(outcome.lines()), flush=True)
    return outcome.exit_code


def _status(args: argparse.Namespace) -> int:
    from autoresearch_kernel import agent
    print("\n".join(agent.status_lines(project_root(args.repo), args.tag, args.rows)))
    return 0
