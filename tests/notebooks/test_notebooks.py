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
    "tour.ipynb": {"OPS": 200, "DURATION": 16.0, "PARTITION": 10.0},
    "gossip_convergence.ipynb": {
        "SIZES": [8, 16, 32], "JOIN_SEEDS": [1], "JOIN_FANOUTS": [3, 1],
        "DETECT_N": 16, "DETECT_SEEDS": [1, 2, 3], "DETECT_CRASHES": 2,
        "LOSS_GRID": [0.0, 0.2], "FP_N": 12, "FP_SECONDS": 60.0, "FP_SEEDS": [1],
        "PARTITION_N": 9, "PARTITION_FOR": 60.0, "AFTER_HEAL": 40.0,
        "LOAD_SIZES": [8, 16, 32], "LOAD_SECONDS": 20.0,
    },
    "resharding.ipynb": {"OPS": 900, "KEYS": 100, "DURATION": 12.0, "BATCH": 20},
    "raft_elections.ipynb": {"RUNS": 8, "NARROW_RUNS": 2, "CAP": 3.0, "AVAIL_RUNS": 8},
    "faults_and_histories.ipynb": {
        "OPS": 100, "DURATION": 6.0, "SWEEP_SEEDS": 6, "SWEEP_OPS": 80, "PROCESSES": 1,
    },
    "replication.ipynb": {
        "OPS": 600, "DURATION": 8.0, "DOWN": 1.0, "POWER_DOWN": 0.5, "SEEDS": 3, "SWEEP_OPS": 100,
        "PROCESSES": 1,
    },
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
