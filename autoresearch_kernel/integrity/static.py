"""Static rules for the agent's code cells: the sandbox may train a model, and nothing else.

The sandbox legitimately needs torch, numpy, a few pure standard-library modules and the public `run` API
(`run.device`, `run.profile`, `run.seed`, `run.batches`, `run.tick`, `run.done`, `run.progress`). It needs
no file I/O, no processes, no introspection and no way to change code it did not write. So the rules are
allowlists where a list can be closed (imports, the `run` API, dunder names) and capability rules where it
cannot (no attribute assignment on imported modules, classes or functions; no names that reach the
interpreter's machinery), rather than a blacklist of known attacks.

These rules are the first line only: everything they miss is still measured in a clean process by the
harness (see guard.py and rescore.py). A cell is checked as IPython would run it, so a magic or a shell
escape (`%`, `%%`, `!`) becomes a `get_ipython()` call and is refused like any other.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# Top-level modules the agent's code may import: pure computation, no I/O, no processes, no introspection.
ALLOWED_MODULES = frozenset({
    "torch", "numpy", "math", "cmath", "time", "random", "functools", "itertools", "collections", "dataclasses",
    "typing", "contextlib", "copy", "numbers", "operator", "enum", "abc", "statistics", "heapq", "bisect",
    "string", "fractions", "decimal", "warnings",
})
# Parts of torch that write or load files, start processes, load native code or intercept every torch call.
BLOCKED_TORCH = frozenset({
    "hub", "utils.cpp_extension", "utils.tensorboard", "utils.data", "multiprocessing", "distributed", "onnx",
    "package", "serialization", "library", "overrides", "export", "profiler", "ops", "classes", "storage",
})
# Parts of numpy that load native code or run processes.
BLOCKED_NUMPY = frozenset({"ctypeslib", "f2py", "distutils", "testing"})
# Re-seeding: the harness seeds every run from SEED, and a confirmation re-runs a borderline gain on another
# seed; a sandbox that pins its own seed would turn that check into a replay of the lucky run.
SEEDING = frozenset({"seed", "manual_seed", "manual_seed_all", "set_rng_state", "set_state", "seed_all"})
RUN_API = frozenset({"device", "profile", "seed", "batches", "tick", "done", "progress"})
# Builtins that reach the interpreter (code from strings, namespaces, attribute access by computed name,
# files, the IPython shell) or end the process.
FORBIDDEN_NAMES = frozenset({
    "eval", "exec", "compile", "globals", "locals", "vars", "setattr", "delattr", "open", "input", "breakpoint",
    "exit", "quit", "help", "__import__", "get_ipython", "memoryview", "SystemExit", "TorchFunctionMode",
    "TorchDispatchMode",
})
# Names the harness cells own: the agent's code never needs them.
HARNESS_NAMES = frozenset({"harness", "METRICS_PATH", "DATA_DIR", "EVALUATE", "autoresearch_kernel"})
# Methods that read or write files, on whatever object (numpy, torch, pathlib-like, file objects).
IO_ATTRIBUTES = frozenset({
    "save", "savez", "savez_compressed", "savetxt", "load", "loadtxt", "fromfile", "tofile", "from_file", "memmap",
    "open_memmap", "genfromtxt", "fromregex", "DataSource", "write", "writelines", "write_text", "write_bytes",
    "read_text", "read_bytes", "open", "dump", "system", "popen", "export_chrome_trace", "load_library",
    "from_buffer",
})
# Dunder names ordinary classes use. Everything else with a leading underscore is someone else's internals
# (`__globals__`, `__dict__`, `__class__`, `__subclasses__`, `_validation_rows`, `os._exit`, `torch._C`, ...).
SAFE_DUNDERS = frozenset({
    "__init__", "__call__", "__name__", "__qualname__", "__doc__", "__len__", "__iter__", "__next__",
    "__enter__", "__exit__", "__repr__", "__str__", "__post_init__", "__getitem__", "__contains__", "__eq__",
    "__hash__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__add__", "__mul__", "__neg__",
})
# String constants that name the harness's files (defence in depth: building a name is still refused,
# because no file can be opened).
HARNESS_FILE = re.compile(r"metrics\.json|val_rows|manifest\.json|train_tokens|train_offsets|tokenizer\.json"
                          r"|checkpoint\.pt|\.pt2\b", re.IGNORECASE)
SUMMARY_LINE = re.compile(r"^\s*(val_bpb|training_seconds|total_seconds|peak_vram_mb|mfu_percent|total_tokens_M"
                          r"|num_steps|num_params_M)\s*:", re.MULTILINE)
SEED_MESSAGE = "re-seeding is not allowed: the harness seeds each run from SEED (use run.seed to derive)"
MAGIC = "IPython magics and shell escapes (%, %%, !, ?) are not allowed in the sandbox"


@dataclass(frozen=True)
class Violation:
    cell: int  # index of the cell in the notebook
    line: int
    message: str

    def __str__(self) -> str:
        return f"cell {self.cell}, line {self.line}: {self.message}"


def check_cells(cells: list[tuple[int, str]], context: list[str] = ()) -> list[Violation]:
    """Violations in the agent's cells `(index, source)`; `context` holds the other code cells' sources
    (the harness's), read only to learn which names they bind to modules (`harness`, ...)."""
    trees, found = [], []
    for index, source in cells:
        python = _as_python(source)
        if python is None:
            found.append(Violation(index, 1, "IPython cannot transform this cell"))
            continue
        try:
            trees.append((index, ast.parse(python)))
        except SyntaxError as error:
            found.append(Violation(index, error.lineno or 1, f"does not parse: {error.msg}"))
            continue
        if python != source and "get_ipython()" in python:
            found.append(Violation(index, _first_changed_line(source, python), MAGIC))
    modules = _module_aliases([tree for _, tree in trees] + [_parse_quietly(s) for s in context])
    for index, tree in trees:
        rules = _Rules(index, modules)
        rules.visit(tree)
        found.extend(rules.found)
    return found


def _as_python(source: str) -> str | None:
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # IPython's own parse errors: the kernel would refuse the cell too
        return None


def _parse_quietly(source: str) -> ast.Module:
    try:
        return ast.parse(_as_python(source) or "")
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def _first_changed_line(source: str, python: str) -> int:
    for number, (a, b) in enumerate(zip(source.splitlines(), python.splitlines()), start=1):
        if a != b:
            return number
    return 1


def _root(node: ast.AST) -> ast.AST:
    """The innermost object of `a.b[c].d`: the Name (or Call, ...) everything hangs from."""
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _module_aliases(trees: list[ast.Module]) -> set[str]:
    """Names bound to modules, or to anything reached from one (`F = torch.nn.functional`, `L = nn.Linear`,
    `ce = getattr(F, "cross_entropy")`, `for m in (torch, np)`): patching through them is patching torch."""
    aliases: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                aliases.update((a.asname or a.name).split(".")[0] for a in node.names)

    def rooted(value: ast.AST) -> bool:
        if isinstance(value, (ast.Tuple, ast.List, ast.Set)):
            return any(rooted(e) for e in value.elts)
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "getattr":
            return bool(value.args) and rooted(value.args[0])
        root = _root(value)
        return isinstance(root, ast.Name) and root.id in aliases

    changed = True
    while changed:  # to a fixed point: aliases of aliases
        changed = False
        for tree in trees:
            for node in ast.walk(tree):
                pairs = []
                if isinstance(node, ast.Assign):
                    pairs = [(t, node.value) for t in node.targets]
                elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.NamedExpr)) and node.value is not None:
                    pairs = [(node.target, node.value)]
                elif isinstance(node, (ast.For, ast.comprehension)):
                    pairs = [(node.target, node.iter)]
                elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                    pairs = [(node.optional_vars, node.context_expr)]
                for target, value in pairs:
                    if rooted(value):
                        for name in ast.walk(target):
                            if isinstance(name, ast.Name) and name.id not in aliases:
                                aliases.add(name.id)
                                changed = True
    return aliases


class _Rules(ast.NodeVisitor):
    """One cell's walk; `found` collects the violations."""

    def __init__(self, cell: int, modules: set[str]):
        self.cell, self.modules, self.found = cell, modules, []
        self.run_uses: set[int] = set()  # ids of `run` Name nodes seen as run.<public API>
        self.parameters: list[set[str]] = []  # function parameters in scope (minus a method's self)

    def flag(self, node: ast.AST, message: str) -> None:
        self.found.append(Violation(self.cell, getattr(node, "lineno", 1), message))

    # -- imports ------------------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.check_module(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.flag(node, "relative imports are not allowed")
            return
        self.check_module(node, node.module or "")
        for alias in node.names:
            if alias.name == "*":
                self.flag(node, f"`from {node.module} import *` is not allowed: import the names you use")
            else:
                self.check_module(node, f"{node.module}.{alias.name}", imported_name=alias.name)

    def check_module(self, node: ast.AST, name: str, imported_name: str | None = None) -> None:
        top, _, rest = name.partition(".")
        if top not in ALLOWED_MODULES:
            self.flag(node, f"import of {top!r}: the sandbox may import only {', '.join(sorted(ALLOWED_MODULES))}")
            return
        if any(part.startswith("_") for part in name.split(".")):
            self.flag(node, f"import of the private name {name!r}")
        elif top == "torch" and self.blocked_torch(rest) or top == "numpy" and self.blocked(rest, BLOCKED_NUMPY):
            self.flag(node, f"{name!r}: the file, process, native-code and interception APIs are not for the sandbox")
        elif imported_name is not None:
            self.check_attribute_name(node, imported_name)
            if imported_name in SEEDING:
                self.flag(node, SEED_MESSAGE)

    @staticmethod
    def blocked(path: str, names: frozenset) -> bool:
        return any(path == b or path.startswith(b + ".") for b in names)

    def blocked_torch(self, path: str) -> bool:
        return self.blocked(path, BLOCKED_TORCH)

    # -- names and attributes -----------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name in FORBIDDEN_NAMES:
            self.flag(node, MAGIC if name == "get_ipython" else f"{name!r} is not allowed in the sandbox")
        elif name in HARNESS_NAMES:
            self.flag(node, f"{name!r} belongs to the harness cells; the sandbox uses only the `run` object")
        elif name.startswith("__") and name.endswith("__") and name != "__name__":
            self.flag(node, f"{name!r} reaches the interpreter's internals")
        elif name == "run" and id(node) not in self.run_uses:
            self.flag(node, "`run` may be used only as " + ", ".join(f"run.{a}" for a in sorted(RUN_API)))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id == "run":
            if node.attr in RUN_API and isinstance(node.ctx, ast.Load):
                self.run_uses.add(id(node.value))
        self.check_attribute_name(node, node.attr)
        dotted = _dotted(node)
        root = _root(node)
        if dotted and (dotted.startswith("torch.") and self.blocked_torch(dotted[len("torch."):])
                       or dotted.split(".")[0] in ("np", "numpy") and self.blocked(dotted.split(".", 1)[1], BLOCKED_NUMPY)):
            self.flag(node, f"{dotted!r}: the file, process, native-code and interception APIs are not for the sandbox")
        if node.attr in SEEDING and node.attr != "seed" or node.attr == "seed" and isinstance(root, ast.Name) and root.id in self.modules:
            self.flag(node, SEED_MESSAGE)
        if not isinstance(node.ctx, ast.Load):
            self.check_store(node)
        self.generic_visit(node)

    def check_attribute_name(self, node: ast.AST, attr: str) -> None:
        if attr.startswith("_") and attr not in SAFE_DUNDERS:
            self.flag(node, f"access to the private attribute {attr!r}")
        elif attr in IO_ATTRIBUTES:
            self.flag(node, f"{attr!r}: the sandbox reads and writes no files (the harness saves the model)")

    def check_store(self, node: ast.Attribute) -> None:
        """Attribute assignment only on objects the agent's own code made: never on modules, classes or
        functions reached from an import (monkeypatching), the `run` object, or a function's parameters."""
        root = _root(node)
        dotted = _dotted(node) or ""
        if dotted.startswith("torch.backends.") and isinstance(getattr(self, "_value", None), ast.Constant):
            return  # numeric flags (TF32, cudnn.benchmark): the clean re-score uses its own
        if not isinstance(root, ast.Name):
            self.flag(node, "assignment to an attribute of a computed object (e.g. type(x).f = ...) is not allowed")
        elif root.id in self.modules:
            self.flag(node, f"assignment to {dotted or root.id + '...'}: patching imported modules, classes or "
                            "functions is not allowed")
        elif root.id == "run":
            self.flag(node, "the `run` object is the harness's: do not assign its attributes")
        elif self.parameters and root.id in self.parameters[-1]:
            self.flag(node, f"assignment to an attribute of the parameter {root.id!r}: assign on self or on "
                            "objects this code created")

    def visit_Assign(self, node: ast.Assign) -> None:
        self._value = node.value
        self.generic_visit(node)
        self._value = None

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr"):
            name = node.args[1] if len(node.args) > 1 else None
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                self.check_attribute_name(node, name.value)
                if isinstance(node.args[0], ast.Name) and node.args[0].id == "run" and name.value in RUN_API:
                    self.run_uses.add(id(node.args[0]))
            else:
                self.flag(node, f"{func.id} with a computed attribute name is not allowed")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            if HARNESS_FILE.search(node.value):
                self.flag(node, "names a file of the harness (metrics, checkpoint, prepared data)")
            if SUMMARY_LINE.search(node.value):
                self.flag(node, "prints a line of the harness's summary block; only the harness reports results")
        elif isinstance(node.value, bytes):
            self.flag(node, "bytes literals are not needed in the sandbox")

    # -- definitions --------------------------------------------------------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        name = getattr(node, "name", "")
        if name.startswith("__") and name.endswith("__") and name not in SAFE_DUNDERS:
            self.flag(node, f"defining {name!r} changes how Python or torch treats objects; not allowed")
        args = node.args
        names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
        names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
        if names and names[0] in ("self", "cls"):
            names = names[1:]
        self.parameters.append(set(names))
        self.generic_visit(node)
        self.parameters.pop()

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_Lambda = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for keyword in node.keywords:
            if keyword.arg == "metaclass":
                self.flag(node, "metaclasses are not allowed in the sandbox")
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            if name in ("run", *HARNESS_NAMES):
                self.flag(node, f"rebinding {name!r} is not allowed")
