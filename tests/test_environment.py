"""environment.yml installs the same set as pyproject.toml and the Makefile."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def load():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return environment, project


def split(environment):
    conda = [d for d in environment["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in environment["dependencies"] if isinstance(d, dict))
    return conda, pip


def test_pip_section_is_the_makefile_torch_then_the_package():
    environment, _ = load()
    _, pip = split(environment)
    makefile_torch = re.search(r"^TORCH\s*\?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert pip == [makefile_torch, "-e ."]  # -e . installs exactly pyproject's dependencies


def test_pins_satisfy_pyproject():
    environment, project = load()
    conda, pip = split(environment)
    requirements = {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}
    torch_pin = Requirement(pip[0])
    assert torch_pin.name == "torch"
    pinned = Version(next(iter(torch_pin.specifier)).version)
    assert requirements["torch"].specifier.contains(pinned)
    python = next(d for d in conda if d.startswith("python"))
    assert SpecifierSet(project["requires-python"]).contains(Version(python.split("=")[-1]))


def test_conda_lists_no_package_that_pyproject_lacks():
    environment, project = load()
    conda, _ = split(environment)
    names = {Requirement(r).name.lower() for r in project["dependencies"]}
    extra = {re.split(r"[=<>! ]", d)[0].lower() for d in conda} - {"python", "pip"} - names
    assert not extra, f"environment.yml installs {extra}, which pyproject.toml does not declare"


def imported_modules(folder):
    """The top-level modules that the .py files under `folder` import, less the standard library's."""
    import ast
    import sys

    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names)


@pytest.mark.parametrize("folder, extras", [("autoresearch_kernel", ("search", "ray")), ("tests", ("dev",)),
                                            ("bench", ())])
def test_every_import_is_declared(folder, extras):
    # A module that only arrives as another package's dependency may vanish with the next release of it.
    from importlib.metadata import packages_distributions

    _, project = load()
    declared = project["dependencies"] + [r for extra in extras for r in project["optional-dependencies"][extra]]
    names = {Requirement(r).name.lower().replace("_", "-") for r in declared}
    local = {"autoresearch_kernel"} | {path.stem for folder in ("tests", "bench") for path in (ROOT / folder).glob("*.py")}
    distributions = packages_distributions()
    missing = {module: distributions.get(module) for module in imported_modules(ROOT / folder) - local
               if not {d.lower().replace("_", "-") for d in distributions.get(module, [module])} & names}
    assert not missing, f"{folder}/ imports {missing} (module: distributions), which pyproject.toml does not declare"


def test_the_distribution_name_is_not_one_taken_on_pypi_by_another_project():
    # "autoresearch-kernel" on PyPI is someone else's project: under that name this one cannot be published,
    # and `pip install autoresearch-kernel` would install theirs. The import package keeps its name.
    _, project = load()
    assert project["name"].lower().replace("_", "-") != "autoresearch-kernel"
    assert (ROOT / "autoresearch_kernel" / "__init__.py").exists()
