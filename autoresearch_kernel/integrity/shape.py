"""The sandbox notebook's shape: a candidate keeps the base notebook's contract cells (parameters, harness)
exactly, once each, in order, with the agent's code only where the base had agent code; and its kernel."""
from __future__ import annotations

from autoresearch_kernel.workspace.notebook import is_contract


def contract_cells(notebook) -> list:
    return [c for c in notebook.cells if c.cell_type == "code" and is_contract(c)]


def check_structure(base, candidate) -> str | None:
    """The candidate keeps the base's contract cells (parameters, harness) exactly once each, identical in
    id, tags and source, in order, with agent code only where the base had agent code (between set-up
    and report); and its kernel. Returns the first problem, or None."""
    if candidate.metadata.get("kernelspec") != base.metadata.get("kernelspec"):
        return "the notebook's kernelspec changed; the sandbox runs in the base notebook's kernel"
    contract = contract_cells(base)
    gaps, seen = set(), 0  # gap k: after the k-th contract cell
    for cell in (c for c in base.cells if c.cell_type == "code"):
        if is_contract(cell):
            seen += 1
        else:
            gaps.add(seen)
    seen = 0
    for index, cell in enumerate(candidate.cells):
        if seen < len(contract) and _same(cell, contract[seen]):
            seen += 1
            continue
        if _looks_like_contract(cell, contract):
            return (f"cell {index} ({cell.get('id', 'no id')}) is a harness or parameters cell that was edited, "
                    "moved, duplicated or re-tagged; those cells must stay exactly as in the base notebook")
        if cell.cell_type == "code" and seen not in gaps:
            where = "before the harness set-up" if seen == 0 else "after the harness report" if seen == len(contract) else "between harness cells"
            return f"cell {index} adds code {where}; the agent's code goes between the set-up and the report cells"
    if seen < len(contract):
        missing = contract[seen]
        return f"the harness cell {missing.get('id', '?')} is missing or changed; restore it exactly as in the base notebook"
    return None


def _same(cell, reference) -> bool:
    return (cell.cell_type == reference.cell_type and cell.get("id") == reference.get("id")
            and cell.source == reference.source
            and cell.get("metadata", {}).get("tags", []) == reference.get("metadata", {}).get("tags", []))


def _looks_like_contract(cell, contract) -> bool:
    ids = {c.get("id") for c in contract}
    sources = {_normal(c.source) for c in contract}
    return is_contract(cell) or cell.get("id") in ids or (cell.cell_type == "code" and _normal(cell.source) in sources)


def _normal(source: str) -> str:
    return "".join(source.split())
