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
