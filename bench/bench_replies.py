"""How many replies, written as models really write them, apply on the first try; and how long that takes.

The corpus is tests/replies/ (see tests/reply_corpus.py): each reply is applied to the shipped
notebooks/train_template.ipynb with `apply_reply`, exactly as the llm proposer does before it would re-ask.
A reply counts as applied when it yields the expected description and the expected lines. It prints each
failure with its message, the first-try apply rate (the goal is 100%), and per reply the median time to parse
(`parse_reply`) and to apply (`apply_reply`, parsing included), plus the slowest reply.

    python bench/bench_replies.py [--repeat 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))     # the corpus lives with the tests

from reply_corpus import load_corpus, template  # noqa: E402

from autoresearch_kernel.errors import ProposalError  # noqa: E402
from autoresearch_kernel.proposers.edits import apply_reply, parse_reply  # noqa: E402


def applies(notebook, reply) -> str | None:
    """None when the reply applies as expected, else what went wrong."""
    try:
        description, edited = apply_reply(notebook, reply.text)
    except ProposalError as error:
        return str(error)
    source = "\n".join(cell.source for cell in edited.cells)
    missing = [line for line in reply.contains if line not in source]
    if description != reply.description or missing:
        return f"applied, but wrongly: description {description!r}, missing {missing}"
    return None


def median_seconds(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per reply (the median is kept)")
    args = parser.parse_args()
    notebook, corpus = template(), load_corpus()
    failures = [(reply.name, problem) for reply in corpus if (problem := applies(notebook, reply))]
    for name, problem in failures:
        print(f"FAILS {name}: {problem}")
    applied = len(corpus) - len(failures)
    print(f"first-try apply rate: {applied}/{len(corpus)} = {applied / len(corpus):.0%}")
    parse = {r.name: median_seconds(lambda r=r: parse_reply(r.text), args.repeat) for r in corpus}
    apply = {r.name: median_seconds(lambda r=r: apply_reply(notebook, r.text), args.repeat) for r in corpus}
    slowest = max(apply, key=apply.get)
    print(f"parse_reply: median {statistics.median(parse.values()) * 1e3:.2f} ms per reply, "
          f"max {max(parse.values()) * 1e3:.2f} ms")
    print(f"apply_reply (parse, match, rebuild the notebook): median {statistics.median(apply.values()) * 1e3:.1f} ms "
          f"per reply, max {apply[slowest] * 1e3:.1f} ms ({slowest})")


if __name__ == "__main__":
    main()
