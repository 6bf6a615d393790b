"""``storelab cluster fix`` and a source that left mid-move: the target finishes the import only
once its own view holds the source as left (its guard refuses before), so the snapshot carries
each node's own list of left members and the driver waits for it (``kvcore.slotmove.WaitLeft``).
"""

from __future__ import annotations

from typing import Any

import pytest

from kvcore.slotmove import Fix, WaitLeft, next_steps
from kvcore.slotmove import Progress as MoveProgress
from realnet import admin
from realnet.clusterview import AdminError, ClusterView, NodeState


def _node(nid: str, members: list[tuple[str, str]], importing: dict[str, str] | None = None) -> NodeState:
    port = 7000 + ord(nid)
    n = NodeState(id=nid, addr=f"127.0.0.1:{port}", peer_addr=f"127.0.0.1:{port + 10000}")
    n.info = {"id": nid, "migrating": {}, "importing": importing or {}}
    n.members = [{"id": m, "state": st} for m, st in members]
    n.slots = {"slots": [{"start": 0, "end": 8191, "node": "a", "epoch": 1},
                         {"start": 8192, "end": 16383, "node": "c", "epoch": 1}], "unassigned": ""}
    return n


class Members(admin.Admin):
    """The real Admin; each node's ``/cluster/members`` answered from a script of answers."""

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        super().__init__(converge_timeout=5.0)
        self.answers = answers
        self.asked: list[str] = []

    def get(self, addr: str, path: str) -> Any:
        assert path == "/cluster/members", path
        self.asked.append(addr)
        script = self.answers[addr]
        return script.pop(0) if len(script) > 1 else script[0]


def _cluster() -> ClusterView:
    c = _node("c", [("a", "left"), ("b", "alive"), ("c", "alive")])
    b = _node("b", [("a", "alive"), ("b", "alive"), ("c", "alive")], importing={"10": "a"})
    a = NodeState(id="a", addr="127.0.0.1:7097", state="left")
    view = ClusterView(c)
    view.nodes.update({"c": c, "b": b, "a": a})
    return view


def test_the_snapshot_holds_each_nodes_own_left_members_and_fix_waits_for_the_target() -> None:
    cluster = _cluster()
    snap = admin.Admin.snapshot(admin.Admin(), cluster)
    assert snap.nodes["b"].left == frozenset() and snap.nodes["c"].left == {"a"}
    assert snap.nodes["a"].left is None  # (not asked: it is gone)
    assert [str(s) for s in next_steps(snap, Fix())] == ["wait b to see a leave, for 10"]


def test_wait_left_polls_the_targets_own_members_until_the_source_left() -> None:
    cluster = _cluster()
    b = cluster.nodes["b"].addr
    alive = [{"id": "a", "state": "alive"}]
    fake = Members({b: [alive, alive, [{"id": "a", "state": "left"}]]})
    step = WaitLeft("b", "a", (10,))
    assert fake._act(cluster, step, MoveProgress(), 1, None) == (MoveProgress(), 0)
    assert fake.asked == [b, b, b]

    never = Members({b: [alive]})
    never.converge_timeout = 0.3
    with pytest.raises(AdminError, match=r"Timed out after 0\.3s waiting for b to learn that a left"):
        never.wait_left(cluster, "b", "a")
    not_a_node = Members({b: [{"id": "a"}]})
    with pytest.raises(AdminError, match="/cluster/members"):
        not_a_node.wait_left(cluster, "b", "a")
