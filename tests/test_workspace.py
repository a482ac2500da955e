"""The git workspace on real repositories: branch, worktree, commit, discard refs, resume, refusals."""
import git
import nbformat
import pytest
from loop_fixture import make_repo, set_constant

from autoresearch_kernel.errors import ProposalError, WorkspaceError
from autoresearch_kernel.workspace.notebook import SANDBOX
from autoresearch_kernel.workspace.worktree import Workspace, list_tags, tag_exists


@pytest.fixture
def project(tmp_path):
    return make_repo(tmp_path / "project")


def test_new_tag_gets_a_branch_and_a_worktree_and_leaves_the_checkout_alone(project):
    user = git.Repo(project)
    workspace = Workspace.open(project, "mar5")
    assert workspace.branch == "autoresearch/mar5"
    assert workspace.worktree == project / "runs" / "mar5" / "worktree"
    assert workspace.sandbox.exists()
    assert user.active_branch.name == "main"
    assert not user.is_dirty(untracked_files=True)  # runs/ is ignored through .git/info/exclude
    assert tag_exists(project, "mar5") and list_tags(project) == ["mar5"]


def test_commit_keep_and_discard(project):
    workspace = Workspace.open(project, "t1")
    base = workspace.head()
    first = workspace.commit_sandbox(set_constant(workspace.read_sandbox(), "VALUE", 0.9), "VALUE 1.0 -> 0.9")
    assert workspace.repo.commit(first).message.strip() == "VALUE 1.0 -> 0.9"
    assert workspace.repo.commit(first).parents[0].hexsha == base
    assert "+VALUE = 0.9" in workspace.diff(first)
    # committing moves neither the branch nor the worktree (lanes run several candidates at once)
    assert workspace.head() == base and "VALUE = 1.0" in workspace.sandbox.read_text()
    assert "VALUE = 0.9" in workspace.sandbox_text(first)
    # keep: the branch moves to it; a second candidate builds on it and is discarded
    workspace.reset_to(first)
    second = workspace.commit_sandbox(set_constant(workspace.read_sandbox(), "VALUE", 2.0), "worse")
    assert workspace.repo.commit(second).parents[0].hexsha == first
    ref = workspace.discard(second, 2, kept=first)
    assert workspace.head() == first
    assert git.Repo(project).commit(ref).hexsha == second
    assert ref == "refs/autoresearch/t1/discarded/2"
    assert "VALUE = 0.9" in workspace.sandbox.read_text()
    assert not workspace.is_dirty()
    assert git.Repo(project).heads["autoresearch/t1"].commit.hexsha == first


def test_commit_clears_outputs(project):
    workspace = Workspace.open(project, "t2")
    notebook = set_constant(workspace.read_sandbox(), "VALUE", 0.5)
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", text="noise")]
    notebook.cells[1].execution_count = 7
    stored = workspace.read_sandbox(workspace.commit_sandbox(notebook, "with outputs"))
    assert stored.cells[1].outputs == [] and stored.cells[1].execution_count is None


def test_unchanged_candidate_is_refused(project):
    workspace = Workspace.open(project, "t3")
    with pytest.raises(ProposalError, match="changes nothing"):
        workspace.commit_sandbox(workspace.read_sandbox(), "nothing")


def test_existing_tag_is_refused_unless_resuming(project):
    Workspace.open(project, "dup")
    with pytest.raises(WorkspaceError, match="already exists"):
        Workspace.open(project, "dup")
    assert Workspace.open(project, "dup", resume=True).tag == "dup"
    with pytest.raises(WorkspaceError, match="no run tagged"):
        Workspace.open(project, "never", resume=True)


def test_resume_recreates_a_deleted_worktree_and_cleans_a_dirty_one(project):
    import shutil

    workspace = Workspace.open(project, "t4")
    kept = workspace.commit_sandbox(set_constant(workspace.read_sandbox(), "VALUE", 0.9), "kept")
    workspace.reset_to(kept)
    shutil.rmtree(workspace.worktree)
    again = Workspace.open(project, "t4", resume=True)
    assert again.head() == kept
    again.sandbox.write_text("garbage")
    (again.worktree / "stray.txt").write_text("x")
    assert again.is_dirty()
    again.reset_to(kept)
    assert not again.is_dirty()


@pytest.mark.parametrize("tag", ["", "has space", "../up", "-dash", "x" * 65, "a..b", "name.lock"])
def test_bad_tags_are_refused(project, tag):
    with pytest.raises(WorkspaceError, match="run tag"):
        Workspace.open(project, tag)


def test_not_a_repository(tmp_path):
    with pytest.raises(WorkspaceError, match="git init"):
        Workspace.open(tmp_path, "t")
    with pytest.raises(WorkspaceError, match="does not exist"):
        Workspace.open(tmp_path / "missing", "t")


def test_repository_without_commits(tmp_path):
    git.Repo.init(tmp_path)
    with pytest.raises(WorkspaceError, match="no commits"):
        Workspace.open(tmp_path, "t")


def test_repository_without_the_sandbox(tmp_path):
    repo = git.Repo.init(tmp_path)
    (tmp_path / "README").write_text("x")
    repo.git.add("README")
    repo.git.commit("-m", "x", env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@l",
                                     "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@l"})
    with pytest.raises(WorkspaceError, match=SANDBOX):
        Workspace.open(tmp_path, "t")
    assert "autoresearch/t" not in [h.name for h in repo.heads]


def test_branch_checked_out_by_the_user_is_refused_clearly(project):
    user = git.Repo(project)
    user.create_head("autoresearch/busy")
    user.heads["autoresearch/busy"].checkout()
    with pytest.raises(WorkspaceError, match="switch your own checkout"):
        Workspace.open(project, "busy", resume=True)


def test_no_hook_of_the_repository_runs_in_the_loops_git(tmp_path):
    repo_dir = make_repo(tmp_path / "project")
    marker = tmp_path / "hook-ran"
    for name in ("post-commit", "post-checkout", "pre-commit", "reference-transaction"):
        hook = repo_dir / ".git" / "hooks" / name
        hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
        hook.chmod(0o755)
    workspace = Workspace.open(repo_dir, "hooks")
    notebook = workspace.read_sandbox()
    notebook.cells[-1].source += "\n# changed"
    commit = workspace.commit_sandbox(notebook, "a change")
    workspace.reset_to(commit)  # a keep
    workspace.discard(commit, 1, workspace.resolve(commit + "~1"))
    workspace.close()
    assert not marker.exists()
