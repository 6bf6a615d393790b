"""The client door's synchronous lane (``Node.answer_now``) answers exactly as the door does.

Two twin nodes (same seed, same cluster, same history) take the same operation: one through
``answer_now(op, reply)``, the other through ``on_client_request(op, reply)``. Whenever the lane
returns a Reply, the door must have answered at once with the same Reply, and the lane must not
have called its callback; whenever it returns None, its callback must have received what the
door's did. Either way both twins end in the same state: counters, store, messages sent. The
corpus covers local and remote keys, present and absent ones, refusals of every kind, an unowned
slot, a migrating slot, a gated (restarted) node, a wrapped ``apply`` and a subclass that changes
the door.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kvcore.config import ClusterConfig, NodeConfig, NodeSpec
from kvcore.messages import Delete, Forward, ForwardReply, Get, Nack, Put, Reply
from kvcore.node import Node
from kvcore.runtime import FakeRuntime
from kvcore.slots import key_slot
from kvcore.states import State

# n1 owns 0-9999, n2 owns 10000-15999, 16000-16383 are unassigned
CLUSTER = ClusterConfig(
    (
        NodeSpec("n1", "127.0.0.1:7001", "127.0.0.1:17001", ((0, 9999),)),
        NodeSpec("n2", "127.0.0.1:7002", "127.0.0.1:17002", ((10000, 15999),)),
    ),
    1,
).validate()


def _key(lo: int, hi: int, nth: int = 0) -> bytes:
    found = 0
    for i in range(200_000):
        k = b"k%d" % i
        if lo <= key_slot(k) <= hi:
            if found == nth:
                return k
            found += 1
    raise AssertionError("no key")


LOCAL, LOCAL_ABSENT, REMOTE, UNOWNED = _key(0, 9999), _key(0, 9999, 1), _key(10000, 15999), _key(16000, 16383)
# one slot (n1's) migrating to n2: a key n1 still holds, and one it does not (asked of n2)
MIGRATING, MIGRATING_ABSENT = b"{mig}held", b"{mig}gone"
assert key_slot(MIGRATING) == key_slot(MIGRATING_ABSENT) <= 9999

CORPUS: list[Any] = [
    Get(key=LOCAL), Get(key=LOCAL_ABSENT), Put(key=LOCAL, value=b"w"), Put(key=LOCAL_ABSENT, value=b""),
    Delete(key=LOCAL), Delete(key=LOCAL_ABSENT),
    Get(key=REMOTE), Put(key=REMOTE, value=b"v"), Delete(key=REMOTE),
    Get(key=UNOWNED), Put(key=UNOWNED, value=b"v"),
    Get(key=MIGRATING), Put(key=MIGRATING, value=b"v"), Delete(key=MIGRATING),
    Get(key=MIGRATING_ABSENT), Put(key=MIGRATING_ABSENT, value=b"v"), Delete(key=MIGRATING_ABSENT),
    Get(key=b""), Put(key=b"", value=b"v"), Delete(key=b""),
    Get(key=b"k" * 1024), Get(key=b"k" * 1025), Put(key=b"k" * 1025, value=b"v"),
    Put(key=LOCAL, value=b"v" * (1024 * 1024)), Put(key=LOCAL, value=b"v" * (1024 * 1024 + 1)),
    Get(key="k"), Put(key=LOCAL, value="v"), Put(key=LOCAL, value=None), Put(key=LOCAL, value=bytearray(b"v")),
    Get(key=bytearray(LOCAL)), Nack(seq=1), Reply(),
]


class LoudDoor(Node):
    """A node whose door does more than the router (as test doubles do): no fast lane."""

    def on_client_request(self, op: Any, reply: Callable[[Reply], None]) -> None:
        super().on_client_request(op, reply)


class CountedApply(Node):
    """A node whose ``apply`` is wrapped (as a faulty store's would be): the fast lane too must
    go through it."""

    applied = 0

    def apply(self, op: Get | Put | Delete) -> Reply:
        self.applied += 1
        return super().apply(op)


def _twin(kind: str, cls: type[Node] = Node) -> tuple[Node, FakeRuntime]:
    rt = FakeRuntime("n1", seed=7)
    if kind == "wrapped-apply":
        cls, kind = CountedApply, "cluster"
    if kind == "standalone":
        node = cls(rt, NodeConfig())
    elif kind == "gated":
        node = cls(rt, NodeConfig(), CLUSTER, sync_first=True)
    else:
        node = cls(rt, NodeConfig(), CLUSTER)
    node.start()
    node.on_client_request(Put(key=LOCAL, value=b"v"), lambda r: None)
    node.on_client_request(Put(key=MIGRATING, value=b"m"), lambda r: None)
    if kind == "migrating":
        node.begin_migrate([key_slot(MIGRATING)], "n2")
    rt.take_sent()
    return node, rt


def _state(node: Node, rt: FakeRuntime) -> tuple[object, ...]:
    return (dict(node.stats.ops), dict(node.store._data), node.stats.forwards_sent, list(rt.sent),
            getattr(node, "applied", None))


@pytest.mark.parametrize("kind", ["standalone", "cluster", "migrating", "gated", "wrapped-apply"])
@pytest.mark.parametrize("op", CORPUS, ids=lambda op: f"{type(op).__name__}-{str(op)[:40]}")
def test_the_fast_lane_answers_as_the_door(kind: str, op: Any) -> None:
    fast, frt = _twin(kind)
    door, drt = _twin(kind)
    called: list[Reply] = []
    got = fast.answer_now(op, called.append)
    replies: list[Reply] = []
    door.on_client_request(op, replies.append)
    if got is None:
        assert called == replies  # the door's path, answered now or pending alike
    else:
        assert called == []  # answered by returning, not by calling back
        assert replies == [got]
        assert frt.sent == []
    assert _state(fast, frt) == _state(door, drt)
    # a request left pending (forwarded) ends alike too, once the owner is silent
    frt.advance(10.0)
    drt.advance(10.0)
    assert called == ([] if got is not None else replies)
    assert _state(fast, frt) == _state(door, drt)


def _never(r: Reply) -> None:
    raise AssertionError(f"the fast lane called back with {r}")


def test_the_fast_lane_takes_the_common_requests() -> None:
    # it must not pass everything on: the local, well-formed requests are its reason to be
    node, _ = _twin("cluster")
    assert node.answer_now(Get(key=LOCAL), _never) == Reply(value=b"v")
    assert node.answer_now(Get(key=LOCAL_ABSENT), _never) is not None  # not_found, answered here
    assert node.answer_now(Put(key=LOCAL, value=b"w"), _never) == Reply()
    assert node.answer_now(Delete(key=LOCAL), _never) == Reply()
    later: list[Reply] = []
    assert node.answer_now(Get(key=REMOTE), later.append) is None  # forwarded: the door's work
    assert later == [] and node.stats.forwards_sent == 1
    gated, _ = _twin("gated")
    now: list[Reply] = []
    assert gated.answer_now(Get(key=LOCAL), now.append) is None
    assert [r.error for r in now] == ["try_again"]


def test_a_node_whose_door_is_changed_gets_no_fast_lane() -> None:
    node, _ = _twin("standalone", LoudDoor)
    called: list[Reply] = []
    assert node.answer_now(Get(key=LOCAL), called.append) is None
    assert called == [Reply(value=b"v")]


def _owner_in(node: Node, state: str | None) -> None:
    """Make n2 (the owner of REMOTE) a member in ``state`` for ``node``, or no member at all."""
    members = node.membership.members
    if state is None:
        del members["n2"]
        return
    m = members["n2"].copy()
    m.state = State(state)
    members["n2"] = m


@pytest.mark.parametrize("state", ["alive", "suspect", "dead", "left", None])
@pytest.mark.parametrize("answer", ["ok", "not_found", "wrong_peer", "twice", "late", "none"])
@pytest.mark.parametrize("op", [Get(key=REMOTE), Put(key=REMOTE, value=b"v"), Delete(key=REMOTE)],
                         ids=lambda op: type(op).__name__)
def test_a_forward_from_the_fast_lane_ends_as_the_doors(state: str | None, answer: str, op: Any) -> None:
    """The lane forwards a request for another node's slot itself (``Router.forward``'s work,
    inline); the twins must agree on every way the forward can end: answered, answered by the
    wrong peer, answered twice, answered after the timeout, never answered."""
    twins = [_twin("cluster"), _twin("cluster")]
    got: list[list[Reply]] = [[], []]
    for i, (node, _rt) in enumerate(twins):
        _owner_in(node, state)
        if i == 0:
            assert node.answer_now(op, got[0].append) is None
        else:
            node.on_client_request(op, got[1].append)
    assert _state(*twins[0]) == _state(*twins[1])
    for node, rt in twins:
        sent = [m for _dst, m in rt.sent if type(m) is Forward]
        reply = Reply() if answer != "not_found" else Reply(error="not_found", message="no such key")
        if answer == "late":
            rt.advance(10.0)
        for m in sent:
            src = "n3" if answer == "wrong_peer" else "n2"
            if answer != "none":
                node.on_message(src, ForwardReply(request_id=m.request_id, reply=reply))
            if answer == "twice":
                node.on_message(src, ForwardReply(request_id=m.request_id, reply=reply))
        rt.advance(10.0)
    assert got[0] == got[1] and len(got[0]) == 1
    assert _state(*twins[0]) == _state(*twins[1])
    assert [n.stats.as_dict() for n, _ in twins[:1]] == [n.stats.as_dict() for n, _ in twins[1:]]
    assert [dict(n.router.pending) for n, _ in twins] == [{}, {}]


def test_the_fast_lane_forwards_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request for a live owner's slot goes from the lane straight to ``forward``, not through
    the door's path (``_route``)."""
    node, rt = _twin("cluster")

    def general(*args: Any) -> None:
        raise AssertionError("the door's path was taken")

    monkeypatch.setattr(node.router, "_route", general)
    later: list[Reply] = []
    assert node.answer_now(Put(key=REMOTE, value=b"v"), later.append) is None
    [(dst, msg)] = rt.take_sent()
    assert dst == "n2" and msg == Forward(request_id=msg.request_id, op=Put(key=REMOTE, value=b"v"))
    node.on_message("n2", ForwardReply(request_id=msg.request_id, reply=Reply()))
    assert later == [Reply()]


def test_the_fast_paths_read_the_slot_map_without_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lane and the owner's fast path for forwards read a slot's owner from the map's list
    itself (``SlotMap.owner``'s work, inline), and answer as before."""
    from kvcore.slots import SlotMap

    node, rt = _twin("cluster")

    def owner(self: SlotMap, slot: int) -> str | None:
        raise AssertionError("SlotMap.owner was called")

    monkeypatch.setattr(SlotMap, "owner", owner)
    assert node.answer_now(Get(key=LOCAL), _never) == Reply(value=b"v")
    assert node.answer_now(Put(key=REMOTE, value=b"v"), _never) is None
    assert [type(m).__name__ for _dst, m in rt.take_sent()] == ["Forward"]
    node.on_message("n2", Forward(request_id=5, op=Put(key=LOCAL, value=b"x")))
    node.on_message("n2", Forward(request_id=6, op=Get(key=LOCAL)))
    assert [m for _dst, m in rt.take_sent()] == [
        ForwardReply(request_id=5, reply=Reply()), ForwardReply(request_id=6, reply=Reply(value=b"x"))]
