"""Every lab notebook runs, with small parameters, so none can silently rot.

Parameters are overridden the way papermill does it: a cell tagged ``parameters`` sets the
defaults and a cell inserted right after it sets the small values below.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"

SMALL: dict[str, dict[str, object]] = {
    "tour.ipynb": {"OPS": 300, "DURATION": 6.0},
}


def _inject(nb: nbformat.NotebookNode, params: dict[str, object]) -> None:
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "\n".join(f"{k} = {v!r}" for k, v in params.items())
            nb.cells.insert(i + 1, nbformat.v4.new_code_cell(src))
            return
    raise AssertionError("notebook has no cell tagged 'parameters'")


def test_every_notebook_has_small_parameters() -> None:
    found = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert found, "no notebooks found"
    assert found == sorted(SMALL), f"give each notebook small parameters here: {found}"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_executes(name: str, tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    _inject(nb, SMALL[name])
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # the plots were drawn
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 2
