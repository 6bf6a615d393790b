"""The node on a FakeRuntime: routing, forwarding, dedup, membership-driven routing, stop,
determinism.

Every test drives the node through its three doors (client requests, peer messages, timers via
``FakeRuntime.advance``) and asserts on what it sent and replied, as data.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kvcore import errors
from kvcore.config import ClusterConfig, ConfigError, NodeConfig, NodeSpec
from kvcore.membership import SwimConfig
from kvcore.messages import (
    Alive,
    Dead,
    Delete,
    Forward,
    ForwardReply,
    Get,
    Gossip,
    Hello,
    MemberState,
    Nack,
    PingReq,
    PushPull,
    Put,
    Reply,
    Suspect,
    SwimAck,
    SwimPing,
)
from kvcore.node import Node
from kvcore.runtime import FakeRuntime
from kvcore.slots import NUM_SLOTS, Range, even_split, key_slot

REPO = Path(__file__).resolve().parents[2]

# --- helpers -------------------------------------------------------------------------------


def make_cluster(
    ids: tuple[str, ...] = ("n1", "n2", "n3"),
    assignment: dict[str, list[Range]] | None = None,
    epoch: int = 1,
) -> ClusterConfig:
    """A static cluster; by default the redis-cli even split over the ids in sorted order."""
    split = assignment if assignment is not None else even_split(sorted(ids))
    nodes = tuple(
        NodeSpec(nid, f"127.0.0.1:{7001 + i}", f"127.0.0.1:{17001 + i}", tuple(split.get(nid, [])))
        for i, nid in enumerate(ids)
    )
    return ClusterConfig(nodes, epoch).validate()


def key_owned_by(cluster: ClusterConfig, node_id: str | None, nth: int = 0) -> bytes:
    """The nth key of the form key-<i> whose slot belongs to node_id (None: unassigned)."""
    m = cluster.slot_map()
    found = 0
    for i in range(100_000):
        k = f"key-{i}".encode()
        if m.owner_of_key(k) == node_id:
            if found == nth:
                return k
            found += 1
    raise AssertionError(f"no key owned by {node_id}")


class Client:
    """A reply callback that records (time, reply)."""

    def __init__(self, rt: FakeRuntime) -> None:
        self.rt = rt
        self.got: list[tuple[float, Reply]] = []

    def __call__(self, r: Reply) -> None:
        self.got.append((self.rt.now(), r))

    @property
    def replies(self) -> list[Reply]:
        return [r for _, r in self.got]


def request(node: Node, rt: FakeRuntime, op: Any) -> Client:
    c = Client(rt)
    node.on_client_request(op, c)
    return c


def build(
    node_id: str = "n1",
    cluster: ClusterConfig | None = None,
    config: NodeConfig | None = None,
    seed: int = 0,
    start: bool = True,
) -> tuple[Node, FakeRuntime]:
    rt = FakeRuntime(node_id, seed=seed)
    node = Node(rt, config, cluster)
    if start:
        node.start()
    return node, rt


SWIM_KINDS = (SwimPing, SwimAck, PingReq, Nack, Gossip, PushPull)


def peer_traffic(rt: FakeRuntime) -> list[tuple[str, Any]]:
    """Take what was sent, without membership's own traffic (probes, gossip, push-pull)."""
    return [(d, m) for d, m in rt.take_sent() if not isinstance(m, SWIM_KINDS)]


def first_request_id(seed: int) -> int:
    # node.py: "Request ids start at a random 48-bit offset drawn from the Runtime's random".
    return random.Random(seed).getrandbits(48)


# --- standalone ----------------------------------------------------------------------------


def test_standalone_node_owns_every_slot() -> None:
    node, _ = build()
    assert node.slot_map.covers_all()
    assert node.slot_map.slot_counts() == {"n1": NUM_SLOTS}
    assert node.peer_states() == {}
    assert node.info()["mode"] == "standalone"
    assert node.info()["slots_owned"] == NUM_SLOTS


def test_standalone_node_sends_nothing() -> None:
    # its membership timers tick (a node may join it later), but it has nobody to talk to
    _, rt = build()
    rt.advance(100.0)
    assert rt.pending_timers() == 3
    assert rt.sent == []


def test_standalone_node_applies_set_get_delete_locally() -> None:
    node, rt = build()
    assert request(node, rt, Put(key=b"k", value=b"v")).replies == [Reply()]
    assert request(node, rt, Get(key=b"k")).replies == [Reply(value=b"v")]
    assert request(node, rt, Put(key=b"k", value=b"w")).replies == [Reply()]
    assert request(node, rt, Get(key=b"k")).replies == [Reply(value=b"w")]
    assert request(node, rt, Delete(key=b"k")).replies == [Reply()]
    assert node.store.count() == 0
    assert rt.sent == []
    assert node.stats.ops == {"Put ok": 2, "Get ok": 2, "Delete ok": 1}


def test_empty_value_round_trips_and_is_not_absence() -> None:
    node, rt = build()
    request(node, rt, Put(key=b"k", value=b""))
    (r,) = request(node, rt, Get(key=b"k")).replies
    assert r.ok and r.value == b""


@pytest.mark.parametrize("op", [Get(key=b"absent"), Delete(key=b"absent")])
def test_absent_key_answers_not_found_which_is_404_and_not_a_failure(op: Any) -> None:
    node, rt = build()
    (r,) = request(node, rt, op).replies
    assert r.error == "not_found" == errors.NotFound.code
    assert errors.http_status(r.error) == 404
    assert not r.ok
    assert r.value is None
    # an answer, certainly obtained: not one of the failure codes
    assert errors.NotFound.definite
    failures = {c for c, cls in errors.ERRORS_BY_CODE.items() if cls.status >= 500}
    assert r.error not in failures
    assert rt.sent == []
    assert node.stats.ops == {f"{type(op).__name__} not_found": 1}


@pytest.mark.parametrize(
    ("op", "code", "status"),
    [
        (Get(key=b""), "bad_request", 400),
        (Put(key=b"", value=b"v"), "bad_request", 400),
        (Delete(key=b""), "bad_request", 400),
        (Get(key=b"k" * 1025), "too_large", 413),
        (Put(key=b"k" * 1025, value=b"v"), "too_large", 413),
        (Delete(key=b"k" * 1025), "too_large", 413),
        (Put(key=b"k", value=b"v" * (1024 * 1024 + 1)), "too_large", 413),
        (Get(key="k"), "bad_request", 400),  # type: ignore[arg-type]
        (Put(key=b"k", value="v"), "bad_request", 400),  # type: ignore[arg-type]
        (Put(key=b"k", value=None), "bad_request", 400),  # type: ignore[arg-type]
        (Nack(seq=1), "bad_request", 400),
        (Reply(), "bad_request", 400),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, (str, int)) else str(v),
)
def test_invalid_requests_are_refused_before_touching_the_store(
    op: Any, code: str, status: int
) -> None:
    node, rt = build()
    (r,) = request(node, rt, op).replies
    assert r.error == code
    assert r.message, "an error carries a sentence"
    assert errors.http_status(r.error) == status
    assert node.store.count() == 0
    assert rt.sent == []


def test_size_limits_are_inclusive() -> None:
    node, rt = build()
    key = b"k" * 1024
    value = b"v" * (1024 * 1024)
    assert request(node, rt, Put(key=key, value=value)).replies == [Reply()]
    assert request(node, rt, Get(key=key)).replies == [Reply(value=value)]


def test_size_limits_come_from_the_node_config() -> None:
    node, rt = build(config=NodeConfig(max_key_bytes=4, max_value_bytes=8))
    assert request(node, rt, Put(key=b"abcd", value=b"12345678")).replies == [Reply()]
    assert request(node, rt, Put(key=b"abcde", value=b"1")).replies[0].error == "too_large"
    assert request(node, rt, Put(key=b"abc", value=b"123456789")).replies[0].error == "too_large"


def test_node_refuses_an_invalid_config() -> None:
    with pytest.raises(ConfigError):
        Node(FakeRuntime(), NodeConfig(forward_timeout=0.0))


def test_node_refuses_a_cluster_it_is_not_a_member_of() -> None:
    with pytest.raises(ConfigError, match="'n9' is not a member"):
        Node(FakeRuntime("n9"), None, make_cluster())


# --- routing in a cluster ------------------------------------------------------------------


def test_request_for_a_local_slot_is_applied_without_sending() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    k = key_owned_by(cluster, "n1")
    assert request(node, rt, Put(key=k, value=b"v")).replies == [Reply()]
    assert request(node, rt, Get(key=k)).replies == [Reply(value=b"v")]
    assert peer_traffic(rt) == []


def test_request_ids_start_at_a_random_48_bit_offset_and_count_up() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster, seed=5)
    for i in range(3):
        request(node, rt, Get(key=key_owned_by(cluster, "n2", i)))
    rids = [m.request_id for _, m in peer_traffic(rt)]
    base = first_request_id(5)
    assert rids == [base, base + 1, base + 2]
    assert 0 <= base < 2**48


@pytest.mark.parametrize(
    "make_op",
    [
        lambda k: Get(key=k),
        lambda k: Put(key=k, value=b"v"),
        lambda k: Delete(key=k),
    ],
)
def test_request_for_a_remote_slot_is_forwarded_once_to_its_owner(make_op: Any) -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster, seed=3)
    op = make_op(key_owned_by(cluster, "n2"))
    client = request(node, rt, op)
    assert peer_traffic(rt) == [("n2", Forward(request_id=first_request_id(3), op=op))]
    assert client.got == []  # the answer comes later
    assert node.pending_forwards() == 1
    assert node.stats.forwards_sent == 1
    assert node.store.count() == 0


@pytest.mark.parametrize(
    "reply",
    [
        Reply(value=b"v"),
        Reply(),
        Reply(error="not_found", message="key b'x' not found"),
        Reply(error="wrong_node", message="maps disagree"),
    ],
)
def test_owners_forward_reply_is_relayed_to_the_client(reply: Reply) -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    client = request(node, rt, Get(key=key_owned_by(cluster, "n3")))
    ((dst, fwd),) = peer_traffic(rt)
    assert dst == "n3"
    timers = rt.pending_timers()
    node.on_message("n3", ForwardReply(request_id=fwd.request_id, reply=reply))
    assert client.replies == [reply]
    assert node.pending_forwards() == 0
    assert rt.pending_timers() == timers - 1, "the forward timer is cancelled"
    assert node.stats.ops == {f"Get {reply.error or 'ok'}": 1}
    rt.advance(60.0)
    assert client.replies == [reply], "no timeout after the answer"


def test_forward_timeout_answers_504_after_exactly_forward_timeout() -> None:
    cluster = make_cluster()
    config = NodeConfig(forward_timeout=2.0)
    node, rt = build(cluster=cluster, config=config)
    rt.advance(0.5)
    t0 = rt.now()
    client = request(node, rt, Put(key=key_owned_by(cluster, "n2"), value=b"v"))
    rt.advance(1.75)
    assert client.got == []
    rt.advance(0.5)
    ((when, r),) = client.got
    assert when == t0 + config.forward_timeout
    assert r.error == "forward_timeout" == errors.ForwardTimeout.code
    assert errors.ForwardTimeout.status == 504 == errors.http_status(r.error)
    assert not errors.ForwardTimeout.definite  # outcome unknown
    assert node.stats.forward_timeouts == 1
    assert node.pending_forwards() == 0


def test_late_reply_after_the_timeout_is_dropped() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    client = request(node, rt, Get(key=key_owned_by(cluster, "n2")))
    ((_, fwd),) = peer_traffic(rt)
    rt.advance(node.config.forward_timeout)
    assert [r.error for r in client.replies] == ["forward_timeout"]
    node.on_message("n2", ForwardReply(request_id=fwd.request_id, reply=Reply(value=b"late")))
    assert [r.error for r in client.replies] == ["forward_timeout"], "the client is answered once"
    assert node.stats.late_replies == 1


def test_duplicated_forward_reply_answers_the_client_once() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    client = request(node, rt, Get(key=key_owned_by(cluster, "n2")))
    ((_, fwd),) = peer_traffic(rt)
    fr = ForwardReply(request_id=fwd.request_id, reply=Reply(value=b"v"))
    node.on_message("n2", fr)
    node.on_message("n2", fr)
    assert client.replies == [Reply(value=b"v")]
    assert node.stats.late_replies == 1


def test_forward_reply_from_the_wrong_peer_is_ignored() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    client = request(node, rt, Get(key=key_owned_by(cluster, "n2")))
    ((_, fwd),) = peer_traffic(rt)
    node.on_message("n3", ForwardReply(request_id=fwd.request_id, reply=Reply(value=b"forged")))
    assert client.got == []
    assert node.pending_forwards() == 1
    node.on_message("n2", ForwardReply(request_id=fwd.request_id, reply=Reply(value=b"real")))
    assert client.replies == [Reply(value=b"real")]


def test_forward_reply_with_an_unknown_request_id_is_ignored() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    client = request(node, rt, Get(key=key_owned_by(cluster, "n2")))
    ((_, fwd),) = peer_traffic(rt)
    node.on_message("n2", ForwardReply(request_id=fwd.request_id + 1000, reply=Reply()))
    assert client.got == []
    assert node.pending_forwards() == 1
    assert node.stats.late_replies == 1
    assert peer_traffic(rt) == []


def test_request_for_an_unassigned_slot_answers_slot_unassigned() -> None:
    cluster = make_cluster(assignment={"n1": [(0, 8191)], "n2": [(8192, 12000)]})
    node, rt = build(cluster=cluster)
    k = key_owned_by(cluster, None)
    (r,) = request(node, rt, Get(key=k)).replies
    assert r.error == "slot_unassigned"
    assert str(key_slot(k)) in r.message
    assert errors.http_status(r.error) == 503
    assert peer_traffic(rt) == []


# --- the owner's side of a forward ---------------------------------------------------------


def test_forward_to_the_owner_is_applied_and_answered() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    k = key_owned_by(cluster, "n1")
    node.on_message("n2", Forward(request_id=41, op=Put(key=k, value=b"v")))
    assert node.store.get(k) == b"v"
    node.on_message("n2", Forward(request_id=42, op=Get(key=k)))
    assert peer_traffic(rt) == [
        ("n2", ForwardReply(request_id=41, reply=Reply())),
        ("n2", ForwardReply(request_id=42, reply=Reply(value=b"v"))),
    ]
    assert node.stats.forwards_received == 2


def test_forward_with_an_invalid_op_is_answered_with_the_error() -> None:
    node, rt = build(cluster=make_cluster())
    node.on_message("n2", Forward(request_id=1, op=Get(key=b"")))
    ((dst, fr),) = peer_traffic(rt)
    assert dst == "n2" and fr.request_id == 1 and fr.reply.error == "bad_request"


@pytest.mark.parametrize("owner", ["n3", None])
def test_forward_reaching_a_non_owner_answers_wrong_node_and_is_not_forwarded_again(
    owner: str | None,
) -> None:
    cluster = make_cluster(
        assignment={"n1": [(0, 5000)], "n2": [(5001, 10000)], "n3": [(10001, 15000)]}
    )
    node, rt = build(cluster=cluster)
    k = key_owned_by(cluster, owner)
    node.on_message("n2", Forward(request_id=9, op=Put(key=k, value=b"v")))
    sent = peer_traffic(rt)
    assert not any(isinstance(m, Forward) for _, m in sent), (
        "a forwarded request is never forwarded"
    )
    ((dst, fr),) = sent
    assert dst == "n2"
    assert fr.request_id == 9
    assert fr.reply.error == "wrong_node"
    assert errors.http_status("wrong_node") == 503
    assert (owner or "nobody") in fr.reply.message
    assert node.store.count() == 0
    assert node.pending_forwards() == 0


def test_duplicated_forward_is_not_applied_twice() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    k = key_owned_by(cluster, "n1")
    v1 = Forward(request_id=7, op=Put(key=k, value=b"v1"))
    node.on_message("n2", v1)
    node.on_message("n2", Forward(request_id=8, op=Put(key=k, value=b"v2")))
    rt.take_sent()
    node.on_message("n2", v1)  # the network duplicated the first Put, delivered late
    assert node.store.get(k) == b"v2", "an old value must not come back"
    assert peer_traffic(rt) == [("n2", ForwardReply(request_id=7, reply=Reply()))]
    assert node.stats.forward_duplicates == 1


def test_duplicated_forward_of_a_write_gets_the_cached_reply() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    k = key_owned_by(cluster, "n1")
    delete = Forward(request_id=1, op=Delete(key=k))
    node.on_message("n2", delete)
    node.on_message("n2", Forward(request_id=2, op=Put(key=k, value=b"now")))
    ((_, first), _) = peer_traffic(rt)
    assert first.reply.error == "not_found"
    node.on_message("n2", delete)
    assert peer_traffic(rt) == [("n2", first)], "answered from memory, not applied again"
    assert node.store.get(k) == b"now"


def test_duplicated_forward_of_a_get_is_read_again_not_cached() -> None:
    # a Get changes nothing, so re-reading is safe, and caching values of up to 1 MiB is not
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    k = key_owned_by(cluster, "n1")
    get = Forward(request_id=1, op=Get(key=k))
    node.on_message("n2", get)
    node.on_message("n2", Forward(request_id=2, op=Put(key=k, value=b"now")))
    peer_traffic(rt)
    node.on_message("n2", get)
    ((_, again),) = peer_traffic(rt)
    assert again.reply.value == b"now"


def test_dedup_memory_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    import kvcore.node.dedup as dedup_module

    monkeypatch.setattr(dedup_module, "DEDUP_MAX_ENTRIES", 3)
    cluster = make_cluster()
    node, _ = build(cluster=cluster)
    k = key_owned_by(cluster, "n1")
    for rid in range(10):
        node.on_message("n2", Forward(request_id=rid, op=Put(key=k, value=b"v%d" % rid)))
    assert len(node.router.recent) == 3
    assert [rid for (_, rid) in node.router.recent] == [7, 8, 9]


def test_dedup_is_per_sender() -> None:
    cluster = make_cluster()
    node, _ = build(cluster=cluster)
    k = key_owned_by(cluster, "n1")
    node.on_message("n2", Forward(request_id=5, op=Put(key=k, value=b"from-n2")))
    node.on_message("n3", Forward(request_id=5, op=Put(key=k, value=b"from-n3")))
    assert node.store.get(k) == b"from-n3"
    assert node.stats.forward_duplicates == 0


def test_dedup_memory_expires_after_dedup_window() -> None:
    cluster = make_cluster()
    config = NodeConfig(dedup_window=10.0)
    node, rt = build(cluster=cluster, config=config)
    k = key_owned_by(cluster, "n1")
    v1 = Forward(request_id=7, op=Put(key=k, value=b"v1"))
    node.on_message("n2", v1)
    node.on_message("n2", Forward(request_id=8, op=Put(key=k, value=b"v2")))
    rt.advance(config.dedup_window - 0.5)
    node.on_message("n2", v1)
    assert node.store.get(k) == b"v2", "still remembered inside the window"
    rt.advance(1.0)
    node.on_message("n2", v1)
    assert node.store.get(k) == b"v1", "forgotten after the window: applied as new"
    assert node.stats.forward_duplicates == 1


# --- untrusted peer input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        Get(key=b"k"),
        Put(key=b"k", value=b"v"),
        Delete(key=b"k"),
        Reply(),
        Hello(node_id="n2"),
        None,
        {"k": "Forward"},
        b"garbage",
        object(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_unexpected_message_kind_is_counted_as_malformed_without_raising(msg: Any) -> None:
    node, rt = build(cluster=make_cluster())
    node.on_message("n2", msg)
    assert node.stats.malformed == 1
    assert node.stats.received == {type(msg).__name__: 1}
    assert peer_traffic(rt) == []
    assert node.store.count() == 0


def test_swim_ping_for_us_is_answered_with_an_ack_of_the_same_seq() -> None:
    node, rt = build(cluster=make_cluster())
    rt.take_sent()
    node.on_message("n3", SwimPing(seq=77, target="n1", gossip=()))
    ((dst, ack),) = rt.take_sent()
    assert dst == "n3" and isinstance(ack, SwimAck) and ack.seq == 77
    # the ack carries our own announcement piggybacked (SWIM §4.1)
    assert [u.node for u in ack.gossip] == ["n1"]
    assert node.stats.received == {"SwimPing": 1}


# --- membership drives routing ---------------------------------------------------------------


def gossip(node: Node, *updates: Any, src: str = "n3") -> None:
    node.on_message(src, Gossip(updates=tuple(updates)))


def test_static_cluster_seeds_membership_with_every_member_alive() -> None:
    node, _ = build(cluster=make_cluster())
    assert node.peer_states() == {"n2": "alive", "n3": "alive"}
    assert [m["id"] for m in node.members_view()] == ["n1", "n2", "n3"]
    assert node.members_view()[1]["addr"] == "127.0.0.1:7002"


def test_requests_for_a_dead_owner_fail_fast_with_owner_down_without_sending() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    gossip(node, Dead(node="n2", incarnation=0, source="n3"))
    assert node.peer_states()["n2"] == "dead"
    rt.take_sent()
    (r,) = request(node, rt, Get(key=key_owned_by(cluster, "n2"))).replies
    assert (r.error, errors.OwnerDown.status) == ("owner_down", 503)
    assert "dead" in r.message
    assert peer_traffic(rt) == []
    # the other owners are still served
    request(node, rt, Get(key=key_owned_by(cluster, "n3")))
    assert [type(m) for _, m in peer_traffic(rt)] == [Forward]


def test_requests_for_a_suspect_owner_are_still_forwarded() -> None:
    # suspicion is not failure (SWIM §4.2): the owner may refute it
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    gossip(node, Suspect(node="n2", incarnation=0, source="n3"))
    assert node.peer_states()["n2"] == "suspect"
    rt.take_sent()
    request(node, rt, Put(key=key_owned_by(cluster, "n2"), value=b"v"))
    assert [(d, type(m)) for d, m in peer_traffic(rt)] == [("n2", Forward)]


def test_a_left_owner_is_owner_down_and_a_refuted_death_routes_again() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    k = key_owned_by(cluster, "n2")
    gossip(node, Dead(node="n2", incarnation=0, source="n2"))
    assert node.peer_states()["n2"] == "left"
    assert request(node, rt, Get(key=k)).replies[0].error == "owner_down"
    # it comes back with a higher incarnation: alive again, forwarded again
    gossip(node, Alive(node="n2", incarnation=1, addr="127.0.0.1:7002", peer_addr="127.0.0.1:17002",
                       slots="5461-10922", epoch=1))
    rt.take_sent()
    request(node, rt, Get(key=k))
    assert [(d, type(m)) for d, m in peer_traffic(rt)] == [("n2", Forward)]


def test_slot_map_follows_the_highest_epoch_claim_heard_by_gossip() -> None:
    cluster = make_cluster()
    node, _rt = build(cluster=cluster)
    assert node.slot_map.owner(0) == "n1"
    # n3 claims 0-99 at a higher epoch
    gossip(node, Alive(node="n3", incarnation=1, addr="127.0.0.1:7003", peer_addr="127.0.0.1:17003",
                       slots="0-99,10923-16383", epoch=2))
    assert node.slot_map.owner(0) == "n3" and node.slot_map.epoch(0) == 2
    assert node.slot_map.owner(100) == "n1"
    # an older claim (lower epoch) loses, whatever order it arrives in
    gossip(node, Alive(node="n2", incarnation=1, addr="127.0.0.1:7002", peer_addr="127.0.0.1:17002",
                       slots="0-10922", epoch=1))
    assert node.slot_map.owner(0) == "n3" and node.slot_map.owner(5000) == "n1"


def test_claim_slots_takes_ownership_and_advertises_it_with_a_new_incarnation() -> None:
    cluster = make_cluster()
    node, _rt = build(cluster=cluster)
    inc = node.membership.me.incarnation
    node.claim_slots("6000-6099", epoch=5, accept_loss=True)  # n2's slots: see test_node_admin
    assert node.slot_map.owner(6000) == "n1" and node.slot_map.epoch(6000) == 5
    assert node.membership.me.incarnation == inc + 1
    (alive,) = node.membership.broadcasts.take(10, 10)
    assert isinstance(alive, Alive) and alive.epoch == 5 and "6000-6099" in alive.slots


def test_a_node_with_seeds_joins_and_owns_no_slots() -> None:
    rt = FakeRuntime("n9", seed=1)
    node = Node(rt, None, None, seeds=["@127.0.0.1:17001"], addr="127.0.0.1:7009",
                peer_addr="127.0.0.1:17009")
    node.start()
    assert node.slot_map.slot_counts() == {}
    (r,) = request(node, rt, Get(key=b"k")).replies
    assert r.error == "slot_unassigned"
    rt.advance(0.0)
    (join,) = [(d, m) for d, m in rt.take_sent() if isinstance(m, PushPull)]
    assert join[0] == "@127.0.0.1:17001" and join[1].join
    # the seed's answer teaches it the cluster and its slot map
    state = (
        MemberState(node="n1", incarnation=0, state="alive", addr="127.0.0.1:7001",
                    peer_addr="127.0.0.1:17001", slots="0-16383", epoch=1),
    )
    node.on_message("n1", PushPull(join=False, reply=True, members=state))
    assert node.membership.joined
    assert node.slot_map.slot_counts() == {"n1": NUM_SLOTS}
    request(node, rt, Get(key=b"k"))
    assert [(d, type(m)) for d, m in peer_traffic(rt)] == [("n1", Forward)]


def test_malformed_slot_claim_is_counted_not_raised() -> None:
    node, _ = build(cluster=make_cluster())
    gossip(node, Alive(node="n2", incarnation=3, addr="127.0.0.1:7002", peer_addr="127.0.0.1:17002",
                       slots="0-99999", epoch=9))
    assert node.stats.malformed == 1
    assert node.slot_map.owner(0) == "n1"


def test_membership_settings_are_the_nodes_swim_config() -> None:
    rt = FakeRuntime("n1")
    node = Node(rt, None, make_cluster(), swim=SwimConfig.wan())
    assert node.membership.config.probe_interval == 5.0


# --- stop ----------------------------------------------------------------------------------


def test_stop_fails_pending_forwards_and_cancels_timers() -> None:
    cluster = make_cluster()
    node, rt = build(cluster=cluster)
    c1 = request(node, rt, Get(key=key_owned_by(cluster, "n2")))
    c2 = request(node, rt, Put(key=key_owned_by(cluster, "n3"), value=b"v"))
    fwds = peer_traffic(rt)
    assert rt.pending_timers() == 5  # probe, gossip and push-pull timers; two forward timers
    node.stop()
    assert rt.pending_timers() == 0
    assert node.pending_forwards() == 0
    for c in (c1, c2):
        (r,) = c.replies
        assert r.error == "shutting_down"  # 504: the outcome is unknown (not 500, a bug)
        assert not errors.Internal.definite
    rt.advance(100.0)
    assert rt.sent == [], "no probes or gossip after stop"
    for dst, f in fwds:
        node.on_message(dst, ForwardReply(request_id=f.request_id, reply=Reply()))
    assert len(c1.replies) == len(c2.replies) == 1
    assert not node.running


def test_stop_is_harmless_twice_and_start_resumes_probing() -> None:
    node, rt = build(cluster=make_cluster())
    node.stop()
    node.stop()
    node.start()
    rt.advance(2 * node.membership.config.probe_interval)
    assert {d for d, m in rt.sent if isinstance(m, SwimPing)} == {"n2", "n3"}


def test_start_twice_sets_one_set_of_membership_timers() -> None:
    node, rt = build(cluster=make_cluster())
    node.start()
    assert rt.pending_timers() == 3


# --- determinism ---------------------------------------------------------------------------


def run_scenario(seed: int) -> tuple[list[tuple[str, Any]], list[tuple[float, Reply]]]:
    """A fixed script of client requests, peer answers and time; only the node's seed varies."""
    cluster = make_cluster()
    rt = FakeRuntime("n1", seed=seed)
    node = Node(rt, None, cluster)
    node.start()
    script = random.Random(1234)  # the script is fixed; it is not the node's randomness
    replies: list[tuple[float, Reply]] = []

    def reply(r: Reply) -> None:
        replies.append((rt.now(), r))

    seen = 0
    for step in range(300):
        k = f"key-{script.randrange(50)}".encode()
        action = script.randrange(6)
        if action == 0:
            node.on_client_request(Put(key=k, value=f"v{step}".encode()), reply)
        elif action == 1:
            node.on_client_request(Get(key=k), reply)
        elif action == 2:
            node.on_client_request(Delete(key=k), reply)
        elif action == 3:
            rt.advance(script.random() * 0.7)
        elif action == 4:
            node.on_message(
                script.choice(["n2", "n3"]), Forward(request_id=step, op=Put(key=k, value=b"x"))
            )
        # answer some of what the node sent since last time, as the peers would
        for dst, m in rt.sent[seen:]:
            if isinstance(m, SwimPing) and script.random() < 0.7:
                node.on_message(dst, SwimAck(seq=m.seq, gossip=()))
            elif isinstance(m, Forward) and script.random() < 0.8:
                node.on_message(dst, ForwardReply(request_id=m.request_id, reply=Reply(value=b"r")))
        seen = len(rt.sent)
    rt.advance(10.0)
    return rt.sent, replies


def scenario_digest(seed: int) -> str:
    sent, replies = run_scenario(seed)
    return hashlib.sha256(repr((sent, replies)).encode()).hexdigest()


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_same_seed_and_inputs_give_identical_sent_lists(seed: int) -> None:
    sent_a, replies_a = run_scenario(seed)
    sent_b, replies_b = run_scenario(seed)
    assert len(sent_a) > 100
    assert any(isinstance(m, Forward) for _, m in sent_a)
    assert sent_a == sent_b
    assert replies_a == replies_b


def test_different_seeds_give_different_runs() -> None:
    # the seed reaches the node (request ids, ping phase): the determinism check can fail
    assert run_scenario(1)[0] != run_scenario(2)[0]


def test_run_is_identical_across_processes_and_pythonhashseed() -> None:
    code = "from tests.kvcore.test_node import scenario_digest; print(scenario_digest(7))"
    digests = set()
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(out.stdout.strip())
    assert digests == {scenario_digest(7)}
