"""The loop's integrity checks: the agent cannot leave its sandbox, fake the metric, or move the yardstick.

`Guard` implements the loop's `Checks` hooks in three places of a step:

    before_experiment   the harness's source files and the prepared data are what they were when the loop
                        started: changed sources are restored from the snapshot (a candidate's doing, noted
                        in runs/<tag>/integrity.log); changed data stops the loop (IntegrityError)
    check_candidate     before anything runs: only the sandbox notebook changed; its parameters and harness
                        cells are the base commit's, once each, in place; it is a valid notebook; the agent's
                        code passes the static rules of codecheck.py
    verify_result       after a run: sources and data intact, no agent cell printed a summary line, the
                        summary matches metrics.json; and a result that would be kept (keep / confirm) is
                        re-scored by the harness in a clean process (rescore.py), which must agree

The base is the commit the run's baseline ran on: the human's notebook, whose harness cells are the truth.
Code identical to one of its cells is the human's and is trusted; every other agent cell is checked.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

import autoresearch_kernel
from autoresearch_kernel import codecheck, results
from autoresearch_kernel.errors import DataError, IntegrityError
from autoresearch_kernel.loop import Candidate, Checks
from autoresearch_kernel.workspace import SANDBOX

CONTRACT_TAGS = frozenset({"parameters", "injected-parameters", "harness"})
# The modules a score depends on when read from disk: the harness (imported by every kernel), what it
# imports, and the clean re-score with the checks around it. (The loop's own modules are already in this
# process's memory; an edit on disk would only reach a later process.)
SCORE_MODULES = ("__init__.py", "errors.py", "rescore.py", "runner.py", "gate.py", "guard.py", "codecheck.py")
INTEGRITY_LOG = "integrity.log"


@dataclass
class Guard(Checks):
    """The real checks (see the module docstring). `static=False` leaves out the code rules (the tests use it
    to show that the runtime layer catches each attack on its own); `rescore=None` re-scores whenever the
    base notebook reports through `harness.finish` (a notebook without the harness has no program to score)."""

    static: bool = True
    rescore: bool | None = None
    rescore_timeout_s: float | None = None
    rescores: list = field(default_factory=list)  # every clean re-score of this loop (rescore.Rescore)
    _started: bool = False
    _base: nbformat.NotebookNode | None = None
    _sources: dict[Path, bytes] = field(default_factory=dict)
    _data: str | None = None  # sha256 of the manifest once load_prepared verified the files against it
    _data_dir: str | None = None
    _profile: str = "cpu"
    _device: str = "auto"
    _log: Path | None = None

    # -- before each experiment ---------------------------------------------------------------------------
    def before_experiment(self, loop) -> None:
        if not self._started:
            self._start(loop)
            return
        changed = self.restore_sources()
        if changed:
            self.note(f"harness sources changed on disk and were restored: {', '.join(changed)}")
        self.verify_data()

    def _start(self, loop) -> None:
        rows = results.read_rows(loop.results_path)
        baseline = [r.commit for r in rows if r.kind == "baseline"]
        base = loop.workspace.resolve(baseline[0]) if baseline else (loop.state.kept or loop.workspace.head())
        self._base = loop.workspace.read_sandbox(base)
        self._device = loop.config.device
        self._log = loop.folder / INTEGRITY_LOG
        self.snapshot(loop.config.data_dir, loop.config.profile)
        if self.rescore is None:
            self.rescore = any("harness.finish(" in c.source for c in contract_cells(self._base))
        self._started = True

    def snapshot(self, data_dir: str | None, profile: str, strict: bool = False) -> None:
        """Remember the score modules and the prepared data as they are now: the yardstick that the later
        checks compare with. `strict`: data that does not verify raises IntegrityError."""
        self._data_dir, self._profile = data_dir, profile
        self._sources = {path: path.read_bytes() for path in score_sources()}
        self._data = self._data_state(strict)

    # -- the harness's sources ----------------------------------------------------------------------------
    def restore_sources(self) -> list[str]:
        """Put back every score module that differs from the snapshot, remove new ones; returns their names."""
        changed = []
        for path, content in self._sources.items():
            try:
                same = path.read_bytes() == content
            except OSError:
                same = False
            if not same:
                temporary = path.with_name(f".{path.name}.restore")
                temporary.write_bytes(content)
                os.replace(temporary, path)
                changed.append(_package_name(path))
        for path in score_sources():
            if path not in self._sources:
                path.unlink(missing_ok=True)
                changed.append(_package_name(path))
        return changed

    # -- the prepared data --------------------------------------------------------------------------------
    def _data_state(self, strict: bool) -> str | None:
        """The manifest's sha256 after load_prepared checked every file against it; None when there is no
        data (then nothing is compared). `strict`: a failure to verify raises IntegrityError."""
        from autoresearch_kernel.harness.data import load_prepared
        from autoresearch_kernel.harness.files import sha256_file
        from autoresearch_kernel.harness.manifest import MANIFEST
        from autoresearch_kernel.harness.prepare import default_data_dir

        manifest = (Path(self._data_dir) if self._data_dir else default_data_dir()) / self._profile / MANIFEST
        try:
            load_prepared(self._data_dir, self._profile)
            return sha256_file(manifest)
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
        outside = [path for path in changed if path != SANDBOX]
        if outside:
            return f"changes files outside the sandbox: {', '.join(outside[:5])}; only {SANDBOX} may change"
        try:
            notebook = candidate.workspace.read_sandbox(candidate.commit)
            nbformat.validate(notebook)
        except Exception as error:  # unreadable JSON, schema violations: either way nothing may run
            return f"the notebook is not a valid notebook: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
        reason = check_structure(self._base, notebook)
        if reason or not self.static:
            return reason
        trusted = {c.source for c in self._base.cells if c.cell_type == "code" and not is_contract(c)}
        agent = [(i, c.source) for i, c in enumerate(notebook.cells)
                 if c.cell_type == "code" and not is_contract(c) and c.source not in trusted]
        checked = {index for index, _ in agent}
        others = [c.source for i, c in enumerate(notebook.cells) if c.cell_type == "code" and i not in checked]
        violations = codecheck.check_cells(agent, others)  # others: where `F`, `nn`, `harness` were imported
        if violations:
            more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
            return "sandbox rule: " + "; ".join(str(v) for v in violations[:3]) + more
        return None

    # -- after running: the result ------------------------------------------------------------------------
    def verify_result(self, candidate: Candidate, result, decision) -> str | None:
        changed = self.restore_sources()
        if changed:
            self.note(f"experiment {candidate.number}: harness sources changed and were restored: {', '.join(changed)}")
            return f"the run changed the harness's source files ({', '.join(changed)}); they were restored"
        try:
            self.verify_data()
        except IntegrityError:
            return "the run changed the prepared data on disk; the loop stops until it is prepared again"
        reason = check_outputs(result, harness_report=bool(self.rescore))
        if reason is None and self.rescore and decision.status in ("keep", "confirm"):
            reason = self._rescore(result)
        program = _program_path(result)
        if decision.status == "discard" and reason is None:
            program.unlink(missing_ok=True)  # only a kept model's program is worth its disk space
        if reason:
            self.note(f"experiment {candidate.number}: {reason}")
        return reason

    def _rescore(self, result) -> str | None:
        from autoresearch_kernel import rescore

        metrics = result.metrics or {}
        if metrics.get("export_failure"):
            return f"the model could not be exported for the clean re-score: {metrics['export_failure']}"
        program = _program_path(result)
        if not program.is_file():
            return "no exported program of the model: the result cannot be re-scored in a clean process"
        kind = metrics.get("device") if metrics.get("device") in ("cpu", "cuda", "mps") else "cpu"
        device = self._device if kind == "cuda" and self._device.startswith("cuda") else kind
        bf16 = kind == "cuda"  # harness.finish evaluates under bf16 autocast on CUDA only
        timeout = self.rescore_timeout_s or rescore.TIMEOUT_S
        clean = rescore.rescore(program, self._data_dir, self._profile, device, bf16, timeout)
        self.rescores.append(clean)
        if not clean.ok:
            return f"the clean re-score failed: {clean.failure}"
        claimed = metrics.get("val_bpb")
        limit = rescore.tolerance(bf16)
        if not isinstance(claimed, (int, float)) or abs(clean.val_bpb - claimed) > limit:
            return (f"the clean re-score gives val_bpb {clean.val_bpb:.6f}, the run reported {claimed}: more than "
                    f"{limit:g} apart, so the score inside the kernel was not the harness's")
        self.note(f"re-scored {program.name}: {clean.val_bpb:.6f} (reported {claimed}) in {clean.seconds:.1f} s")
        return None

    def note(self, line: str) -> None:
        """One line in runs/<tag>/integrity.log: what the guard found or restored, for the morning."""
        if self._log is not None:
            with open(self._log, "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}\t{results.one_line(line, 500)}\n")


def score_sources() -> list[Path]:
    """The .py files a score depends on: the harness package and SCORE_MODULES, as imported."""
    package = Path(autoresearch_kernel.__file__).resolve().parent
    return sorted((package / "harness").rglob("*.py")) + [package / name for name in SCORE_MODULES]


def _package_name(path: Path) -> str:
    return str(path.relative_to(Path(autoresearch_kernel.__file__).resolve().parent.parent))


def _program_path(result) -> Path:
    """Where harness.finish exported the model: derived from the run's own output path, never from
    metrics.json (which the sandbox could have written)."""
    from autoresearch_kernel.harness.report import program_path

    return program_path(result.output_path.with_suffix(".metrics.json"))


# -- the notebook's shape ---------------------------------------------------------------------------------
def is_contract(cell) -> bool:
    return bool(CONTRACT_TAGS & set(cell.get("metadata", {}).get("tags", [])))


def contract_cells(notebook) -> list:
    return [c for c in notebook.cells if c.cell_type == "code" and is_contract(c)]


def check_structure(base, candidate) -> str | None:
    """The candidate keeps the base's contract cells (parameters, harness) exactly once each, identical in
    id, tags and source, in order, with agent code only where the base had agent code (between set-up
    and report); and its kernel. Returns the first problem, or None."""
    if candidate.metadata.get("kernelspec") != base.metadata.get("kernelspec"):
        return "the notebook's kernelspec changed; the sandbox runs in the base notebook's kernel"
    contract = contract_cells(base)
    gaps, seen = set(), 0  # gap k: after the k-th contract cell
    for cell in (c for c in base.cells if c.cell_type == "code"):
        if is_contract(cell):
            seen += 1
        else:
            gaps.add(seen)
    seen = 0
    for index, cell in enumerate(candidate.cells):
        if seen < len(contract) and _same(cell, contract[seen]):
            seen += 1
            continue
        if _looks_like_contract(cell, contract):
            return (f"cell {index} ({cell.get('id', 'no id')}) is a harness or parameters cell that was edited, "
                    "moved, duplicated or re-tagged; those cells must stay exactly as in the base notebook")
        if cell.cell_type == "code" and seen not in gaps:
            where = "before the harness set-up" if seen == 0 else "after the harness report" if seen == len(contract) else "between harness cells"
            return f"cell {index} adds code {where}; the agent's code goes between the set-up and the report cells"
    if seen < len(contract):
        missing = contract[seen]
        return f"the harness cell {missing.get('id', '?')} is missing or changed; restore it exactly as in the base notebook"
    return None


def _same(cell, reference) -> bool:
    return (cell.cell_type == reference.cell_type and cell.get("id") == reference.get("id")
            and cell.source == reference.source
            and cell.get("metadata", {}).get("tags", []) == reference.get("metadata", {}).get("tags", []))


def _looks_like_contract(cell, contract) -> bool:
    ids = {c.get("id") for c in contract}
    sources = {_normal(c.source) for c in contract}
    return is_contract(cell) or cell.get("id") in ids or (cell.cell_type == "code" and _normal(cell.source) in sources)


def _normal(source: str) -> str:
    return "".join(source.split())


# -- the executed notebook ---------------------------------------------------------------------------------
def check_outputs(result, harness_report: bool) -> str | None:
    """Only the report cell (the last code cell) may print the summary, and its val_bpb line must be the one
    in metrics.json. `harness_report`: the summary line is required (the harness always prints it)."""
    try:
        executed = nbformat.read(result.output_path, as_version=4)
    except Exception as error:
        return f"the executed notebook cannot be read ({type(error).__name__})"
    code = [c for c in executed.cells if c.cell_type == "code"]
    if not code:
        return "the executed notebook has no code cells"
    for cell in code[:-1]:
        text = _printed(cell)
        if codecheck.SUMMARY_LINE.search(text):
            return (f"cell {cell.get('id', '?')} printed a line of the harness's summary block; only the "
                    "harness reports results")
    claimed = (result.metrics or {}).get("val_bpb")
    lines = [line for line in _printed(code[-1]).splitlines() if line.strip().startswith("val_bpb:")]
    if not lines:
        return "the report cell printed no val_bpb line: the result did not come from the harness" if harness_report else None
    try:
        printed = float(lines[-1].split(":", 1)[1])
    except ValueError:
        return "the report cell's val_bpb line is not a number"
    if len(lines) > 1 or not isinstance(claimed, (int, float)) or abs(printed - claimed) > 5e-6:
        return f"metrics.json says val_bpb {claimed} but the report cell printed {lines[-1].strip()!r}"
    return None


def _printed(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif output.get("output_type") in ("execute_result", "display_data"):
            parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "".join(parts)
