"""Where a SEARCH part of a reply applies: exactly one place of the notebook's text, found as aider does.

The notebook's percent text is a list of lines. A SEARCH part is matched exactly first (trailing blanks and
surrounding blank lines aside), then ignoring indentation (the REPLACE part is shifted by the same amount),
then also ignoring trailing comments (a comment the model left out stays on its line). A looser tier is
used only when the stricter one found nothing, and every tier must find exactly one place.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Callable

from autoresearch_kernel.workspace.notebook import MARKER

ASSIGNED = re.compile(r"^\s*([\w.]+)\s*=[^=]")  # `NAME = value`: the hyperparameter lines


def stripped_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _comment_start(line: str) -> int | None:
    """Where a trailing `#` comment starts (outside string quotes), or None; a whole-line comment is none."""
    quote = None
    for position, char in enumerate(line):
        if quote:
            if char == quote and line[position - 1] != "\\":
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#":
            return position if line[:position].strip() else None
    return None


def _without_comment(line: str) -> str:
    start = _comment_start(line)
    return line if start is None else line[:start]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


# Ever looser ways to compare a line, tried in order; a looser one is used only when the stricter found nothing.
TIERS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("", str.rstrip),
    (" when indentation is ignored", str.strip),
    (" when indentation and trailing comments are ignored", lambda line: _without_comment(line).strip()),
)


def _find(needle: list[str], haystack: list[str]) -> list[int]:
    n = len(needle)
    return [i for i in range(len(haystack) - n + 1) if haystack[i:i + n] == needle]


def _cell_of(lines: list[str], index: int) -> int:
    return sum(1 for line in lines[:index + 1] if MARKER.match(line)) - 1


def _closest_hint(block, lines: list[str]) -> str:
    """The existing line nearest to the block's first SEARCH line, to help the model quote it exactly."""
    first = next((line.rstrip() for line in block.search.splitlines() if line.strip()), "")
    # A common slip is quoting part of a line: SEARCH lines are whole lines.
    close = [line for line in lines if first.strip() and first.strip() in line]
    if len(close) == 1:
        return f"; SEARCH lines must be whole lines, and `{close[0].strip()}` is the existing line"
    # Whitespace collapsed first: column-aligned comments would otherwise dominate the similarity.
    collapse = " ".join
    scored = [(difflib.SequenceMatcher(a=collapse(first.split()), b=collapse(line.split())).ratio(), line)
              for line in lines if line.strip()]
    score, line = max(scored, default=(0.0, ""))
    return f"; the closest existing line is `{line.strip()}`" if score >= 0.5 else ""


def _reindent(needle: list[str], found: list[str], replacement: list[str]) -> list[str] | None:
    """The REPLACE lines shifted by the indentation the SEARCH lines missed (or had too much of); None when
    the SEARCH part's indentation is off by different amounts on different lines (no safe shift)."""
    shifts = {_indent(f) - _indent(s) for s, f in zip(needle, found) if s.strip()}
    if len(shifts) != 1:
        return None
    shift = shifts.pop()
    if shift >= 0:
        return [" " * shift + line if line.strip() else line for line in replacement]
    return [line[min(-shift, _indent(line)):] for line in replacement]


def _restore_comments(needle: list[str], found: list[str], replacement: list[str]) -> list[str]:
    """A trailing comment the SEARCH part left out stays on an assignment the REPLACE part gives a new value
    (same name, no comment of its own), at its old column, so the diff shows only the new value. Other lines
    are left as the model wrote them: their old comment may no longer be true."""
    if len(replacement) != len(needle):
        return replacement
    restored = []
    for search, old, new in zip(needle, found, replacement):
        start = _comment_start(old)
        target = ASSIGNED.match(search)
        if (start is not None and target and _comment_start(search) is None and _comment_start(new) is None
                and ASSIGNED.match(new) and ASSIGNED.match(new).group(1) == target.group(1)):
            code = new.rstrip()
            new = code.ljust(start) + old[start:] if len(code) < start else f"{code}  {old[start:]}"
        restored.append(new)
    return restored


def apply_block(block, lines: list[str]) -> str | None:
    """Apply one block (an edits.EditBlock: search, replace, label()) to the notebook's text lines in place;
    returns an error message for the model, or None."""
    needle = stripped_lines(block.search)
    if not needle:
        return (f"{block.label()} has an empty SEARCH part: quote the existing lines to replace "
                "(to add a cell, replace the last lines of a cell with those lines, a `# %%` line and the new "
                "cell)")
    for loosened, (how, normal) in enumerate(TIERS):  # noqa: B007 (both are read after the loop)
        hits = _find([normal(line) for line in needle], [normal(line) for line in lines])
        if hits:
            break
    if not hits:
        return (f"{block.label()} matches nothing in the notebook: the SEARCH lines must be copied exactly "
                f"from the notebook{_closest_hint(block, lines)}")
    if len(hits) > 1:
        where = ", ".join(f"cell {_cell_of(lines, start)}" for start in hits)
        return (f"{block.label()} matches {len(hits)} places{how} ({where}): add neighbouring lines to the "
                "SEARCH part so that it matches exactly one place")
    start = hits[0]
    found = lines[start:start + len(needle)]
    replacement = stripped_lines(block.replace) if block.replace.strip() else []
    if loosened:
        shifted = _reindent(needle, found, replacement)
        if shifted is None:
            return (f"{block.label()} matches only{how}, and its indentation differs from the notebook's by "
                    "different amounts on different lines: copy the lines with their exact indentation")
        replacement = _restore_comments(needle, found, shifted)
    lines[start:start + len(needle)] = replacement
    return None
