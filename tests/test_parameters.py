"""One definition of an experiment's parameters: the template's parameters cell, `harness.start` and
`ExperimentParameters` name the same things with the same defaults."""
import ast
import dataclasses
import inspect
from pathlib import Path

import nbformat

from autoresearch_kernel.harness import start
from autoresearch_kernel.harness.parameters import ExperimentParameters

TEMPLATE = Path(__file__).resolve().parents[1] / "notebooks" / "train_template.ipynb"


def parameters_cell() -> dict:
    notebook = nbformat.read(TEMPLATE, as_version=4)
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body}


def test_the_template_cell_is_the_dataclass_in_upper_case():
    assert parameters_cell() == ExperimentParameters().for_papermill()


def test_harness_start_takes_exactly_these_parameters_with_these_defaults():
    signature = inspect.signature(start).parameters
    fields = {f.name: f.default for f in dataclasses.fields(ExperimentParameters)}
    assert list(signature) == list(fields)
    for name, default in fields.items():
        assert signature[name].default == default or (name == "data_dir" and signature[name].default in ("", None))


def test_the_setup_cell_passes_every_parameter_by_name():
    notebook = nbformat.read(TEMPLATE, as_version=4)
    setup = next(c for c in notebook.cells if c.get("id") == "harness-setup").source
    for name in ExperimentParameters().for_papermill():
        assert f"{name.lower()}={name}," in setup
