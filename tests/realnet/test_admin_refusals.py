"""The administrator's refusals carry the refusal exit status (1), never the error one (2)."""

from __future__ import annotations

import pytest

from kvcore.rebalance import Move
from kvcore.states import State
from realnet.admin import EXIT_PROBLEMS, Admin, ClusterView, NodeState, Refused


def _view(b_state: State) -> ClusterView:
    a = NodeState(id="a", addr="127.0.0.1:1", info={"id": "a"})
    b = NodeState(id="b", addr="127.0.0.1:2", state=b_state, info=None, error="not asked")
    return ClusterView(a, {"a": a, "b": b})


@pytest.mark.parametrize("state", [State.DEAD, State.ALIVE])  # alive but unreachable
def test_a_move_to_a_node_that_is_down_is_refused_not_an_error(state: State) -> None:
    with Admin(timeout=0.1) as admin, pytest.raises(Refused) as info:
        admin.move_slots(_view(state), Move("a", "b", ((0, 9),)))
    assert info.value.status == EXIT_PROBLEMS
    assert "slots cannot move from or to it" in info.value.message
