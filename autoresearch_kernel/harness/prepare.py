"""prepare(): one-time data preparation — documents, tokenizer, token arrays, evaluation rows, manifest.

Layout: <data_dir>/<profile>/ holds tokenizer.json, train_tokens.npy + train_offsets.npy (every training
document as BOS + tokens, concatenated), val_rows.npy (the fixed evaluation rows), secret.json (the key of
the train/validation split and the evaluation rows' packing seed, drawn here; like val_rows.npy it never
enters an experiment's jail) and manifest.json, which also records where every input was read, so that
the jails can mask those paths.
Climbmix shards are cached in <data_dir>/climbmix/ and shared by the profiles.

The training split is tokenized straight into its files, one batch of documents at a time, so memory does
not grow with the corpus (ten climbmix shards hold over a gigabyte of tokens); the validation split is only
as large as the evaluation rows need and is built in memory.

Everything is built in a staging folder <profile>.staging, the manifest is written there last, and the
folder is swapped into place with renames: an interrupted or failed prepare (bad input, disk full,
Ctrl-C) leaves either the previous complete data or nothing that load_prepared would accept.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from autoresearch_kernel.errors import DataError, SourceError
from autoresearch_kernel.harness import manifest as names
from autoresearch_kernel.harness.dataloader import Split, pack_rows
from autoresearch_kernel.harness.files import NpyAppender, atomic_save_npy, atomic_write_bytes, sha256_file
from autoresearch_kernel.harness.manifest import Manifest
from autoresearch_kernel.harness.profiles import get_profile
from autoresearch_kernel.harness.sources import open_source
from autoresearch_kernel.harness.tokenizer import Tokenizer, train_tokenizer

DATA_DIR_ENV = "AUTORESEARCH_DATA_DIR"


def default_data_dir() -> Path:
    """$AUTORESEARCH_DATA_DIR, else ~/.cache/autoresearch_kernel."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".cache" / "autoresearch_kernel").expanduser()


def prepare_command(profile: str, data_dir: Path | str | None = None, source: str = "embedded") -> str:
    """The command line that (re)prepares this data; error messages end with it."""
    command = "python -m autoresearch_kernel prepare"
    if source != "embedded":
        command += f" --source {source}"
    command += f" --profile {profile}"
    if data_dir is not None and Path(data_dir).expanduser().resolve() != default_data_dir().resolve():
        command += f" --data-dir {data_dir}"
    return command


@dataclass(frozen=True)
class SplitSecret:
    """The key of the train/validation hash split and the evaluation rows' packing seed (secret.json)."""

    key: bytes
    pack_seed: int

    @classmethod
    def draw(cls) -> SplitSecret:
        return cls(secrets.token_bytes(32), secrets.randbits(63))

    @classmethod
    def load(cls, path: Path) -> SplitSecret:
        return cls.from_bytes(Path(path).read_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> SplitSecret:
        saved = json.loads(data.decode("utf-8"))
        return cls(bytes.fromhex(saved["split_key"]), int(saved["eval_pack_seed"]))

    def to_bytes(self) -> bytes:
        return json.dumps({"split_key": self.key.hex(), "eval_pack_seed": self.pack_seed}).encode("utf-8")


def prepare(
    source: str = "embedded",
    profile: str = "cpu",
    data_dir: str | Path | None = None,
    num_shards: int = 10,
    base_url: str | None = None,
    progress: bool = True,
    secret: SplitSecret | None = None,
) -> Manifest:
    """Prepare `source` for `profile` under `data_dir`; returns the manifest written last. `secret`: drawn
    afresh by default (another preparation's secret.json gives its very split and rows again)."""
    started = time.perf_counter()
    spec = get_profile(profile)
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    final, staging = root / spec.name, _fresh_staging(root, spec.name)
    # Secret, and kept outside every jail (beside the evaluation rows): which documents are validation, and how
    # their rows are cropped, cannot be rebuilt from the text (the split of data prepared before was public).
    secret = secret or SplitSecret.draw()
    corpus = open_source(source, root, num_shards=num_shards, base_url=base_url, progress=progress,
                         split_key=secret.key)

    tokenizer = _tokenizer_of(corpus, spec, progress)
    train_documents, train_tokens, train_bytes = _encode_to_files(
        corpus.train_batches(), tokenizer, staging / names.TRAIN_TOKENS, staging / names.TRAIN_OFFSETS, progress)
    if train_documents == 0:
        raise SourceError(f"source {source} has no training documents: add more text")

    rows, val = _evaluation_rows(corpus, tokenizer, spec, secret.pack_seed, source, progress)
    num_rows = len(rows)
    tokenizer.save(staging / names.TOKENIZER)
    atomic_save_npy(staging / names.VAL_ROWS, rows)
    atomic_write_bytes(staging / names.SECRET, secret.to_bytes())
    files = [names.TOKENIZER, names.TRAIN_TOKENS, names.TRAIN_OFFSETS, names.VAL_ROWS, names.SECRET]
    manifest = Manifest(
        source=corpus.source,
        profile=spec.to_dict(),
        vocab_size=spec.vocab_size,
        seq_len=spec.seq_len,
        eval_tokens=num_rows * spec.seq_len,
        tokenizer_tokens=len(tokenizer.ranks) + len(tokenizer.special_ids),
        train_documents=train_documents,
        train_tokens=train_tokens,
        val_documents=val.num_documents,
        val_tokens=val.num_tokens,
        train_bytes=train_bytes,
        eval_rows=num_rows,
        input_files=corpus.files,
        input_paths=corpus.paths,
        files={name: sha256_file(staging / name) for name in files},
        prepare_seconds=round(time.perf_counter() - started, 2),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    manifest.save(staging / names.MANIFEST)
    _swap_into_place(staging, final)
    return manifest


def _fresh_staging(root: Path, name: str) -> Path:
    """An empty <root>/<name>.staging (what an interrupted prepare left there is deleted first)."""
    staging = root / f"{name}.staging"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as error:
        raise DataError(f"cannot create {staging}: {error.strerror or error}; choose another --data-dir") from None
    return staging


def _tokenizer_of(corpus, spec, progress: bool) -> Tokenizer:
    """The tokenizer trained on the training split's text (never the validation split's)."""
    def train_texts() -> Iterator[str]:
        for batch in corpus.train_batches():
            yield from batch

    if progress:
        print(f"training the tokenizer (vocab {spec.vocab_size:,}, up to {spec.tokenizer_chars:,} characters)", file=sys.stderr)
    return train_tokenizer(train_texts(), spec.vocab_size, spec.tokenizer_chars, spec.tokenizer_doc_chars)


def _evaluation_rows(corpus, tokenizer: Tokenizer, spec, pack_seed: int, source: str, progress: bool):
    """The evaluation rows and the validation split they come from: validation documents in stored order,
    packed like training rows, until eval_tokens targets are covered. Fixed here, so no caller can change what
    is scored."""
    row_len = spec.seq_len + 1
    num_rows = spec.eval_tokens // spec.seq_len
    val = _encode(corpus.val_batches(), tokenizer, "tokenize val", progress, stop_after=num_rows * row_len)
    rows = pack_rows(val, tokenizer.bos_id, num_rows, row_len, seed=pack_seed)
    if len(rows) < num_rows:
        raise SourceError(
            f"the validation split of {source} has {val.num_tokens:,} tokens but profile {spec.name} evaluates "
            f"{spec.eval_tokens:,}: use a larger source (e.g. --source climbmix) or a smaller profile"
        )
    return rows, val


def _encoded_batches(
    batches: Iterator[list[str]], tokenizer: Tokenizer, desc: str, progress: bool
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Per batch of documents: their tokens (each document BOS + tokens) in one array, each document's
    length, and the text's UTF-8 bytes."""
    from tqdm.auto import tqdm

    dtype = _token_dtype(tokenizer)
    with tqdm(desc=desc, unit="doc", disable=not progress) as bar:
        for batch in batches:
            docs = [np.array([tokenizer.bos_id, *ids], dtype=dtype) for ids in tokenizer.encode_batch(batch)]
            if docs:  # one array per batch: few Python objects for big corpora
                yield (np.concatenate(docs), np.array([len(doc) for doc in docs], dtype=np.int64),
                       sum(len(doc.encode("utf-8", "surrogatepass")) for doc in batch))
            bar.update(len(batch))


def _encode(
    batches: Iterator[list[str]], tokenizer: Tokenizer, desc: str, progress: bool, stop_after: int
) -> Split:
    """Tokenize documents in memory until `stop_after` tokens (the validation split: the rows' worth)."""
    chunks: list[np.ndarray] = []
    lengths: list[np.ndarray] = []
    total_tokens = 0
    for tokens, doc_lengths, _ in _encoded_batches(batches, tokenizer, desc, progress):
        chunks.append(tokens)
        lengths.append(doc_lengths)
        total_tokens += len(tokens)
        if total_tokens >= stop_after:
            break
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=_token_dtype(tokenizer))
    offsets = np.zeros(sum(len(part) for part in lengths) + 1, dtype=np.int64)
    if lengths:
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return Split(tokens, offsets)


def _encode_to_files(
    batches: Iterator[list[str]], tokenizer: Tokenizer, tokens_path: Path, offsets_path: Path, progress: bool
) -> tuple[int, int, int]:
    """Tokenize the training split straight into its two .npy files (the layout of a `Split`), one batch in
    memory at a time; returns the documents, the tokens and the text's UTF-8 bytes."""
    documents = total_tokens = total_bytes = 0
    with NpyAppender(tokens_path, _token_dtype(tokenizer)) as tokens_file, \
            NpyAppender(offsets_path, np.int64) as offsets_file:
        offsets_file.append(np.zeros(1, dtype=np.int64))
        for tokens, lengths, text_bytes in _encoded_batches(batches, tokenizer, "tokenize train", progress):
            tokens_file.append(tokens)
            offsets_file.append(total_tokens + np.cumsum(lengths))
            documents += len(lengths)
            total_tokens += len(tokens)
            total_bytes += text_bytes
    return documents, total_tokens, total_bytes


def _token_dtype(tokenizer: Tokenizer) -> np.dtype:
    return np.dtype(np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32)


def _swap_into_place(staging: Path, final: Path) -> None:
    """Replace `final` by the complete `staging` folder (two renames; the old copy is removed after)."""
    old = final.with_name(f"{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    try:
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
    except OSError as error:
        raise DataError(f"cannot move {staging} to {final}: {error.strerror or error}; run prepare again") from None
    shutil.rmtree(old, ignore_errors=True)
