"""The idea memory in a few lines, for a proposer's prompt or `autoresearch status`.

Per knob (a constant moved alone), the values tried and what came of each; per topic of code idea (by the words
of its description, else the cell it changed), what was kept and what failed, most recent first. The memory
(memory.py) hands its entries in; this module only writes them down, within a character limit.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import TYPE_CHECKING

from autoresearch_kernel.text import one_line
from autoresearch_kernel.workspace.constants import literal_value

if TYPE_CHECKING:
    from autoresearch_kernel.journal.memory import Entry

DIGEST_CHARS = 2500  # what a prompt gets of the memory
# Topics of code ideas, by the words of their description (first match wins); else the changed cell.
TOPICS = (
    ("optimiser", ("optim", "adam", "muon", "sgd", "momentum", "beta", "weight decay", "clip")),
    ("learning rate", ("lr", "learning rate", "warmup", "warmdown", "schedule", "cosine", "anneal")),
    ("attention", ("attention", "attn", "head", "rotary", "rope", "causal", "qk", "kv")),
    ("normalisation", ("norm", "layernorm", "rmsnorm")),
    ("activation", ("relu", "gelu", "swiglu", "silu", "activation", "glu")),
    ("embedding", ("embed", "tie", "tied", "position", "vocab", "unembed", "logit")),
    ("depth and width", ("depth", "layer", "width", "dim", "mlp", "hidden", "wider", "deeper", "block")),
    ("initialisation", ("init",)),
    ("regularisation", ("dropout", "smoothing", "regulari")),
    ("batch and data", ("batch", "seq", "context", "token", "data")),
    ("speed", ("compile", "bf16", "fp16", "precision", "flash", "fused", "faster")),
)
TOPIC_PATTERNS = [(name, re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + ")")) for name, words in TOPICS]


def digest_of(ideas: list[Entry], limit: int = DIGEST_CHARS) -> str:
    """The ideas (memory entries of the kinds that are ideas) in at most `limit` characters; "" for none."""
    if not ideas:
        return ""
    tags = sorted({e.tag for e in ideas})
    lines = [f"{len(ideas)} ideas tried in {len(tags)} run{'s' * (len(tags) > 1)} ({', '.join(tags)}); gain: the "
             "best before it minus its val_bpb (> 0 is better)."]
    knobs: dict[str, list[tuple[str, Entry]]] = defaultdict(list)
    topics: dict[str, list[Entry]] = defaultdict(list)
    for entry in ideas:
        if entry.tuning:
            for name, _, new in entry.constants:
                knobs[name].append((new, entry))
        else:
            topics[_topic(entry)].append(entry)
    if knobs:
        lines.append("Knobs (constants moved alone; value: outcomes):")
        for name, tried in sorted(knobs.items(), key=lambda item: (-len(item[1]), item[0])):
            lines.append(f"- {name}: " + "; ".join(_knob_values(tried)))
    if topics:
        lines.append("Code ideas by topic:")
        for topic, entries in sorted(topics.items(), key=lambda item: (-len(item[1]), item[0])):
            lines.append(f"- {topic}: " + "; ".join(_outcome(e) for e in entries[-4:])
                         + (f" (+{len(entries) - 4} earlier)" if len(entries) > 4 else ""))
    return _bounded(lines, limit)


def _knob_values(tried: list[tuple[str, Entry]]) -> list[str]:
    """Per value tried (in order of value): its outcomes, e.g. `0.05 keep +0.0123, discard -0.0010`."""
    by_value: dict[float, list[Entry]] = defaultdict(list)
    texts: dict[float, str] = {}
    for text, entry in tried:
        value = literal_value(text)
        by_value[value].append(entry)
        texts.setdefault(value, text)
    return [f"{texts[value]} " + ", ".join(f"{e.status}{_gain(e)}" for e in by_value[value][-3:])
            for value in sorted(by_value)]


def _outcome(entry: Entry) -> str:
    return f"{entry.status}{_gain(entry)} \"{one_line(entry.description, 60)}\""


def _gain(entry: Entry) -> str:
    return "" if entry.gain is None or entry.status == "crash" else f" {entry.gain:+.4f}"


def _topic(entry: Entry) -> str:
    text = entry.description.lower()
    for name, pattern in TOPIC_PATTERNS:
        if pattern.search(text):
            return name
    return f"cell {entry.cells[0]}" if entry.cells else "other"


def _bounded(lines: list[str], limit: int) -> str:
    """The lines that fit in `limit` characters, each cut to fit, and a note of how many were left out."""
    kept, used = [], 0
    for index, line in enumerate(lines):
        line = one_line(line, 400)
        if used + len(line) + 1 > limit - 40:
            kept.append(f"({len(lines) - index} more lines not shown)")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(kept)
