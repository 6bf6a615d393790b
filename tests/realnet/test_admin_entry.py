"""The cluster as the CLI sees it through a node that runs no replicated group while its members
do (a wiped member, a node not yet added to the group): taken through the group's leader, said
once. (Real processes: ``test_lost_state``.)"""

from __future__ import annotations

from typing import Any

from realnet.admin import Admin, NodeState

MEMBERS = [{"id": i, "addr": f"127.0.0.1:{p}", "peer_addr": f"127.0.0.1:{p + 1}", "state": "alive"}
           for i, p in (("a", 10), ("b", 20), ("c", 30))]


class Canned(Admin):
    """Nodes that answer as ``raft`` says (id -> its ``raft`` view, or None: runs no group)."""

    def __init__(self, raft: dict[str, Any]) -> None:
        self.said: list[str] = []
        super().__init__(timeout=0.1, note=self.said.append)
        self.raft = raft
        self.asked: list[str] = []

    def probe(self, addr: str) -> NodeState:
        self.asked.append(addr)
        nid = next(m["id"] for m in MEMBERS if m["addr"] == addr)
        info = {"id": nid, "peer_addr": "", "raft": self.raft[nid]}
        return NodeState(id=nid, addr=addr, info=info, members=MEMBERS, slots={"slots": []})


def test_a_node_outside_the_group_is_asked_through_the_groups_leader_and_said_once() -> None:
    admin = Canned({"a": {"role": "follower", "term": 3}, "b": {"role": "leader", "term": 3}, "c": None})
    view = admin.discover("127.0.0.1:30")
    assert view.entry.id == "b" and set(view.nodes) == {"a", "b", "c"}
    assert len(admin.said) == 1
    assert admin.said[0].startswith("Node c (127.0.0.1:30) runs no replicated group but b (127.0.0.1:20) does")
    assert admin.discover("127.0.0.1:30").entry.id == "b"
    assert len(admin.said) == 1  # said once per address


def test_without_a_leader_the_first_member_running_the_group_is_asked() -> None:
    admin = Canned({"a": {"role": "candidate", "term": 4}, "b": {"role": "follower", "term": 3}, "c": None})
    assert admin.discover("127.0.0.1:30").entry.id == "a"


def test_a_node_of_the_group_or_of_an_unreplicated_cluster_is_its_own_entry() -> None:
    admin = Canned({"a": {"role": "follower", "term": 3}, "b": {"role": "leader", "term": 3}, "c": None})
    assert admin.discover("127.0.0.1:10").entry.id == "a"  # a follower is asked as it is
    plain = Canned({"a": None, "b": None, "c": None})
    view = plain.discover("127.0.0.1:30")
    assert view.entry.id == "c" and not plain.said
    assert plain.asked.count("127.0.0.1:30") == 1  # no second discovery


class Flaky(Canned):
    """As Canned, but the addresses in ``gone`` stop answering after their first probe, and
    ``moved`` maps an address to the node that answers there from its second probe on."""

    def __init__(self, raft: dict[str, Any], gone: set[str] = frozenset(),  # type: ignore[assignment]
                 moved: dict[str, str] | None = None) -> None:
        super().__init__(raft)
        self.gone = gone
        self.moved = moved or {}

    def probe(self, addr: str) -> NodeState:
        again = addr in self.asked
        n = super().probe(addr)
        if again and addr in self.gone:
            return NodeState(id="", addr=addr, error=f"{addr} does not answer")
        if again and addr in self.moved:
            other = self.moved[addr]
            info = {"id": other, "peer_addr": "", "raft": {"role": "leader", "term": 9}}
            return NodeState(id=other, addr=addr, info=info, members=MEMBERS, slots={"slots": []})
        return n


def test_a_leader_that_stops_answering_meanwhile_leaves_the_entry_nodes_view() -> None:
    # the entry answered: the command goes on with its view, as it did before the redirect,
    # rather than failing as if the address it was given did not answer
    admin = Flaky({"a": {"role": "follower", "term": 3}, "b": {"role": "leader", "term": 3}, "c": None},
                  gone={"127.0.0.1:20"})
    view = admin.discover("127.0.0.1:30")
    assert view.entry.id == "c" and not admin.said


def test_a_leaders_address_that_answers_as_another_node_meanwhile_is_not_taken_for_it() -> None:
    admin = Flaky({"a": {"role": "follower", "term": 3}, "b": {"role": "leader", "term": 3}, "c": None},
                  moved={"127.0.0.1:20": "x"})
    view = admin.discover("127.0.0.1:30")
    assert view.entry.id == "c" and not admin.said
