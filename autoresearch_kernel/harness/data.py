"""load_prepared(): the verified prepared data an experiment trains and is measured on.

It checks the manifest (present, same format, same profile settings as this code's) and the sha256 of
every prepared file before anything is used; a problem raises DataError ending with the command that
fixes it. The training split is public; the evaluation rows are reachable only through a private
accessor that evaluate.py uses, so the training side cannot reach validation tokens by accident. Inside
the experiment's jail the validation file is not there at all: `load_prepared(..., validation=False)`
verifies and loads the training side only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autoresearch_kernel.errors import DataError
from autoresearch_kernel.harness import manifest as names
from autoresearch_kernel.harness.dataloader import Split
from autoresearch_kernel.harness.files import sha256_file
from autoresearch_kernel.harness.manifest import Manifest
from autoresearch_kernel.harness.prepare import default_data_dir, prepare_command
from autoresearch_kernel.harness.profiles import Profile, get_profile
from autoresearch_kernel.harness.tokenizer import Tokenizer


@dataclass
class Prepared:
    path: Path  # <data_dir>/<profile>
    profile: Profile
    manifest: Manifest
    tokenizer: Tokenizer
    train: Split
    _val_rows_path: Path | None = field(repr=False)

    @property
    def token_bytes(self) -> np.ndarray:
        """UTF-8 bytes per token id (0 for special tokens): the denominator of val_bpb."""
        return self.tokenizer.token_bytes

    def _validation_rows(self) -> np.ndarray:
        """The fixed evaluation rows [eval_tokens / seq_len, seq_len + 1]; for evaluate.py only."""
        if self._val_rows_path is None:
            raise DataError("the validation split is not loaded here: the loop's scorer measures val_bpb outside "
                            "the experiment")
        return np.load(self._val_rows_path, mmap_mode="r", allow_pickle=False)


# The training side a kernel started ahead of its experiment verified and loaded (harness/warm.py), taken
# by the experiment's own `load_prepared` once: a kernel runs one experiment, and a later load checks again.
_preloaded: dict[tuple[str, str], Prepared] = {}


def preload(data_dir: str | Path | None, profile: str | Profile) -> None:
    """Verify and load the training side now, for this process's next `load_prepared(..., validation=False)`
    of the same folder; a DataError is left for that call to raise, with its own message."""
    try:
        prepared = load_prepared(data_dir, profile, validation=False)
    except DataError:
        return
    _preloaded[(str(prepared.path), prepared.profile.name)] = prepared


def load_prepared(data_dir: str | Path | None = None, profile: str | Profile = "cpu", validation: bool = True) -> Prepared:
    """Load and verify <data_dir>/<profile>; DataError with the fixing command when anything is off.

    `validation=False`: the training side only (the validation file is neither needed nor checked).
    """
    spec = get_profile(profile)
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    path = root / spec.name
    if not validation and (str(path), spec.name) in _preloaded:
        return _preloaded.pop((str(path), spec.name))
    fix = prepare_command(spec.name, data_dir)
    manifest_path = path / names.MANIFEST
    if not manifest_path.is_file():
        partial = " (a prepare was interrupted)" if (root / f"{spec.name}.staging").exists() else ""
        raise DataError(f"no prepared data for profile {spec.name} in {root}{partial}; run: {fix}")
    manifest = Manifest.load(manifest_path, fix)
    fix = prepare_command(spec.name, data_dir, _source_option(manifest.source))
    changed = sorted(k for k, v in spec.data_settings().items() if manifest.profile.get(k) != v)
    if changed:
        raise DataError(f"data in {path} was prepared with other {spec.name} settings ({', '.join(changed)}); run: {fix}")
    for name, digest in manifest.files.items():
        if name in names.VALIDATION_SIDE and not validation:
            continue
        file = path / name
        if not file.is_file():
            raise DataError(f"{file} is missing (partial data); run: {fix}")
        if sha256_file(file) != digest:
            raise DataError(f"{file} changed since prepare (hash mismatch); run: {fix}")
    try:
        tokens = np.load(path / names.TRAIN_TOKENS, mmap_mode="r", allow_pickle=False)
        offsets = np.load(path / names.TRAIN_OFFSETS, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read the token arrays in {path} ({error}); run: {fix}") from None
    return Prepared(path, spec, manifest, Tokenizer.load(path / names.TOKENIZER), Split(tokens, offsets),
                    path / names.VAL_ROWS if validation else None)


def training_files(data_dir: str | Path | None, profile: str | Profile) -> list[Path]:
    """The prepared files an experiment may see (everything but the validation split), for the jail."""
    path = (Path(data_dir).expanduser() if data_dir else default_data_dir()) / get_profile(profile).name
    names_seen = [names.MANIFEST, names.TOKENIZER, names.TRAIN_TOKENS, names.TRAIN_OFFSETS]
    return [path / name for name in names_seen]


def input_paths(data_dir: str | Path | None, profile: str | Profile) -> list[Path]:
    """Where the text of the prepared data was read (the manifest's record), and the embedded corpus's folder
    inside the installed packages: what no jail may show, since the validation text is in it."""
    from autoresearch_kernel.harness.sources import embedded_corpus_paths

    path = (Path(data_dir).expanduser() if data_dir else default_data_dir()) / get_profile(profile).name
    try:
        paths = [Path(p) for p in Manifest.load(path / names.MANIFEST, "").input_paths]
    except DataError:  # no data yet: nothing of it to hide
        paths = []
    return paths + embedded_corpus_paths()


def unkeyed_warning(manifest: Manifest, data_dir: str | Path | None) -> str | None:
    """A line for data prepared before the split key: it still works, but its split can be rebuilt."""
    if manifest.keyed:
        return None
    fix = prepare_command(manifest.profile_name, data_dir, _source_option(manifest.source))
    return (f"the data for profile {manifest.profile_name} was prepared before secret split keys: its validation "
            "split is a public hash of the text and its rows a public packing, which an experiment holding the "
            f"text can rebuild. Prepare it again for a secret split ({fix}); the figures then change, so start "
            "a new tag")


def _source_option(source: str) -> str:
    return source if source in ("embedded", "climbmix") else f'"{source}"'
