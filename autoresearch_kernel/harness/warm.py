"""What a kernel started ahead of its experiment runs first (execution/warm.py): the candidate-free set-up.

While one experiment runs, the next one's kernel is started and runs `warm_up`: torch's and the harness's
imports, the training split verified and loaded exactly as `harness.start` will ask for it (data.preload),
the first-time set-up of torch.export (its lazy imports, about 1.5 CPU seconds, paid at every kernel's first
export otherwise) and matplotlib's, which the loss curve uses. Nothing here draws from a random generator
the run depends on (`harness.start` seeds them all afterwards) or touches a GPU (the running experiment
has it), so the candidate's cells compute exactly what they compute in a kernel started cold.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def warm_up(profile: str, data_dir: str) -> None:
    """Everything an experiment of `profile` would do before its own code runs, on data in `data_dir`."""
    import torch

    from autoresearch_kernel import harness  # noqa: F401 - the set-up cell's import
    from autoresearch_kernel.harness.data import preload

    preload(data_dir or None, profile)
    _first_export(torch)
    import matplotlib.pyplot  # noqa: F401 - the loss curve's, a second's import


def _first_export(torch) -> None:
    """Export a two-layer model on the CPU once, so the experiment's own export finds torch.export set up.
    Its weights are made without the global generator, which the experiment's seed governs."""
    from autoresearch_kernel.harness.finish import export_program

    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(8, 4), torch.nn.Linear(4, 8))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    folder = tempfile.mkdtemp(prefix="warm-up-")
    path = Path(folder, "program.pt2")
    try:
        export_program(model, path, 4, torch.device("cpu"))
    finally:
        path.unlink(missing_ok=True)
        os.rmdir(folder)


def serves(notebook) -> bool:
    """Whether the warm-up serves `notebook`: its harness cells, the same in every candidate (the contract),
    use the harness. A notebook whose cells never import it (a scheduling benchmark's, say) gets a bare kernel:
    torch's import and the data's load would be work it never asked for."""
    return any("harness" in cell.get("metadata", {}).get("tags", ()) and "autoresearch_kernel" in cell.source
               for cell in notebook.cells)


def warm_up_code(profile: str, data_dir: str) -> str:
    """The line the kernel host runs in a new kernel: leaves no name in the notebook's namespace."""
    return (f"__import__('autoresearch_kernel.harness.warm', fromlist=['warm_up'])"
            f".warm_up({profile!r}, {str(data_dir)!r})")
