"""The node side of the Ray executor: what travels between the loop and a node (the wire's dataclasses), and
the lane worker, one Ray actor per lane, that checks its node holds the loop's package and data, runs a job
in the jail in a node-local folder, scores it with its own warm scorer and ships the files back. The loop side
is ray_executor.py."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import ray

import autoresearch_kernel
from autoresearch_kernel.errors import AutoresearchError, DataError
from autoresearch_kernel.execution.lanes import Job, Lane
from autoresearch_kernel.execution.runner import RunResult
from autoresearch_kernel.execution.spec import ExperimentSpec
from autoresearch_kernel.integrity import scorer
from autoresearch_kernel.workspace.runfolder import RunFolder

# The files a run wrote come back through Ray's object store; a larger file (a huge checkpoint) stays behind,
# and a note in the experiment's folder says so.
MAX_FILE_BYTES = 2 * 1024**3
SCRATCH = "autoresearch-ray-"  # node-local run folders: <tmp>/autoresearch-ray-<worker pid>-<random>/


@dataclass(frozen=True)
class PreparedData:
    """The prepared data a node must hold: the loop's manifest's source and file hashes."""

    source: str
    files: dict[str, str]
    # The loop's split secret (secret.json, hex): a node that prepares the embedded corpus itself must draw the
    # loop's split to hold its files. Nodes are the trusted side (they score); experiments never see it.
    secret: str = ""


@dataclass(frozen=True)
class Expected:
    """What every node must agree on with the loop, and how its worker runs and scores."""

    version: str  # autoresearch_kernel.__version__
    fingerprint: str  # package_fingerprint(): the package's source files
    data_dir: str
    profile: str
    data: PreparedData | None  # None: the loop has none prepared (its notebook reads no data), nothing to check
    jailed: bool
    scored_outside: bool  # the loop's Guard decided: the node's worker scores with a warm scorer of its own


@dataclass(frozen=True)
class Order:
    """One run, as a node gets it: the experiment's spec travels, never the loop's config (which also holds
    proposer options, an API key among them, that no node needs)."""

    job: Job
    notebook: str  # the committed candidate's text
    spec: ExperimentSpec
    threads: int | None

    @property
    def timeout_s(self) -> float:
        """The whole notebook's wall-clock limit, a retry's growth included."""
        return self.spec.timeout_s * self.job.timeout_scale


@dataclass(frozen=True)
class NodeInfo:
    """Where a lane's worker runs."""

    node: str  # "<ip>/<node id prefix>": what the rows' `node` column says
    pid: int  # the worker's process
    device: str  # the lane's device on that node (a cuda lane: the GPU Ray gave it)


@dataclass
class Shipped:
    """A finished run, as a node sends it back."""

    result: RunResult  # its paths are the node's
    files: dict[str, bytes]  # the experiment folder's files, by path relative to it
    left: dict[str, int]  # files too large to send: path -> bytes
    measured: scorer.Score | None  # the node's scorer's measurement, when it scored (for the integrity log)



def package_fingerprint() -> str:
    """sha256 over the package's source files (their names and contents): equal only for the same code."""
    root = Path(autoresearch_kernel.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def prepared_data(data_dir: str, profile: str) -> PreparedData | None:
    """The prepared data's source and file hashes, from its manifest; None when there is none."""
    from autoresearch_kernel.harness.manifest import MANIFEST, SECRET, Manifest
    from autoresearch_kernel.harness.prepare import prepare_command

    path = Path(data_dir) / profile / MANIFEST
    if not path.is_file():
        return None
    manifest = Manifest.load(path, prepare_command(profile, data_dir))
    secret = Path(data_dir) / profile / SECRET
    return PreparedData(manifest.source, dict(manifest.files), secret.read_bytes().hex() if secret.is_file() else "")


# -- the node side ---------------------------------------------------------------------------------------
class _Flag:
    """The runner's cancel flag for one job: set by `LaneWorker.abort` from the loop."""

    def __init__(self, aborted: set[int], number: int):
        self.aborted, self.number = aborted, number

    def is_set(self) -> bool:
        return self.number in self.aborted


@ray.remote(max_concurrency=2)  # run, and an abort while it runs
class LaneWorker:
    """One lane's worker on some node: checks the node once, then runs the lane's jobs one after another in a
    node-local run folder, scoring them with a warm scorer of its own when the loop scores outside."""

    def __init__(self, expected: Expected, lane: Lane):
        self.expected, self.lane, self.device = expected, lane, lane.device
        self.folder: RunFolder | None = None  # made once the node passed its checks
        self.aborted: set[int] = set()  # the job numbers the loop aborted
        self.scorer = None
        self.scorer_type = "cpu"

    def start(self) -> NodeInfo:
        context = ray.get_runtime_context()
        node = f"{ray.util.get_node_ip_address()}/{context.get_node_id()[:8]}"
        check_node(self.expected, node)
        self.folder = RunFolder(scratch_folder())
        if self.lane.device.startswith("cuda"):  # the GPU Ray gave this actor, by its index on the node
            self.device = f"cuda:{ray.get_gpu_ids()[0]}"
        if self.expected.scored_outside:
            self._start_scorer()
        return NodeInfo(node, os.getpid(), self.device)

    def _start_scorer(self) -> None:
        """The node's scorer, as the loop's Guard makes its own: on the lane's device, jailed like the runs."""
        from autoresearch_kernel.execution.scoring import scoring_device
        from autoresearch_kernel.integrity.jail import Jail
        from autoresearch_kernel.integrity.limits import for_profile
        from autoresearch_kernel.integrity.scorer import Scorer

        device = self.device if self.device.startswith("cuda") else scoring_device(self.device)
        self.scorer_type = device.split(":")[0]
        jail = None
        if self.expected.jailed:  # read-only: the data (validation included) and the experiments' folders
            data = Path(self.expected.data_dir) / self.expected.profile
            self.folder.notebooks.mkdir(parents=True, exist_ok=True)
            jail = Jail(readonly=(data, self.folder.notebooks), gpu=self.scorer_type == "cuda",
                        limits=for_profile(self.expected.profile))
        self.scorer = Scorer(self.expected.data_dir, self.expected.profile, device, jail, self.folder.scorer_log)

    def run(self, order: Order) -> Shipped:
        from autoresearch_kernel.execution.launch import run_experiment
        from autoresearch_kernel.execution.scoring import score_result

        job = order.job
        notebook = self.folder.candidate(job.number, job.commit)
        output_folder = self.folder.experiment(job.number, job.commit)
        notebook.parent.mkdir(parents=True, exist_ok=True)
        notebook.write_text(order.notebook, encoding="utf-8")
        lane = dataclasses.replace(self.lane, device=self.device, threads=order.threads)
        try:
            result = run_experiment(order.spec, self.folder, job, lane, _Flag(self.aborted, job.number))
            measured = None
            if self.scorer is not None and result.ok:
                result, measured = score_result(result, self.scorer, self.scorer_type)
            files, left = pack(output_folder)
            return Shipped(result, files, left, measured)
        finally:
            self.aborted.discard(job.number)
            shutil.rmtree(output_folder, ignore_errors=True)
            notebook.unlink(missing_ok=True)

    def abort(self, number: int) -> None:
        self.aborted.add(number)

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()
        if self.folder is not None:
            shutil.rmtree(self.folder.path, ignore_errors=True)


def scratch_folder() -> Path:
    """A node-local folder for a worker's runs, named after its process. The folders of workers that died
    (killed, lost with their runs) are removed first: nobody else would."""
    for stale in Path(tempfile.gettempdir()).glob(f"{SCRATCH}*-*"):
        pid = stale.name.removeprefix(SCRATCH).split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH}{os.getpid()}-"))


def pack(folder: Path) -> tuple[dict[str, bytes], dict[str, int]]:
    """The folder's regular files (path relative to it -> bytes), and those too large to send (-> size).

    Links are left out: the experiment wrote this folder, and a link could point at any file of the node."""
    files: dict[str, bytes] = {}
    left: dict[str, int] = {}
    for root, _, names in os.walk(folder):  # does not descend into linked folders
        for name in names:
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue
            relative, size = str(path.relative_to(folder)), path.stat().st_size
            if size > MAX_FILE_BYTES:
                left[relative] = size
            else:
                files[relative] = path.read_bytes()
    return files, left


def check_node(expected: Expected, node: str) -> None:
    """AutoresearchError unless this node runs the loop's package, can jail, and holds the loop's data
    (the embedded corpus is prepared here when missing: it ships with the package)."""
    from autoresearch_kernel.integrity import jail

    version, fingerprint = autoresearch_kernel.__version__, package_fingerprint()
    if (version, fingerprint) != (expected.version, expected.fingerprint):
        raise AutoresearchError(
            f"node {node} runs autoresearch_kernel {version} (sources {fingerprint[:12]}) but the loop runs "
            f"{expected.version} (sources {expected.fingerprint[:12]}): install the loop's version on every node")
    if expected.jailed:
        reason = jail.unavailable_reason()
        if reason:
            raise AutoresearchError(f"node {node} cannot make the experiments' jail: {reason}")
    if expected.data is not None:
        check_data(expected, node)


def check_data(expected: Expected, node: str) -> None:
    from autoresearch_kernel.harness.data import load_prepared
    from autoresearch_kernel.harness.manifest import MANIFEST
    from autoresearch_kernel.harness.prepare import SplitSecret, prepare, prepare_command

    data_dir, profile, wanted = expected.data_dir, expected.profile, expected.data
    command = prepare_command(profile, data_dir, wanted.source if wanted.source in ("embedded", "climbmix")
                              else f'"{wanted.source}"')
    try:
        if not (Path(data_dir) / profile / MANIFEST).is_file():
            if wanted.source != "embedded":
                raise AutoresearchError(f"node {node} has no prepared data for profile {profile} in {data_dir}: "
                                        f"prepare it there from the loop's source ({command})")
            with _prepare_lock(Path(data_dir), profile):  # lanes on one node: one prepares, the others wait
                if not (Path(data_dir) / profile / MANIFEST).is_file():
                    # the loop's split, not a fresh one (a preparation without a key: a fresh one, as it had)
                    secret = SplitSecret.from_bytes(bytes.fromhex(wanted.secret)) if wanted.secret else None
                    prepare("embedded", profile, data_dir, progress=False, secret=secret)
        found = load_prepared(data_dir, profile).manifest.files
    except DataError as error:
        raise AutoresearchError(f"node {node}: {error}") from None
    except OSError as error:  # the lock or the folder cannot be made there
        raise AutoresearchError(f"node {node} cannot prepare the data in {data_dir} ({error}): prepare it there "
                                f"({command}), or give a --data-dir that every node can write") from None
    if found != wanted.files:
        raise AutoresearchError(
            f"node {node} holds other prepared data in {data_dir}/{profile} than the loop (the file hashes of "
            f"its manifest differ): prepare it there from the loop's source ({command}), or copy the loop's")


class _prepare_lock:
    """An exclusive lock on <data_dir>/.<profile>.prepare.lock (flock: released if the process dies)."""

    def __init__(self, data_dir: Path, profile: str):
        self.path = data_dir / f".{profile}.prepare.lock"

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "w")
        fcntl.flock(self.file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

