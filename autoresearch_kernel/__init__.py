"""autoresearch_kernel: a Jupyter-native workbench where an agent hill-climbs a training notebook.

The fixed harness (data, tokenizer, dataloader, the val_bpb metric) lives in `harness/`; the loop
machinery (runner, workspace, results, gate, proposers, loop, dashboard) in the flat modules beside it.
"""

__version__ = "0.1.0"
