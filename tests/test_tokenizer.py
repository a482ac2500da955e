"""The BPE tokenizer: training, round trips, special tokens, the saved JSON, and the byte-length table."""
from __future__ import annotations

import json

import pytest

from autoresearch_kernel.errors import DataError
from autoresearch_kernel.harness.tokenizer import BOS_TOKEN, SPECIAL_TOKENS, Tokenizer, train_tokenizer

TEXTS = [
    "In the beginning God created the heaven and the earth. 12345 apples, 6789 pears.",
    "Naïve café owners serve crème brûlée; the façade is déjà vu. Ünïcödé!",
    "   indented\n\nparagraphs\r\nand tabs\there",
] * 50


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer(TEXTS, vocab_size=400)


def test_round_trip_including_text_it_never_saw(tokenizer):
    for text in TEXTS[:3] + ["日本語のテキスト 🚀 and \x00 control", "<|reserved_0|> is plain text here"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_tokens_follow_the_learned_ranks(tokenizer):
    assert list(tokenizer.special_ids) == SPECIAL_TOKENS
    assert tokenizer.special_ids[BOS_TOKEN] == tokenizer.bos_id == len(tokenizer.ranks)
    assert tokenizer.encode("<|reserved_0|>") != [tokenizer.bos_id]  # never produced from text
    assert tokenizer.decode([tokenizer.bos_id]) == BOS_TOKEN


def test_learned_merges_and_digit_groups(tokenizer):
    ids = tokenizer.encode("the heaven and the earth")
    assert len(ids) < len("the heaven and the earth") / 2  # merges were learned
    pieces = [tokenizer.token_text(i) for i in tokenizer.encode("1234567")]
    assert all(len(piece) <= 2 for piece in pieces)  # numbers split in groups of at most 2 digits


def test_byte_lengths_come_from_each_tokens_own_bytes(tokenizer):
    table = tokenizer.token_bytes
    assert len(table) == tokenizer.vocab_size == 400
    assert all(table[i] == len(rank) for i, rank in enumerate(tokenizer.ranks))
    assert all(table[i] == 0 for i in tokenizer.special_ids.values())
    # a CJK character is 3 bytes the tokenizer never merged: three 1-byte tokens, each counted 1 byte
    # (decoding one alone gives U+FFFD, which the reference's table miscounts as 3 bytes each)
    ids = tokenizer.encode("語")
    assert len(ids) == 3 and [int(table[i]) for i in ids] == [1, 1, 1]
    text = TEXTS[1] + " 日本語 🚀"
    assert sum(int(table[i]) for i in tokenizer.encode(text)) == len(text.encode("utf-8"))


def test_saved_json_round_trip(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    saved = json.loads(path.read_text())  # plain JSON, nothing executable
    assert saved["pattern"] == tokenizer.pattern and len(saved["ranks"]) == len(tokenizer.ranks)
    loaded = Tokenizer.load(path)
    assert loaded.ranks == tokenizer.ranks and loaded.special_ids == tokenizer.special_ids
    assert loaded.encode(TEXTS[1]) == tokenizer.encode(TEXTS[1])
    assert (loaded.token_bytes == tokenizer.token_bytes).all()


def test_corrupt_or_foreign_tokenizer_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="cannot read tokenizer .*run prepare again"):
        Tokenizer.load(path)
    path.write_text(json.dumps({"format": "pickle-ish", "ranks": []}))
    with pytest.raises(DataError, match="format"):
        Tokenizer.load(path)


def test_too_small_vocab_is_refused():
    with pytest.raises(DataError, match="too small"):
        train_tokenizer(TEXTS, vocab_size=200)


def test_character_caps_limit_the_training_text():
    capped = train_tokenizer(["abcdefgh" * 1000], vocab_size=300, max_chars=10**6, doc_chars=4)
    assert all(len(rank) <= 4 for rank in capped.ranks)  # it only ever saw "abcd"
