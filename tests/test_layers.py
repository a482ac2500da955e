"""The package's rooms import downwards only: a module never imports one of a higher layer (at module level or
inside a function), so that each room can be read, and changed, knowing only the rooms below it."""
import ast
import sys
from pathlib import Path

import autoresearch_kernel

PACKAGE = Path(autoresearch_kernel.__file__).resolve().parent
# Lowest first. A room may import its own layer and every layer below.
LAYERS = (
    {"__init__", "errors", "text", "redaction", "distributions", "noise", "gate"},  # plain helpers and the pure decision
    {"harness"},     # the fixed part of a task: what a kernel imports
    {"workspace"},   # the repository, run folders, notebooks
    {"integrity"},   # the jail, its limits, the scorer, the pre-filter
    {"tasks"},       # the workloads and their scorers
    {"execution"},   # running one experiment, locally or on Ray
    {"journal"},     # results.tsv, the rows in memory, state.json, the idea memory
    {"proposers"},   # read the journal's history, propose a notebook
    {"loop"},        # the loop and its rooms
    {"agent", "dashboard", "report", "cli", "__main__"},  # the front ends
)


def room_of(module: str) -> str:
    """`autoresearch_kernel.journal.records` -> journal; the package itself -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(room: str) -> int:
    return next(index for index, rooms in enumerate(LAYERS) if room in rooms)


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            if base == "autoresearch_kernel":  # from autoresearch_kernel import gate, tasks
                names.update(f"{base}.{alias.name}" for alias in node.names)
            elif base.startswith("autoresearch_kernel."):
                names.add(base)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("autoresearch_kernel"))
    return names


def test_every_room_is_in_a_layer():
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert rooms <= set().union(*LAYERS), f"rooms without a layer: {sorted(rooms - set().union(*LAYERS))}"


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        room = room_of(".".join(relative.parts))
        for name in imported(path):
            if layer_of(room_of(name)) > layer_of(room):
                upward.append(f"{'/'.join(relative.parts)}.py -> {name}")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


# The sizes a newcomer can read in one go (design.md): a module of the package over MAX_MODULE_LINES lines, or a
# function over MAX_FUNCTION_LINES from its `def` to its last line, is split along a seam of what it does.
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
ALLOWED_LONG_FUNCTIONS: set[tuple[str, str]] = set()  # (module, function): none; an entry says why it must stay


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), path.read_text(encoding="utf-8")


def test_no_module_is_longer_than_the_limit():
    long = [f"{name}: {len(text.splitlines())} lines" for name, text in _modules()
            if len(text.splitlines()) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern):\n" + "\n".join(long)


def test_no_function_is_longer_than_the_limit():
    long = []
    for name, text in _modules():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES and (name, node.name) not in ALLOWED_LONG_FUNCTIONS:
                    long.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_the_size_limits_see_a_long_function_and_a_long_module(tmp_path, monkeypatch):
    # the two checks above must be able to fail: a planted module with one long function trips both
    planted = tmp_path / "autoresearch_kernel"
    planted.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (planted / "long.py").write_text("def long():\n" + body + "\n" + "\n" * MAX_MODULE_LINES, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", planted)
    for check in (test_no_module_is_longer_than_the_limit, test_no_function_is_longer_than_the_limit):
        try:
            check()
        except AssertionError as error:
            assert "long" in str(error)
        else:
            raise AssertionError(f"{check.__name__} passed on a planted long module")
