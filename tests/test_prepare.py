"""prepare() and load_prepared(): layout, manifest, pinned split, verification, crash safety."""
from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from autoresearch_kernel.errors import DataError, SourceError
from autoresearch_kernel.harness import files as files_module
from autoresearch_kernel.harness.data import load_prepared, unkeyed_warning
from autoresearch_kernel.harness.manifest import MANIFEST, SECRET, TRAIN_TOKENS, VAL_ROWS
from autoresearch_kernel.harness.prepare import SplitSecret, default_data_dir, prepare, prepare_command
from autoresearch_kernel.harness.profiles import PROFILES
from autoresearch_kernel.harness.sources import embedded_documents, is_validation, kjv_path


def test_embedded_prepare_writes_a_verified_manifest(prepared_dir):
    prepared = load_prepared(prepared_dir, "cpu")
    manifest = prepared.manifest
    profile = PROFILES["cpu"]
    assert manifest.source == "embedded"
    assert manifest.vocab_size == profile.vocab_size and manifest.seq_len == profile.seq_len
    assert manifest.eval_tokens == profile.eval_tokens
    assert manifest.train_documents + manifest.val_documents <= 1189  # KJV chapters
    assert manifest.train_documents > 900
    assert set(manifest.files) == {"tokenizer.json", "train_tokens.npy", "train_offsets.npy", "val_rows.npy",
                                   "secret.json"}
    assert manifest.keyed and manifest.input_paths == [str(kjv_path().resolve())]
    rows = prepared._validation_rows()
    assert rows.shape == (profile.eval_tokens // profile.seq_len, profile.seq_len + 1)
    assert (rows[:, 0] == prepared.tokenizer.bos_id).all()
    # every training document starts with BOS, and offsets cover the token array exactly
    tokens, offsets = prepared.train.tokens, prepared.train.offsets
    assert offsets[0] == 0 and offsets[-1] == len(tokens)
    assert (tokens[offsets[:-1]] == prepared.tokenizer.bos_id).all()
    assert "embedded" in manifest.summary_line() and "cpu" in manifest.summary_line()


def test_train_and_validation_are_disjoint_and_pinned(prepared_dir, tmp_path):
    prepared = load_prepared(prepared_dir, "cpu")
    decode = prepared.tokenizer.decode
    train_docs = {decode(prepared.train.tokens[a + 1 : b]) for a, b in zip(prepared.train.offsets[:-1], prepared.train.offsets[1:])}
    val_text = decode(prepared._validation_rows().reshape(-1))  # BOS decodes as <|reserved_0|>
    titles = [doc.split("\n", 1)[0] for doc in train_docs]
    assert len(titles) == prepared.manifest.train_documents
    assert all(f"<|reserved_0|>{title}\n\n" not in val_text for title in titles)  # no training chapter in validation
    assert val_text.count("<|reserved_0|>Genesis ") + val_text.count("<|reserved_0|>Exodus ") > 0
    secret = SplitSecret.load(prepared_dir / "cpu" / SECRET)
    again = prepare("embedded", "cpu", data_dir=tmp_path, progress=False, secret=secret)
    assert again.files == prepared.manifest.files  # same input and secret -> byte-identical files


def test_each_preparation_draws_a_secret_split_that_the_public_hash_does_not_give(prepared_dir, tmp_path):
    first = load_prepared(prepared_dir, "cpu")
    prepare("embedded", "cpu", data_dir=tmp_path, progress=False)
    second = load_prepared(tmp_path, "cpu")
    assert not np.array_equal(first._validation_rows(), second._validation_rows())
    public = [is_validation(doc) for doc in embedded_documents()]  # the unkeyed split of data prepared before
    keyed = SplitSecret.load(prepared_dir / "cpu" / SECRET).key
    assert public != [is_validation(doc, key=keyed) for doc in embedded_documents()]
    assert unkeyed_warning(first.manifest, prepared_dir) is None


def test_data_prepared_before_split_keys_still_loads_and_says_to_prepare_again(prepared_dir, tmp_path):
    import json
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(prepared_dir, copy)
    (copy / "cpu" / SECRET).unlink()
    manifest = json.loads((copy / "cpu" / MANIFEST).read_text())
    manifest["files"].pop(SECRET)
    del manifest["input_paths"]  # an older manifest has no such field
    (copy / "cpu" / MANIFEST).write_text(json.dumps(manifest))
    old = load_prepared(copy, "cpu")
    assert not old.manifest.keyed and old._validation_rows().shape[0] == 256
    warning = unkeyed_warning(old.manifest, copy)
    assert "prepared before secret split keys" in warning and f"prepare --profile cpu --data-dir {copy}" in warning


def test_load_prepared_explains_missing_data(tmp_path):
    with pytest.raises(DataError, match=r"no prepared data.*run: python -m autoresearch_kernel prepare --profile cpu --data-dir"):
        load_prepared(tmp_path, "cpu")


def test_load_prepared_rejects_tampered_partial_and_stale_data(prepared_dir, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(prepared_dir, copy)
    folder = copy / "cpu"
    rows = np.load(folder / VAL_ROWS)
    rows[0, 1] += 1
    np.save(folder / VAL_ROWS, rows)
    with pytest.raises(DataError, match="changed since prepare"):
        load_prepared(copy, "cpu")
    (folder / VAL_ROWS).unlink()
    with pytest.raises(DataError, match="missing"):
        load_prepared(copy, "cpu")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["profile"]["eval_batch_size"] += 1  # how an experiment runs, not what was prepared
    manifest["files"].pop(VAL_ROWS)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert load_prepared(copy, "cpu").manifest.profile["eval_batch_size"] == PROFILES["cpu"].eval_batch_size + 1
    manifest["profile"]["seq_len"] = 128
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"other cpu settings \(seq_len\)"):
        load_prepared(copy, "cpu")


def test_gpu_profile_on_the_small_corpus_fails_cleanly(tmp_path):
    with pytest.raises(SourceError, match="evaluates 20,971,520"):
        prepare("embedded", "gpu", data_dir=tmp_path, progress=False)
    assert not (tmp_path / "gpu").exists()  # nothing a later load would trust


def test_unknown_source_and_profile(tmp_path):
    with pytest.raises(SourceError, match="unknown source 'nope'"):
        prepare("nope", "cpu", data_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match="unknown profile 'tpu'"):
        prepare("embedded", "tpu", data_dir=tmp_path, progress=False)


def test_disk_full_keeps_the_previous_data_and_trusts_nothing_new(prepared_dir, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(prepared_dir, copy)
    before = load_prepared(copy, "cpu").manifest.files
    real_open = open

    def full_disk_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(files_module.TMP_SUFFIX) and TRAIN_TOKENS in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk_open)
    with pytest.raises(DataError, match="disk full while writing .*train_tokens.npy"):
        prepare("embedded", "cpu", data_dir=copy, progress=False)
    monkeypatch.undo()
    assert not list((copy / "cpu.staging").glob("*.tmp"))
    assert load_prepared(copy, "cpu").manifest.files == before


def test_default_data_dir_and_command(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTORESEARCH_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert prepare_command("cpu", tmp_path) == "python -m autoresearch_kernel prepare --profile cpu"
    assert prepare_command("gpu", "/x", "climbmix") == "python -m autoresearch_kernel prepare --source climbmix --profile gpu --data-dir /x"


def test_cli_prepare_prints_one_summary_line_or_one_error_line(tmp_path, capsys):
    from autoresearch_kernel.cli import main

    assert main(["prepare", "--data-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("prepared embedded for profile cpu:") and out.count("\n") == 1
    assert "training the tokenizer" in err
    assert main(["prepare", "--source", "nope", "--data-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: unknown source 'nope'") and err.count("\n") == 1
    load_prepared(tmp_path, "cpu")  # the failed run left the earlier data intact


def test_npy_appender_writes_what_np_save_writes_and_nothing_on_failure(tmp_path):
    from autoresearch_kernel.harness.files import NpyAppender

    for dtype, parts in [(np.uint16, [np.arange(5), np.arange(3, 70000)]), (np.int64, []), (np.uint32, [[2**31]])]:
        with NpyAppender(tmp_path / "appended.npy", dtype) as appender:
            for part in parts:
                appender.append(np.asarray(part))
        whole = np.concatenate([np.asarray(part, dtype=dtype) for part in parts] or [np.zeros(0, dtype=dtype)])
        np.save(tmp_path / "saved.npy", whole)
        assert (tmp_path / "appended.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes(), dtype
    with pytest.raises(RuntimeError), NpyAppender(tmp_path / "failed.npy", np.uint16) as appender:
        appender.append(np.arange(10))
        raise RuntimeError("the source broke")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["appended.npy", "saved.npy"]   # no file, no .tmp


def test_training_tokens_stream_to_disk_one_batch_at_a_time(prepared_dir, tmp_path):
    # Ten climbmix shards hold over a gigabyte of tokens: memory must not grow with the corpus.
    import tracemalloc

    from autoresearch_kernel.harness.prepare import _encode, _encode_to_files
    from autoresearch_kernel.harness.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(prepared_dir / "cpu" / "tokenizer.json")
    words = "In the beginning God created the heaven and the earth and the earth was without form".split()

    def batches(count=200, docs=16):
        for b in range(count):
            yield [" ".join(words[(b + d + i) % len(words)] for i in range(200)) for d in range(docs)]

    tracemalloc.start()
    try:
        documents, tokens, text_bytes = _encode_to_files(batches(), tokenizer, tmp_path / "tokens.npy",
                                                         tmp_path / "offsets.npy", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    written = np.load(tmp_path / "tokens.npy", mmap_mode="r")
    assert documents == 200 * 16 and tokens == len(written) and text_bytes > tokens
    assert peak < written.nbytes / 4, (peak, written.nbytes)       # one batch is 1/200 of the whole
    in_memory = _encode(batches(), tokenizer, "", progress=False, stop_after=10**12)
    assert np.array_equal(written, in_memory.tokens)
    assert np.array_equal(np.load(tmp_path / "offsets.npy"), in_memory.offsets)
