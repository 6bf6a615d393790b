"""The sim's command lines do what their flags say: ``--ops`` exactly (it was rounded up to a
multiple of ``--clients``)."""

from __future__ import annotations

import pytest

from sim.clients import split_ops
from sim.scenario import run_default
from sim.sweep import RunConfig, run_seed, simulate

# --- 2. --ops exactly ---------------------------------------------------------------------------


def test_split_ops_shares_out_exactly() -> None:
    assert split_ops(50, 3) == [17, 17, 16]
    assert split_ops(3000, 3) == [1000, 1000, 1000]
    assert split_ops(1, 3) == [1, 0, 0]
    assert split_ops(0, 3) == [0, 0, 0]
    with pytest.raises(ValueError):
        split_ops(5, 0)


@pytest.mark.parametrize("ops", [0, 1, 2, 50])
def test_the_main_run_does_exactly_ops_operations(ops: int) -> None:
    _, rep = run_default(seed=2, ops=ops, duration=2.0)
    assert len(rep.history) == ops
    counts = [sum(1 for op in rep.history if op.process == i) for i in range(3)]
    assert counts == split_ops(ops, 3)


def test_a_sweep_seed_does_exactly_ops_operations() -> None:
    run = simulate(1, RunConfig(ops=23, clients=5, duration=4.0, nemesis="none"))
    assert len(run.history) == 23
    reg = simulate(1, RunConfig(ops=7, clients=3, duration=4.0, nemesis="none", workload="register"))
    assert len(reg.history) == 7


def test_runs_whose_ops_divide_among_the_clients_keep_their_digests() -> None:
    """Pinned before the ops were shared out exactly: when every client does the same count,
    nothing changed (python -m sim's default run; python -m sim check's default seed 1)."""
    _, rep = run_default()
    assert rep.digest == "49bfd8c775b99b3c78ba0ecdc384219c"
    assert run_seed(1, RunConfig()).digest == "408a1f0686ae24288325ae516f886b8f"
