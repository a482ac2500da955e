"""The corpus of replies as models really write them (tests/replies/), for tests and bench/bench_replies.py.

Each reply in tests/replies/ is stored byte for byte as a model could send it for
notebooks/train_template.ipynb (CRLF included); tests/replies/expected.json says, per file, the description
it must yield, lines the edited notebook must contain (`contains`) or lose (`absent`), and optionally the
number of cells it must have (`cells`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
REPLIES = ROOT / "tests" / "replies"
TEMPLATE = ROOT / "notebooks" / "train_template.ipynb"


@dataclass(frozen=True)
class CorpusReply:
    name: str
    text: str
    description: str
    contains: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    cells: int | None = None


def load_corpus() -> list[CorpusReply]:
    """Every reply of the corpus, in file order; a file missing from expected.json (or the reverse) fails."""
    expected = json.loads((REPLIES / "expected.json").read_text())
    files = sorted(path.name for path in REPLIES.glob("*.txt"))
    assert files == sorted(expected), f"tests/replies and expected.json disagree: {set(files) ^ set(expected)}"
    return [CorpusReply(name, (REPLIES / name).read_bytes().decode("utf-8"), expected[name]["description"],
                        tuple(expected[name].get("contains", ())), tuple(expected[name].get("absent", ())),
                        expected[name].get("cells"))
            for name in files]


def template() -> nbformat.NotebookNode:
    return nbformat.read(TEMPLATE, as_version=4)
