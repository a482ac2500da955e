"""Data sources: the embedded Bible, a user's folder, climbmix from a local HTTP server; bad input."""
from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from autoresearch_kernel.errors import SourceError
from autoresearch_kernel.harness.data import load_prepared
from autoresearch_kernel.harness.prepare import prepare
from autoresearch_kernel.harness.profiles import Profile
from autoresearch_kernel.harness.sources import (
    VAL_FRACTION,
    download_shards,
    embedded_documents,
    is_validation,
    open_source,
    shard_name,
)

# A small profile so a climbmix prepare from a few hundred KB of parquet takes a fraction of a second.
TINY = Profile("tiny", seq_len=64, vocab_size=512, eval_tokens=64 * 8, budget_seconds=1.0, eval_batch_size=4,
               tokenizer_chars=10**6, tokenizer_doc_chars=10_000)


def all_docs(batches) -> list[str]:
    return [doc for batch in batches() for doc in batch]


def test_embedded_corpus_is_the_kjv_by_chapter(tmp_path):
    docs = list(embedded_documents())
    assert len(docs) == 1189
    assert docs[0].startswith("Genesis 1\n\nIn the beginning God created the heaven and the earth.\n")
    assert sum(len(d) for d in docs) > 4_000_000
    corpus = open_source("embedded", tmp_path)
    train, val = all_docs(corpus.train_batches), all_docs(corpus.val_batches)
    assert len(train) + len(val) == 1189 and not set(train) & set(val)
    assert abs(len(val) / 1189 - VAL_FRACTION) < 0.03


def test_hash_split_is_pinned_by_content():
    assert is_validation("some document") == is_validation("some document")
    flags = [is_validation(f"document {i}") for i in range(10_000)]
    assert abs(sum(flags) / len(flags) - VAL_FRACTION) < 0.02


def write_parquet(path: Path, texts: list[str]) -> None:
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), path)


def test_folder_of_txt_jsonl_and_parquet(tmp_path):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    paragraphs = [f"Paragraph {i}: " + "word " * 300 for i in range(40)]
    (folder / "book.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    (folder / "sub" / "notes.jsonl").write_text('{"text": "first note"}\n\n{"text": "second note"}\n', encoding="utf-8")
    write_parquet(folder / "sub" / "table.parquet", ["row one", "row two", ""])
    (folder / "ignored.csv").write_text("not read")
    corpus = open_source(str(folder), tmp_path)
    docs = all_docs(corpus.train_batches) + all_docs(corpus.val_batches)
    assert corpus.source == str(folder.resolve())
    assert set(corpus.files) == {"book.txt", "sub/notes.jsonl", "sub/table.parquet"}
    assert {"first note", "second note", "row one", "row two"} <= set(docs)
    book = [d for d in docs if d.startswith("Paragraph")]
    assert len(book) > 4 and all(len(d) < 12_000 for d in book)  # one big file still makes many documents


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda f: None, "holds no .txt, .jsonl or .parquet files"),
        (lambda f: (f / "a.txt").write_text("   \n\n  "), "no text in them"),
        (lambda f: (f / "bad.txt").write_bytes(b"fine text \xff\xfe more"), r"bad\.txt is not UTF-8 text \(bad byte at offset 10\)"),
        (lambda f: (f / "bad.parquet").write_bytes(b"PAR1 this is not parquet"), r"bad\.parquet is not a readable parquet file"),
        (lambda f: (f / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "x"}\n'), r"bad\.jsonl:2 is not a JSON object"),
        (lambda f: write_parquet(f / "x.parquet", []) or pq.write_table(pa.table({"body": ["a"]}), f / "y.parquet"), "no 'text' column"),
    ],
)
def test_bad_folders_give_one_clear_error_and_no_prepared_data(tmp_path, make, message):
    folder = tmp_path / "in"
    folder.mkdir()
    make(folder)
    with pytest.raises(SourceError, match=message):
        prepare(str(folder), TINY, data_dir=tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "tiny").exists()


def test_unknown_source_names_the_choices(tmp_path):
    with pytest.raises(SourceError, match="use 'embedded', 'climbmix' or the path of a folder"):
        open_source("fineweb", tmp_path)


# -- climbmix against a local server -------------------------------------------------------------
class ShardServer:
    """http.server on 127.0.0.1 serving files from a folder; can cut the first N responses short."""

    def __init__(self, root: Path):
        self.root, self.requests, self.truncate_first = root, [], 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                path = server.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.truncate_first > 0:
                    server.truncate_first -= 1
                    body = body[: len(body) // 2]  # the connection drops mid-transfer
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/datasets/climbmix/resolve/main"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def shard_server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    docs = list(embedded_documents())
    write_parquet(root / shard_name(0), docs[0:300])
    write_parquet(root / shard_name(1), docs[300:600])
    write_parquet(root / shard_name(6542), docs[1000:1189])
    server = ShardServer(root)
    yield server
    server.close()


def test_climbmix_downloads_prepares_and_resumes(shard_server, tmp_path):
    data = tmp_path / "data"
    manifest = prepare("climbmix", TINY, data_dir=data, num_shards=2, base_url=shard_server.url, progress=False)
    assert sorted(shard_server.requests) == [shard_name(0), shard_name(1), shard_name(6542)]
    assert manifest.source == "climbmix" and manifest.train_documents == 600
    assert set(manifest.input_files) == {shard_name(0), shard_name(1), shard_name(6542)}
    prepared = load_prepared(data, TINY)
    val_text = prepared.tokenizer.decode(prepared._validation_rows().reshape(-1))
    served_titles = set(re.findall(r"<\|reserved_0\|>([1-3]?[A-Za-z ]+ \d+)\n\n", val_text))
    val_titles = {doc.split("\n", 1)[0] for doc in list(embedded_documents())[1000:1189]}
    assert served_titles and served_titles <= val_titles  # validation comes from the pinned last shard only
    # a second prepare fetches nothing; one more training shard fetches just that one
    shard_server.requests.clear()
    prepare("climbmix", TINY, data_dir=data, num_shards=2, base_url=shard_server.url, progress=False)
    assert shard_server.requests == []
    write_parquet(shard_server.root / shard_name(2), list(embedded_documents())[600:700])
    again = prepare("climbmix", TINY, data_dir=data, num_shards=3, base_url=shard_server.url, progress=False)
    assert shard_server.requests == [shard_name(2)] and again.train_documents == 700


def test_interrupted_download_is_retried_and_never_left_half_written(shard_server, tmp_path):
    shard_server.truncate_first = 1
    dest = tmp_path / "shards"
    download_shards([shard_name(0)], dest, shard_server.url, retries=3, backoff_s=0.0)
    assert shard_server.requests == [shard_name(0)] * 2
    assert pq.read_table(dest / shard_name(0)).num_rows == 300
    shard_server.truncate_first = 10
    with pytest.raises(SourceError, match=r"shard_00001\.parquet failed \(OSError: got \d+ of \d+ bytes\) after 2 tries"):
        download_shards([shard_name(1)], dest, shard_server.url, retries=2, backoff_s=0.0)
    assert sorted(p.name for p in dest.iterdir()) == [shard_name(0)]  # no partial file, no temp file


def test_missing_shard_and_corrupt_shard(shard_server, tmp_path):
    dest = tmp_path / "shards"
    with pytest.raises(SourceError, match=r"shard_00007\.parquet failed \(HTTP 404\) after 1 tries"):
        download_shards([shard_name(7)], dest, shard_server.url, retries=5, backoff_s=0.0)
    (shard_server.root / shard_name(2)).write_bytes(b"<html>rate limited</html>")
    with pytest.raises(SourceError, match=r"shard_00002\.parquet failed \(ArrowInvalid"):
        download_shards([shard_name(2)], dest, shard_server.url, retries=2, backoff_s=0.0)
    assert list(dest.iterdir()) == []
