"""The prepared-data manifest: what was prepared, with which settings, and the hash of every file.

`prepare` writes it last (atomically), so its presence means the folder is complete; `load_prepared`
checks it before any experiment trusts the data, so every experiment is measured on the same yardstick.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoresearch_kernel.errors import DataError
from autoresearch_kernel.harness.files import atomic_write_bytes

FORMAT = "autoresearch_kernel.prepared.v1"  # bump when the layout or the meaning of a field changes
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
TRAIN_TOKENS = "train_tokens.npy"
TRAIN_OFFSETS = "train_offsets.npy"
VAL_ROWS = "val_rows.npy"  # the fixed evaluation rows, [eval_tokens / seq_len, seq_len + 1]
SECRET = "secret.json"  # the split key and the evaluation rows' packing seed, drawn at prepare
VALIDATION_SIDE = (VAL_ROWS, SECRET)  # never in an experiment's jail (only the scorer reads them)


@dataclass
class Manifest:
    source: str  # embedded | climbmix | a folder's absolute path
    profile: dict  # the Profile's fields at prepare time
    vocab_size: int
    seq_len: int
    eval_tokens: int
    tokenizer_tokens: int  # learned tokens + specials (<= vocab_size on a tiny corpus)
    train_documents: int
    train_tokens: int
    val_documents: int  # validation documents read to build the evaluation rows
    val_tokens: int
    train_bytes: int  # UTF-8 bytes of the training text
    eval_rows: int
    input_files: dict[str, str]  # source file -> sha256
    files: dict[str, str]  # prepared file -> sha256
    prepare_seconds: float = 0.0
    created: str = ""
    format: str = FORMAT
    extra: dict = field(default_factory=dict)
    input_paths: list[str] = field(default_factory=list)  # where prepare read its inputs: jails mask them

    @property
    def keyed(self) -> bool:
        """Prepared with a secret split key and packing seed (data prepared before them has neither)."""
        return SECRET in self.files

    @property
    def profile_name(self) -> str:
        return self.profile["name"]

    def summary_line(self) -> str:
        return (
            f"prepared {self.source} for profile {self.profile_name}: "
            f"{self.train_documents:,} train docs / {self.train_tokens:,} tokens, "
            f"{self.val_documents:,} val docs -> {self.eval_tokens:,} eval tokens, "
            f"vocab {self.vocab_size:,}, seq {self.seq_len}, "
            f"{self.train_bytes / max(self.train_tokens - self.train_documents, 1):.2f} bytes/token, "
            f"{self.prepare_seconds:.1f} s"
        )

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, json.dumps(asdict(self), indent=2, sort_keys=True).encode("utf-8"))

    @classmethod
    def load(cls, path: Path, fix: str) -> Manifest:
        """Read a manifest; DataError ending in `fix` (the command that repairs it) when unreadable."""
        try:
            saved = json.loads(Path(path).read_text(encoding="utf-8"))
            if saved.get("format") != FORMAT:
                raise DataError(f"{path} is from another version ({saved.get('format')!r}); prepare again: {fix}")
            return cls(**saved)
        except DataError:
            raise
        except (OSError, ValueError, TypeError) as error:
            raise DataError(f"{path} is unreadable ({error}); prepare again: {fix}") from None
