"""The loop's git workspace: a run branch in a worktree of its own, one commit per candidate, keep or revert.

A run tag names the branch `autoresearch/<tag>`. The loop never touches the user's checkout (nor an open
JupyterLab on it): it works in a git worktree of that branch under `<repo>/runs/<tag>/worktree`, next to
the run's results.tsv and executed notebooks (`runs/` is kept out of git through `.git/info/exclude` when
the project's .gitignore does not already say so).

Each candidate is one commit of the sandbox notebook with its description as the message. Keep: the
branch stays on it. Discard or crash: the commit is kept reachable under
`refs/autoresearch/<tag>/discarded/<n>` (n: the experiment number) and the branch is reset to the last kept
commit, so every experiment's diff can still be read in the morning (the reference's `git reset` loses
them).
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import git
import nbformat

from autoresearch_kernel.errors import ProposalError, WorkspaceError
from autoresearch_kernel.workspace.notebook import SANDBOX, canonical, notebook_to_text
from autoresearch_kernel.workspace.runfolder import RUNS, RunFolder

# The human's instructions to the agent. One copy is read: the user's checkout's, live, by the proposer and the
# dashboard alike, so an edit made while a run goes on (committed or not) reaches the next proposal, as shown.
PROGRAM = "program.md"
BRANCH_PREFIX = "autoresearch/"
REF_PREFIX = "refs/autoresearch/"
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# No hook of the repository runs in the loop's git calls (post-commit, post-checkout, ...): the loop's git
# never executes code from the repository it works in.
NO_HOOKS = "core.hooksPath=/dev/null"

# The agent's commits carry their own identity, so a user without git config can run the loop, and their
# own hooks and signing settings (which may prompt) never run on a candidate.
AUTHOR = {
    "GIT_AUTHOR_NAME": "autoresearch",
    "GIT_AUTHOR_EMAIL": "autoresearch@localhost",
    "GIT_COMMITTER_NAME": "autoresearch",
    "GIT_COMMITTER_EMAIL": "autoresearch@localhost",
}


def short(commit: str) -> str:
    """The reference's 7-character commit hash."""
    return commit[:7]


def _open_repo(repo_dir: str | os.PathLike) -> git.Repo:
    try:
        repo = git.Repo(repo_dir, search_parent_directories=True)
    except git.NoSuchPathError:
        raise WorkspaceError(f"{repo_dir} does not exist: pass --repo with the project's folder") from None
    except git.InvalidGitRepositoryError:
        raise WorkspaceError(
            f"{repo_dir} is not a git repository: run `git init` there and commit the project first"
        ) from None
    if repo.bare or repo.working_tree_dir is None:
        raise WorkspaceError(f"{repo_dir} is a bare repository: pass --repo with a checkout instead")
    if not repo.head.is_valid():
        raise WorkspaceError(f"{repo_dir} has no commits yet: commit the project (with {SANDBOX}) first")
    return repo


def read_program(repo_dir: str | os.PathLike) -> str:
    """program.md as the user's checkout has it now; "" when there is none."""
    try:
        return (Path(repo_dir) / PROGRAM).read_text(encoding="utf-8")
    except OSError:
        return ""


def check_tag(tag: str) -> str:
    if not TAG_PATTERN.match(tag or "") or ".." in tag or tag.endswith(".lock"):
        raise WorkspaceError(
            f"run tag {tag!r} is not usable: use letters, digits, '.', '_' or '-' (e.g. mar5), at most 64"
        )
    return tag


def tag_exists(repo_dir: str | os.PathLike, tag: str) -> bool:
    """True when the run tag already has a branch (it can be resumed, not started again)."""
    repo = _open_repo(repo_dir)
    return BRANCH_PREFIX + check_tag(tag) in [head.name for head in repo.heads]


def list_tags(repo_dir: str | os.PathLike) -> list[str]:
    """The run tags of this repository, oldest branch name first (for the dashboard's resume list)."""
    repo = _open_repo(repo_dir)
    return sorted(h.name[len(BRANCH_PREFIX):] for h in repo.heads if h.name.startswith(BRANCH_PREFIX))


def diff_of(repo_dir: str | os.PathLike, commit: str, sandbox: str = SANDBOX) -> str:
    """A run commit's change against its parent (kept or under a discarded ref), read-only: no worktree.
    `sandbox`: the run's notebook (its task's)."""
    repo = _open_repo(repo_dir)
    try:
        return _diff(repo, commit, sandbox)
    except (git.BadName, ValueError):
        raise WorkspaceError(f"commit {commit!r} is not in the repository: the run's refs were removed") from None


def _read_sandbox(repo: git.Repo, commit: str, sandbox: str = SANDBOX) -> nbformat.NotebookNode:
    blob = repo.commit(commit).tree / sandbox
    return nbformat.reads(blob.data_stream.read().decode("utf-8"), as_version=4)


def _diff(repo: git.Repo, commit: str, sandbox: str = SANDBOX) -> str:
    child = repo.commit(commit)
    if not child.parents:
        return ""
    parent = child.parents[0]
    before = notebook_to_text(_read_sandbox(repo, parent.hexsha, sandbox))
    after = notebook_to_text(_read_sandbox(repo, child.hexsha, sandbox))
    return "".join(difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile=f"{short(parent.hexsha)}:{sandbox}", tofile=f"{short(child.hexsha)}:{sandbox}",
    ))


@dataclass
class Workspace:
    """A run's branch checked out in its own worktree. Build it with `Workspace.open`."""

    root: Path  # the user's repository (its working tree root)
    tag: str
    worktree: Path
    repo: git.Repo  # the worktree's view of the repository (refs are shared with the user's checkout)
    sandbox_path: str = SANDBOX  # the notebook the agent edits, relative to the repository (the task's)

    @property
    def branch(self) -> str:
        return BRANCH_PREFIX + self.tag

    @property
    def folder(self) -> RunFolder:
        """Where the run's results.tsv, state and executed notebooks live."""
        return RunFolder.of(self.root, self.tag)

    @property
    def sandbox(self) -> Path:
        return self.worktree / self.sandbox_path

    @classmethod
    def open(cls, repo_dir: str | os.PathLike, tag: str, resume: bool = False, sandbox: str = SANDBOX,
             source: str | os.PathLike | None = None) -> Workspace:
        """Create the run's branch and worktree (resume=False) or reopen them (resume=True).

        A new run branches from the repository's current HEAD commit; uncommitted changes there are not
        part of it. Refuses an existing tag unless resuming, and resuming a tag that does not exist.
        `sandbox`: the task's notebook in the repository; where HEAD has none, a bundled task's `source`
        notebook is committed on the run branch (the user's branch and checkout stay as they are).
        """
        check_tag(tag)
        main = _open_repo(repo_dir)
        main.git.set_persistent_git_options(c=NO_HOOKS)
        root = Path(main.working_tree_dir)
        branch = BRANCH_PREFIX + tag
        exists = branch in [head.name for head in main.heads]
        if exists and not resume:
            raise WorkspaceError(f"run tag {tag!r} already exists (branch {branch}): resume it or choose a new tag")
        if not exists and resume:
            raise WorkspaceError(f"there is no run tagged {tag!r} to resume: start it without resuming")
        if not exists:
            main.create_head(branch, _base_commit(main, root, sandbox, source))
        _ignore_runs(main, root)
        worktree = RunFolder.of(root, tag).worktree
        worktree_repo = _attach_worktree(main, worktree, branch)
        worktree_repo.git.set_persistent_git_options(c=NO_HOOKS)
        workspace = cls(root=root, tag=tag, worktree=worktree, repo=worktree_repo, sandbox_path=sandbox)
        if not workspace.sandbox.exists():
            raise WorkspaceError(f"branch {branch} has no {sandbox}: it was not made by this loop; use a new tag")
        return workspace

    # -- reading ------------------------------------------------------------------------------------------
    def head(self) -> str:
        """The full hash the run branch points at."""
        return self.repo.head.commit.hexsha

    def resolve(self, commit: str) -> str:
        """A full hash from a (short) one, or raise WorkspaceError."""
        try:
            return self.repo.commit(commit).hexsha
        except (git.BadName, ValueError):
            raise WorkspaceError(f"commit {commit!r} is not in the repository: the run's refs were removed") from None

    def read_sandbox(self, commit: str | None = None) -> nbformat.NotebookNode:
        """The sandbox notebook as committed (at HEAD unless a commit is named)."""
        return _read_sandbox(self.repo, commit or "HEAD", self.sandbox_path)

    def is_dirty(self) -> bool:
        return self.repo.is_dirty(untracked_files=True)

    def discarded_ref(self, number: int) -> str:
        return f"{REF_PREFIX}{self.tag}/discarded/{number}"

    def diff(self, commit: str) -> str:
        """The candidate's change against its parent, as a unified diff of cell sources (not JSON)."""
        return _diff(self.repo, commit, self.sandbox_path)

    # -- writing ------------------------------------------------------------------------------------------
    def commit_sandbox(self, notebook: nbformat.NotebookNode, message: str, parent: str | None = None) -> str:
        """Commit the candidate notebook (outputs cleared) on top of `parent` (default: the branch's head);
        returns the full hash. Neither the branch nor the worktree moves: with lanes several candidates are
        in flight at once, and each runs from its own copy (`sandbox_text`); keeping one moves the branch.

        Raises ProposalError when the candidate changes nothing: there is no experiment to run.
        """
        parent = self.resolve(parent or "HEAD")
        text = canonical(notebook)
        if text == self.sandbox_text(parent):
            raise ProposalError("the proposal changes nothing in the notebook")
        index = self.folder.path / f".candidate-index.{os.getpid()}"
        candidate = self.folder.path / f".candidate.{os.getpid()}.ipynb"
        self.folder.path.mkdir(parents=True, exist_ok=True)
        try:  # plumbing on an index of its own: the worktree's index and files stay as they are
            candidate.write_text(text, encoding="utf-8")
            blob = self.repo.git.hash_object("-w", str(candidate))
            env = {"GIT_INDEX_FILE": str(index)}
            self.repo.git.read_tree(parent, env=env)
            self.repo.git.update_index("--add", "--cacheinfo", f"100644,{blob},{self.sandbox_path}", env=env)
            tree = self.repo.git.write_tree(env=env)
            message = " ".join(message.split()) or "(no description)"
            return self.repo.git.commit_tree(tree, "-p", parent, "-m", message, env=AUTHOR)
        finally:
            index.unlink(missing_ok=True)
            candidate.unlink(missing_ok=True)

    def sandbox_text(self, commit: str) -> str:
        """The sandbox notebook's file at `commit`, exactly as committed."""
        return self.repo.git.show(f"{self.resolve(commit)}:{self.sandbox_path}", strip_newline_in_stdout=False)

    def discard(self, commit: str, number: int, kept: str) -> str:
        """Keep `commit` reachable under its discarded ref, then reset the branch to `kept`. Returns the ref."""
        ref = self.discarded_ref(number)
        self.repo.git.update_ref(ref, self.resolve(commit))
        self.reset_to(kept)
        return ref

    def close(self) -> None:
        """Stop the git helper processes GitPython keeps for this worktree."""
        self.repo.close()

    def reset_to(self, commit: str) -> None:
        """Point the branch at `commit` and leave a clean tree (nothing staged, nothing untracked)."""
        self.repo.git.reset("--hard", "--quiet", self.resolve(commit))
        self.repo.git.clean("-fdxq")


def _base_commit(main: git.Repo, root: Path, sandbox: str, source: str | os.PathLike | None) -> str:
    """The commit a new run branches from: HEAD when it holds the sandbox; else HEAD plus the task's bundled
    notebook, committed on its own (no index or file of the user's checkout is touched)."""
    head = main.head.commit
    try:
        head.tree / sandbox
        return head.hexsha
    except KeyError:
        if not source:
            raise WorkspaceError(f"{root} has no committed {sandbox}: add the sandbox notebook and commit it "
                                 "first") from None
    index = root / RUNS / f".task-index.{os.getpid()}"
    notebook = root / RUNS / f".task.{os.getpid()}.ipynb"
    index.parent.mkdir(parents=True, exist_ok=True)
    try:
        notebook.write_text(canonical(nbformat.read(source, as_version=4)), encoding="utf-8")
        env = {"GIT_INDEX_FILE": str(index)}
        blob = main.git.hash_object("-w", str(notebook))
        main.git.read_tree(head.hexsha, env=env)
        main.git.update_index("--add", "--cacheinfo", f"100644,{blob},{sandbox}", env=env)
        tree = main.git.write_tree(env=env)
        return main.git.commit_tree(tree, "-p", head.hexsha, "-m", f"the task's notebook: {sandbox}", env=AUTHOR)
    finally:
        index.unlink(missing_ok=True)
        notebook.unlink(missing_ok=True)


def _ignore_runs(repo: git.Repo, root: Path) -> None:
    """Keep runs/ out of the user's `git status` without editing their tracked .gitignore."""
    try:
        repo.git.check_ignore("-q", f"{RUNS}/x")
        return  # already ignored
    except git.GitCommandError:
        pass
    exclude = Path(repo.git.rev_parse("--git-common-dir"))
    exclude = (exclude if exclude.is_absolute() else root / exclude) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with open(exclude, "a", encoding="utf-8") as handle:
        handle.write(f"\n/{RUNS}/\n")


def _attach_worktree(main: git.Repo, worktree: Path, branch: str) -> git.Repo:
    """The branch's worktree, created or re-created (after `runs/` was deleted, say) as needed."""
    if (worktree / ".git").exists():
        repo = git.Repo(worktree)
        if repo.active_branch.name != branch:
            raise WorkspaceError(f"{worktree} has {repo.active_branch.name} checked out, not {branch}: remove that folder")
        return repo
    main.git.worktree("prune")  # forget a worktree whose folder was deleted
    worktree.parent.mkdir(parents=True, exist_ok=True)
    try:
        main.git.worktree("add", "--quiet", str(worktree), branch)
    except git.GitCommandError as error:
        detail = (error.stderr or "").strip().splitlines()
        raise WorkspaceError(
            f"cannot check out {branch} in {worktree}: {detail[-1] if detail else error}; "
            "switch your own checkout to another branch"
        ) from None
    return git.Repo(worktree)
