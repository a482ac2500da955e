"""The harness's tokenizer: byte-level BPE trained with rustbpe, used through tiktoken.

The split pattern is GPT-4's with numbers in groups of 1-2 digits (the reference's choice: shorter number
tokens for a small vocabulary). After the learned ranks come 4 special tokens; BOS = <|reserved_0|>.
It is saved as readable JSON (ranks in base64, no pickle). The per-token byte-length table that val_bpb
divides by is the length of each token's own raw bytes (0 for special tokens) — not the reference's
decode-then-re-encode count, which turns a partial UTF-8 sequence into U+FFFD and counts it as 3 bytes.
"""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import rustbpe
import tiktoken

from autoresearch_kernel.errors import DataError
from autoresearch_kernel.harness.files import atomic_write_bytes

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = [f"<|reserved_{i}|>" for i in range(4)]
BOS_TOKEN = SPECIAL_TOKENS[0]
FORMAT = "autoresearch_kernel.bpe.v1"  # tag in the saved JSON, checked on load
ENCODE_THREADS = max(1, min(8, os.cpu_count() or 1))


class Tokenizer:
    """A tiktoken.Encoding over learned BPE ranks plus the special tokens, and its byte-length table."""

    def __init__(self, ranks: list[bytes], pattern: str = SPLIT_PATTERN, vocab_size: int | None = None):
        mergeable = {token: rank for rank, token in enumerate(ranks)}
        specials = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
        self.ranks = list(ranks)
        self.pattern = pattern
        # The model's vocabulary may be larger than what BPE learned (a tiny corpus runs out of merges);
        # ids past the specials simply never occur.
        self.vocab_size = vocab_size or len(ranks) + len(SPECIAL_TOKENS)
        if self.vocab_size < len(ranks) + len(SPECIAL_TOKENS):
            raise DataError(f"tokenizer has {len(ranks) + 4} tokens, more than vocab_size {self.vocab_size}")
        self.encoding = tiktoken.Encoding(
            name="autoresearch_bpe", pat_str=pattern, mergeable_ranks=mergeable, special_tokens=specials
        )
        self.special_ids = specials
        self.bos_id = specials[BOS_TOKEN]
        # Bytes each token stands for, from its own raw bytes; specials (and unused ids) count 0.
        self.token_bytes = np.zeros(self.vocab_size, dtype=np.int32)
        self.token_bytes[: len(ranks)] = [len(token) for token in ranks]

    def encode(self, text: str) -> list[int]:
        """Plain text to ids; special-token strings in the text are treated as ordinary text."""
        return self.encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str], num_threads: int = ENCODE_THREADS) -> list[list[int]]:
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        return self.encoding.decode(list(ids), errors="replace")

    def token_text(self, token_id: int) -> bytes:
        """The raw bytes of one token (b'' for a special token)."""
        if token_id >= len(self.ranks):
            return b""
        return self.ranks[token_id]

    # -- the saved form: readable JSON, no pickle --------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "pattern": self.pattern,
                "vocab_size": self.vocab_size,
                "special_tokens": self.special_ids,
                "ranks": [base64.b64encode(token).decode("ascii") for token in self.ranks],
            },
            indent=0,
        )

    def save(self, path: Path) -> None:
        atomic_write_bytes(Path(path), self.to_json().encode("utf-8"))

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        try:
            saved = json.loads(Path(path).read_text(encoding="utf-8"))
            if saved.get("format") != FORMAT:
                raise ValueError(f"format {saved.get('format')!r}, expected {FORMAT!r}")
            ranks = [base64.b64decode(token) for token in saved["ranks"]]
            tokenizer = cls(ranks, saved["pattern"], saved["vocab_size"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise DataError(f"cannot read tokenizer {path}: {error}; run prepare again") from error
        if tokenizer.special_ids != saved["special_tokens"]:
            raise DataError(f"tokenizer {path} has unexpected special tokens; run prepare again")
        return tokenizer


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, max_chars: int = 10**9, doc_chars: int = 10_000
) -> Tokenizer:
    """Train byte-level BPE on at most `max_chars` characters (`doc_chars` per document)."""
    learned = vocab_size - len(SPECIAL_TOKENS)
    if learned < 256:
        raise DataError(f"vocab_size {vocab_size} is too small: it needs 256 byte tokens + 4 specials")
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(_capped(texts, max_chars, doc_chars), learned, pattern=SPLIT_PATTERN)
    ranks = [token for token, _ in sorted(trainer.get_mergeable_ranks(), key=lambda pair: pair[1])]
    return Tokenizer([bytes(token) for token in ranks], trainer.get_pattern(), vocab_size)


def _capped(texts: Iterable[str], max_chars: int, doc_chars: int) -> Iterator[str]:
    remaining = max_chars
    for text in texts:
        if remaining <= 0:
            return
        piece = text[: min(doc_chars, remaining)]
        remaining -= len(piece)
        yield piece
