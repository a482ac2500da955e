"""The loop's integrity hooks: what a step checks before and after it runs candidate code.

    before_experiment   the package's source files and the prepared data are what they were when the loop
                        started (IntegrityError stops the loop otherwise: the yardstick moved)
    check_candidate     a fast pre-filter before anything runs: only the sandbox notebook changed; its
                        parameters and harness cells are the base commit's, once each, in place; it is a
                        valid notebook; the agent's code passes the static rules of static.py, whose
                        messages save an experiment's time (the jail, not these rules, is the boundary)
    score               after a run: the scorer measures the exported program outside the experiment's
                        jail; its val_bpb replaces whatever the kernel wrote, and its summary is appended to
                        the executed notebook

The base is the commit the run's baseline ran on: the human's notebook, whose harness cells are the truth.
When the base reports through `harness.finish`, every result is scored outside; a base without the harness
(a user's own minimal notebook, the loop's test fixture) is trusted to write its own metrics.
"""
from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

import autoresearch_kernel
from autoresearch_kernel.errors import DataError, IntegrityError
from autoresearch_kernel.execution.scoring import SCORED_HEADING, append_cell, failed, score_result, scoring_device
from autoresearch_kernel.harness.data import input_paths
from autoresearch_kernel.integrity import static
from autoresearch_kernel.integrity.jail import Jail
from autoresearch_kernel.integrity.limits import describe, for_profile, lower_own_oom_score
from autoresearch_kernel.integrity.scorer import Scorer
from autoresearch_kernel.integrity.shape import check_structure, contract_cells
from autoresearch_kernel.text import one_line
from autoresearch_kernel.workspace.notebook import SANDBOX, is_contract
from autoresearch_kernel.workspace.runfolder import RunFolder


@dataclass(frozen=True)
class Candidate:
    """The committed candidate the checks look at."""

    number: int
    kind: str  # candidate | fix
    commit: str
    parent: str
    description: str
    notebook: Path  # the committed sandbox file in the worktree
    workspace: object  # workspace.Workspace


@dataclass(frozen=True)
class RunContext:
    """What the checks are told of the run, once, before its first experiment."""

    task: object  # tasks.Task: its scorer, its artifact, whether its code rules apply
    profile: str
    device: str  # the experiments' (the scorer measures where they trained)
    data_dir: str
    jailed: bool  # the experiments run jailed: so does the scorer
    folder: RunFolder  # integrity.log, scorer.log, the experiments' notebooks (read-only to the scorer)
    base: nbformat.NotebookNode  # the sandbox as the baseline ran it: its harness cells are the truth


class Checks:
    """The integrity hooks of a step. This base checks nothing and believes the run's own metrics."""

    def before_experiment(self, run: RunContext) -> None:
        """Before each experiment: raise IntegrityError to stop the loop (e.g. the data changed)."""

    def check_candidate(self, candidate: Candidate) -> str | None:
        """Before running: a reason refuses the candidate (recorded as a crash, reverted, not run)."""
        return None

    def score(self, result):
        """After a run: the result whose metrics the gate sees (a RunResult)."""
        return result

    def scored_mark(self) -> str:
        """Who measured the rows' metric: "outside" (a scorer in a jail of its own) or "kernel" (the run itself)."""
        return "kernel"

    def close(self) -> None:
        """The loop ends: stop what the checks started."""


@dataclass
class Guard(Checks):
    """The real checks (see the module docstring). `static=False` leaves out the pre-filter's code rules (the
    tests use it to show that the jail and the scorer contain each attack on their own)."""

    static: bool = True
    scored_outside: bool | None = None  # None: when the base notebook reports through harness.finish
    scores: list = field(default_factory=list)  # every Score of this loop, for the benchmarks and tests
    warnings: list[str] = field(default_factory=list)  # what the user was told once (e.g. unkeyed data)
    _started: bool = False
    _base: nbformat.NotebookNode | None = None
    _sources: dict[Path, str] = field(default_factory=dict)  # score module -> sha256 at the start
    _data: str | None = None  # sha256 of the manifest once load_prepared verified the files against it
    _data_dir: str | None = None
    _profile: str = "cpu"
    _device: str = "cpu"
    _scorer: Scorer | None = None
    _log: Path | None = None
    _task: object = None  # tasks.Task: the loop's
    _file_scorer: object = None  # tasks.filescore.FileScorer, for a task whose experiment hands over a file

    # -- before each experiment ---------------------------------------------------------------------------
    def before_experiment(self, run: RunContext) -> None:
        if not self._started:
            self._start(run)
            return
        self.verify_sources()
        if self._task is None or self._task.is_gpt:  # the prepared corpus is the GPT task's yardstick
            self.verify_data()

    def _start(self, run: RunContext) -> None:
        self._task, self._base, self._log = run.task, run.base, run.folder.integrity_log
        if not self._task.is_gpt:
            self._start_task(run)
            return
        self.snapshot(run.data_dir, run.profile)
        if run.jailed:  # the limits in force and what enforces them, for the morning (also `doctor`)
            for line in describe(for_profile(run.profile)):
                self.note(line)
            lower_own_oom_score()
        if self.scored_outside is None:
            self.scored_outside = any("harness.finish(" in c.source for c in contract_cells(self._base))
        if self.scored_outside:
            scorer_device = scoring_device(run.device)
            self._device = scorer_device.split(":")[0]
            jail = None
            if run.jailed:  # read-only: the data (validation included) and the experiments' folders
                data = Path(self._data_dir) / self._profile
                jail = Jail(readonly=(data, run.folder.notebooks), gpu=self._device == "cuda",
                            limits=for_profile(self._profile),
                            masked=tuple(input_paths(self._data_dir, self._profile)))
            self._scorer = Scorer(self._data_dir, self._profile, scorer_device, jail, run.folder.scorer_log)
        self._started = True

    def _start_task(self, run: RunContext) -> None:
        """A task other than the GPT: its own scorer (a file artifact) or its kernel's word (metrics)."""
        from autoresearch_kernel import tasks
        from autoresearch_kernel.tasks.filescore import FileScorer

        self._sources = {path: _sha256(path) for path in score_sources(self._task)}
        self.scored_outside = self._task.scored == "outside"
        if self._task.artifact == "file":
            public, private = tasks.prepare(self._task, run.data_dir)
            self._file_scorer = FileScorer(self._task, public, private, run.jailed, run.folder.scorer_log)
        self._started = True

    def scored_mark(self) -> str:
        return "outside" if self.scored_outside else "kernel"

    def snapshot(self, data_dir: str | None, profile: str, strict: bool = False) -> None:
        """Remember the score modules and the prepared data as they are now: the yardstick that the later
        checks compare with. `strict`: data that does not verify raises IntegrityError."""
        from autoresearch_kernel.harness.prepare import default_data_dir

        self._data_dir, self._profile = str(data_dir or default_data_dir()), profile
        self._sources = {path: _sha256(path) for path in score_sources()}
        self._data = self._data_state(strict)

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()

    # -- the package's sources and the prepared data ------------------------------------------------------
    def verify_sources(self) -> None:
        """Raise IntegrityError when a module a score depends on changed on disk since the loop started."""
        now = {path: _sha256(path) for path in score_sources(self._task)}
        changed = sorted(_package_name(p) for p in set(now) | set(self._sources) if now.get(p) != self._sources.get(p))
        if changed:
            self.note(f"package sources changed on disk: {', '.join(changed)}")
            raise IntegrityError(
                f"the package's source files changed while the loop ran ({', '.join(changed[:5])}); results after "
                "that would be measured by other code. Check the change, then resume the tag")

    def _data_state(self, strict: bool) -> str | None:
        """The manifest's sha256 after load_prepared checked every file against it; None when there is no
        data (then nothing is compared). `strict`: a failure to verify raises IntegrityError."""
        from autoresearch_kernel.harness.data import load_prepared, unkeyed_warning
        from autoresearch_kernel.harness.manifest import MANIFEST

        manifest = Path(self._data_dir) / self._profile / MANIFEST
        try:
            prepared = load_prepared(self._data_dir, self._profile)
            warning = unkeyed_warning(prepared.manifest, self._data_dir)
            if warning and warning not in self.warnings:  # said once, here and in integrity.log
                self.warnings.append(warning)
                self.note(warning)
                print(f"warning: {warning}", file=sys.stderr, flush=True)
            return _sha256(manifest)
        except DataError as error:
            if strict:
                raise IntegrityError(self._data_message(str(error))) from None
            return None

    def verify_data(self) -> None:
        """Raise IntegrityError when the prepared data differs from the loop's start."""
        if self._data is None:
            self._data = self._data_state(strict=False)  # prepared since the start: from now on it counts
            return
        now = self._data_state(strict=True)
        if now != self._data:
            raise IntegrityError(self._data_message("its manifest was rewritten"))

    def _data_message(self, detail: str) -> str:
        from autoresearch_kernel.harness.prepare import prepare_command

        return (f"the prepared data changed during the run ({detail}); results after it would be measured on "
                f"another yardstick. Prepare it again ({prepare_command(self._profile, self._data_dir)}), "
                "then start a new tag")

    # -- before running: the candidate --------------------------------------------------------------------
    def check_candidate(self, candidate: Candidate) -> str | None:
        if not self._started:
            raise IntegrityError("the guard checks candidates only inside a loop step (before_experiment first)")
        changed = candidate.workspace.repo.git.diff("--name-only", candidate.parent, candidate.commit).splitlines()
        sandbox = getattr(candidate.workspace, "sandbox_path", SANDBOX)
        outside = [path for path in changed if path != sandbox]
        if outside:
            return f"changes files outside the sandbox: {', '.join(outside[:5])}; only {sandbox} may change"
        try:
            notebook = candidate.workspace.read_sandbox(candidate.commit)
            nbformat.validate(notebook)
        except Exception as error:  # unreadable JSON, schema violations: either way nothing may run
            return f"the notebook is not a valid notebook: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        reason = check_structure(self._base, notebook)
        if reason or not self.static or (self._task is not None and not self._task.static_rules):
            return reason
        trusted = {c.source for c in self._base.cells if c.cell_type == "code" and not is_contract(c)}
        agent = [(i, c.source) for i, c in enumerate(notebook.cells)
                 if c.cell_type == "code" and not is_contract(c) and c.source not in trusted]
        checked = {index for index, _ in agent}
        others = [c.source for i, c in enumerate(notebook.cells) if c.cell_type == "code" and i not in checked]
        violations = static.check_cells(agent, others)  # others: where `F`, `nn`, `harness` were imported
        if violations:
            more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
            return "sandbox rule: " + "; ".join(str(v) for v in violations[:3]) + more
        return None

    # -- after running: the score -------------------------------------------------------------------------
    def score(self, result):
        """The scorer's val_bpb for a run that finished (its kernel's own figures stay, as information); a
        figure below the profile's floor makes the result "suspect"."""
        if not result.ok or not self.scored_outside:
            return result
        if self._file_scorer is not None:
            return self._score_file(result)
        scored, measured = score_result(result, self._scorer, self._device)
        self.record(scored, measured)
        return scored

    def record(self, result, measured) -> None:
        """Keep a Score measured here or on a Ray node (`score_result`'s), and say in integrity.log what it was."""
        if measured is None:  # nothing was measured: the run left no program to score
            return
        self.scores.append(measured)
        if result.status == "suspect":
            self.note(f"SUSPECT {result.output_path.name}: {result.error_message}")
        elif measured.ok:
            self.note(f"scored {result.output_path.name}: val_bpb {measured.val_bpb:.6f} in {measured.seconds:.1f} s")
        else:
            self.note(f"{result.output_path.name}: scoring failed: {measured.failure}")

    def _score_file(self, result):
        """A file artifact scored by the task's function in its own jail: its value is the run's metric."""
        artifact = result.output_path.parent / self._task.artifact_name
        measured = self._file_scorer.score(artifact)
        name = self._task.metric.name
        if not measured.ok:
            self.note(f"{result.output_path.name}: scoring failed: {measured.failure}")
            return failed(result, "ScoringFailed", measured.failure)
        self.note(f"scored {result.output_path.name}: {name} {measured.value:.6f} in {measured.seconds:.1f} s")
        metrics = dict(result.metrics or {}, **{name: measured.value})
        append_cell(result.output_path, f"{SCORED_HEADING}\n\n{name}: {measured.value:.6f} "
                                         f"(scored in {measured.seconds:.1f} s)")
        return dataclasses.replace(result, metrics=metrics)

    def note(self, line: str) -> None:
        """One line in runs/<tag>/integrity.log: what the guard found, for the morning."""
        if self._log is not None:
            with open(self._log, "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}\t{one_line(line, 500)}\n")


def score_sources(task=None) -> list[Path]:
    """The .py files a score depends on: the harness, the integrity and tasks packages, as imported, and a
    user's task's scorer and check files."""
    from autoresearch_kernel.tasks.functions import file_of

    package = Path(autoresearch_kernel.__file__).resolve().parent
    own = [file_of(spec, task.folder) for spec in (task.scorer, *task.checks) if spec] if task is not None else []
    folders = [sorted((package / name).rglob("*.py")) for name in ("harness", "integrity", "tasks")]
    files = [package / "__init__.py", package / "errors.py", package / "execution" / "runner.py",
             package / "execution" / "scoring.py", Path(__file__)]
    return [path for folder in folders for path in folder] + files + [path for path in own if path]


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "missing"


def _package_name(path: Path) -> str:
    return str(path.relative_to(Path(autoresearch_kernel.__file__).resolve().parent.parent))


