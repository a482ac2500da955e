"""`autoresearch agent-init`: a run made ready for a coding agent: its baseline done, the agent's files written.

In the run's worktree (runs/<tag>/worktree) it writes
- the sandbox's Python twin (`twin.py`), the file the agent edits;
- `AGENTS.md`, the instructions Codex, aider, OpenCode and others read: program.md's rules, the `step` and
  `status` commands with their exit codes, "never stop, never ask", and that only the sandbox may change;
- `CLAUDE.md`, which Claude Code reads, pointing at AGENTS.md.

None of them is committed: they are hidden from git in that worktree only, through an excludes file of its
own (runs/<tag>/agent.exclude, named by the worktree's `core.excludesFile`; git's per-worktree config), so
`git status` there shows the agent's sandbox edit and nothing else, and the user's checkout is untouched.
The loop's reset cleans untracked files, so `write_agent_files` runs again after every step.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import git
import nbformat

from autoresearch_kernel.agent.seat import EXIT_CODES, EXIT_ERROR, NAME, AgentProposer, open_loop, stored_config
from autoresearch_kernel.agent.twin import TWIN, write_twin
from autoresearch_kernel.loop.loop import LoopConfig
from autoresearch_kernel.workspace.worktree import SANDBOX, read_program, tag_exists

INSTRUCTIONS = "AGENTS.md"
CLAUDE = "CLAUDE.md"
EXCLUDE = "agent.exclude"  # in runs/<tag>/, outside the worktree


def agent_init(config: LoopConfig, on_event=None) -> LoopConfig:
    """Create the tag (or reopen it), run its baseline seeds until they are done, write the agent's files.

    An existing tag keeps the settings it was started with (its config.json); `config` starts a new one.
    Returns the settings in force.
    """
    if tag_exists(config.repo, config.tag):
        config = stored_config(config.repo, config.tag, resume=True, proposer=NAME, max_experiments=0)
    else:
        config = dataclasses.replace(config, resume=False, proposer=NAME, max_experiments=0)
    loop = open_loop(config, AgentProposer("", None))
    loop.on_event = on_event
    with loop:
        loop.run()  # max_experiments=0: the baseline seeds (and an interrupted step's experiment), no proposal
        worktree = loop.workspace.worktree
    write_agent_files(worktree, config.tag, read_program(config.repo))
    return config


def write_agent_files(worktree: Path, tag: str, program: str) -> None:
    """The twin of the committed sandbox, AGENTS.md and CLAUDE.md in the worktree, all hidden from its git.
    `program`: program.md as the user's checkout has it (`workspace.read_program`)."""
    worktree = Path(worktree)
    repo = git.Repo(worktree)
    try:
        tracked = set(repo.git.ls_files("--", INSTRUCTIONS, CLAUDE, TWIN).splitlines())
        # a project's own committed AGENTS.md or CLAUDE.md stays as it is: ours would show as a change to it
        names = [name for name in (INSTRUCTIONS, CLAUDE) if name not in tracked]
        _hide(repo, worktree, [f"/{name}" for name in names + [TWIN]])
        write_twin(worktree, nbformat.read(worktree / SANDBOX, as_version=4))
        if INSTRUCTIONS in names:
            (worktree / INSTRUCTIONS).write_text(instructions(tag, program), encoding="utf-8")
        if CLAUDE in names:
            (worktree / CLAUDE).write_text(f"Read and follow @{INSTRUCTIONS}: it is your whole brief for this "
                                           "directory.\n", encoding="utf-8")
    finally:
        repo.close()


def _hide(repo: git.Repo, worktree: Path, patterns: list[str]) -> None:
    """Ignore `patterns` in this worktree only: a per-worktree core.excludesFile (git >= 2.20)."""
    exclude = worktree.parent / EXCLUDE
    exclude.write_text("\n".join(patterns) + "\n", encoding="utf-8")
    if repo.git.config("--get", "extensions.worktreeConfig", with_exceptions=False).strip() != "true":
        repo.git.config("extensions.worktreeConfig", "true")
    repo.git.config("--worktree", "core.excludesFile", str(exclude))


def command() -> str:
    """How the agent calls us: the `autoresearch` script of this environment, whatever the agent's PATH says."""
    script = Path(sys.executable).parent / "autoresearch"
    return str(script) if script.exists() else f"{sys.executable} -m autoresearch_kernel"


def instructions(tag: str, program: str) -> str:
    """AGENTS.md: how to run experiments here with `autoresearch step`, then the human's program.md."""
    codes = "\n".join(f"| {code} | {status} |" for status, code in EXIT_CODES.items())
    run = command()
    return f"""\
# Autoresearch run `{tag}`: instructions for the coding agent

You are an autonomous researcher. This directory is a git worktree of the run branch `autoresearch/{tag}`.
Your job: lower `val_bpb` by editing ONE file, `{TWIN}`, one experiment at a time, forever.

## The loop

1. Read the state: `{run} status --tag {tag}` (best so far, margin, recent results, what is running).
2. Edit `{TWIN}`: plain Python, whose `# %%` lines separate the cells of the notebook `{SANDBOX}`; the
   workbench keeps the two in step. One clear idea per experiment.
3. Run it: `{run} step --tag {tag} -m "one line saying what you changed"`. It commits your edit, runs it in
   a sandbox under the fixed budget, has it scored, and keeps it (better than the best by more than the
   margin) or reverts it. Wait for it to finish, then read its result (below).
4. Go to 1. NEVER STOP and NEVER ASK the human anything: they are asleep. Do not wait for confirmation
   between experiments; when unsure, decide and run the next experiment.

## The result of a step

`step` prints `key: value` lines (`status`, `experiment`, `commit`, `val_bpb`, `best`, `previous_best`,
`margin`, `description`, `next`; for a crash also `failure` and `traceback`) and exits with:

| exit code | status |
|---|---|
{codes}
| {EXIT_ERROR} | error: a usage error, or a problem only the human can fix (the message says what) |

- `keep`: your edit is now the base of the next experiment.
- `discard`, `noop`, `crash`: the files are back at the last kept version; your edit stays readable with
  `git show <commit>`. For a crash, fix a trivial bug (re-apply the edit with the fix) and step again, or
  drop the idea.
- `refused`: nothing ran; the `reason:` line says what to do (nothing changed, both files edited, another
  step or a loop is running on this tag: wait and step again).

## Rules

- Change only `{TWIN}` (or, equivalently, `{SANDBOX}`; never both in one step). Do not edit any other
  file, do not commit, do not change branches, do not run `git reset` yourself: `step` does all of that.
- Keep the cells marked `(harness-owned: do not edit)` exactly as they are, and where they are.
- Do not run the notebook or the training yourself; only `step` measures. No new packages, no network.
- You need no API key: you are the proposer.

## The human's instructions (program.md)

Where they speak of "the notebook", edit its twin `{TWIN}`. Their "Reply format" section is for the
built-in LLM proposer: you edit the file directly instead, and the `-m` message of `step` is the description.

{program}"""
