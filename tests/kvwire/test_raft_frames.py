"""Raft's messages on the cluster bus (#11): registered kinds, same bytes, hostile variants refused.

Every Raft kind goes through kvwire's frames exactly as a node message does; a frame a peer
could forge from one (negative or oversized integers, wrong types, an entry list of the wrong
shape, a snapshot chunk over the frame limit) is refused with ``RemoteProtocolError`` (a
``FrameError`` on a stream) and never reaches, let alone crashes, a node; what decodes but makes
no sense to Raft is counted and dropped by the core.
"""

from __future__ import annotations

import random
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

import kvwire
from kvcore import codec
from kvcore.bounds import INT64_MAX
from kvcore.config import NodeConfig
from kvcore.errors import RemoteProtocolError
from kvcore.messages import REGISTRY
from kvcore.node import Node
from kvcore.raft import MemoryRaftStorage, Raft, RaftConfig
from kvcore.raft.messages import (
    CONF,
    RAFT_MESSAGES,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    RaftAppend,
    RaftAppendResp,
    RaftHeartbeat,
    RaftHeartbeatResp,
    RaftReadIndex,
    RaftReadIndexResp,
    RaftRemoved,
    RaftSnapshot,
    RaftSnapshotResp,
    RaftTimeoutNow,
    RaftVote,
    RaftVoteResp,
    Snapshot,
    SnapshotMeta,
)
from kvcore.runtime import FakeRuntime

CONF_AB = ConfState(voters=("a", "b", "c"), learners=("d",))

SAMPLES: list[Any] = [
    RaftVote(term=2, src="a", dst="b", last_index=3, last_term=1, pre_vote=True),
    RaftVote(term=9, src="a", dst="b", last_index=0, last_term=0, transfer=True),
    RaftVoteResp(term=2, src="b", dst="a", granted=True),
    RaftAppend(term=3, src="a", dst="b", prev_index=4, prev_term=2, commit=4,
               entries=(Entry(term=3, index=5, data=b"x"),
                        Entry(term=3, index=6, kind=CONF, data=b"remove c"),
                        Entry(term=3, index=7))),
    RaftAppend(term=1, src="a", dst="b", prev_index=0, prev_term=0),
    RaftAppendResp(term=2, src="b", dst="a", index=7, reject=True, hint_index=3, hint_term=1),
    RaftAppendResp(term=2, src="b", dst="a", index=INT64_MAX),
    RaftHeartbeat(term=1, src="a", dst="b", commit=3, ctx=b"\x00\xff", stamp=12),
    RaftHeartbeatResp(term=1, src="b", dst="a", ctx=b"7", stamp=3),
    RaftSnapshot(term=2, src="a", dst="b", meta=SnapshotMeta(index=9, term=2, conf=CONF_AB),
                 offset=0, data=b"\x00" * 5, done=False),
    RaftSnapshotResp(term=2, src="b", dst="a", index=9, received=5),
    RaftTimeoutNow(term=4, src="a", dst="b"),
    RaftReadIndex(term=1, src="b", dst="a", ctx=b"r1"),
    RaftReadIndexResp(term=1, src="a", dst="b", ctx=b"r1", index=4),
    Entry(term=1, index=1),
    HardState(term=5, vote="a", commit=3),
    HardState(),
    ConfState(),
    SnapshotMeta(index=2, term=1, conf=CONF_AB),
    Snapshot(meta=SnapshotMeta(index=1, term=1, conf=CONF_AB), data=b"state"),
    ConfChange(op="add-learner", node="d"),
    RaftRemoved(term=3, src="b", dst="a", conf_index=7),
]


def test_every_raft_kind_is_registered_and_sampled() -> None:
    assert {type(m).__name__ for m in SAMPLES} == set(RAFT_MESSAGES)
    for name, cls in RAFT_MESSAGES.items():
        assert REGISTRY[name] is cls


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_raft_message_round_trips_through_frames_with_the_same_bytes(msg: Any) -> None:
    payload = kvwire.pack(msg)
    back = kvwire.unpack(payload)
    assert back == msg and type(back) is type(msg)
    assert kvwire.pack(back) == payload
    # on a stream, chunked one byte at a time
    dec = kvwire.FrameDecoder(NodeConfig().max_frame_bytes)
    data = kvwire.frame(msg) * 2
    got: list[Any] = []
    for i in range(len(data)):
        got += dec.feed(data[i:i + 1])
    assert got == [msg, msg]


def _forged(msg: Any, **changes: Any) -> dict[str, Any]:
    obj = codec.encode(msg)
    obj = msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)  # the wire's form
    obj.update(changes)
    return obj


APPEND = SAMPLES[3]
SNAP = SAMPLES[9]
ENTRY_DICT = {"k": "Entry", "term": 3, "index": 5, "kind": "normal", "data": b"x"}

HOSTILE: list[tuple[str, dict[str, Any]]] = [
    ("negative term", _forged(SAMPLES[0], term=-1)),
    ("term over int64", _forged(SAMPLES[0], term=INT64_MAX + 1)),
    ("term as a string", _forged(SAMPLES[0], term="3")),
    ("term as a float", _forged(SAMPLES[0], term=3.0)),
    ("granted as an int", _forged(SAMPLES[2], granted=1)),
    ("src as bytes", _forged(SAMPLES[2], src=b"b")),
    ("missing dst", {k: v for k, v in _forged(SAMPLES[11]).items() if k != "dst"}),
    ("negative prev_index", _forged(APPEND, prev_index=-5)),
    ("commit over int64", _forged(APPEND, commit=2**64 - 1)),
    ("entries as a map", _forged(APPEND, entries={"0": ENTRY_DICT})),
    ("entries as an int", _forged(APPEND, entries=7)),
    ("entries holding ints", _forged(APPEND, entries=[1, 2])),
    ("entries holding a vote", _forged(APPEND, entries=[codec.encode(SAMPLES[0])])),
    ("an entry without index", _forged(APPEND, entries=[{k: v for k, v in ENTRY_DICT.items() if k != "index"}])),
    ("an entry with str data", _forged(APPEND, entries=[{**ENTRY_DICT, "data": "x"}])),
    ("an entry with a negative index", _forged(APPEND, entries=[{**ENTRY_DICT, "index": -1}])),
    ("an entry of no kind", _forged(APPEND, entries=[{**ENTRY_DICT, "k": "Nope"}])),
    ("meta as bytes", _forged(SNAP, meta=b"meta")),
    ("meta of the wrong kind", _forged(SNAP, meta=codec.encode(HardState()))),
    ("voters as a string", _forged(SNAP, meta={**codec.encode(SNAP.meta), "conf": {"k": "ConfState",
                                                 "voters": "abc", "learners": []}})),
    ("negative offset", _forged(SNAP, offset=-1)),
    ("chunk data as a list", _forged(SNAP, data=[0, 1])),
    ("done as a string", _forged(SNAP, done="yes")),
    ("vote as an int", _forged(SAMPLES[15], vote=1)),
    ("negative conf_index", _forged(SAMPLES[-1], conf_index=-1)),
    ("conf_index as a string", _forged(SAMPLES[-1], conf_index="7")),
    ("nested too deep", _forged(APPEND, entries=[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]])),
]


@pytest.mark.parametrize("obj", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_raft_message_is_refused_with_remote_protocol_error(obj: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError):
        codec.decode(obj)
    payload = msgpack.packb(obj, use_bin_type=True)
    with pytest.raises(kvwire.FrameError) as err:
        kvwire.unpack(payload)
    assert err.value.reason == "malformed"
    # on a stream: the frame is refused and the decoder stays failed (the connection closes)
    dec = kvwire.FrameDecoder(NodeConfig().max_frame_bytes)
    with pytest.raises(kvwire.FrameError):
        dec.feed(kvwire.HEADER.pack(len(payload)) + payload)


def test_snapshot_chunk_over_the_frame_limit_is_refused_before_its_body_is_buffered() -> None:
    limit = NodeConfig().max_frame_bytes
    huge = RaftSnapshot(term=2, src="a", dst="b", meta=SNAP.meta, offset=0,
                        data=b"\x01" * (limit + 1), done=True)
    framed = kvwire.frame(huge)
    dec = kvwire.FrameDecoder(limit)
    with pytest.raises(kvwire.FrameError) as err:
        dec.feed(framed[:4096])  # the length prefix alone condemns it
    assert err.value.reason == "oversized"
    assert dec.buffered <= 4096


def test_a_full_snapshot_chunk_fits_a_peer_frame() -> None:
    """RaftConfig.max_snapshot_chunk (1 MiB) of data plus its envelope fits NodeConfig's frame
    (4 MiB), even with long node ids and a large configuration in the chunk's meta."""
    chunk = RaftConfig(id="a").max_snapshot_chunk
    assert chunk == 1 << 20
    ids = tuple(f"node-{i:03d}-" + "x" * 200 for i in range(64))
    meta = SnapshotMeta(index=INT64_MAX, term=INT64_MAX, conf=ConfState(voters=ids[:7], learners=ids[7:]))
    msg = RaftSnapshot(term=INT64_MAX, src=ids[0], dst=ids[1], meta=meta, offset=INT64_MAX,
                       data=b"\xff" * chunk, done=True)
    framed = kvwire.frame(msg)
    limit = NodeConfig().max_frame_bytes
    assert len(framed) - 4 <= limit
    assert kvwire.FrameDecoder(limit).feed(framed) == [msg]


def test_the_chunks_a_leader_sends_fit_a_peer_frame_and_arrive_whole() -> None:
    """A lagging follower gets a 3 MiB snapshot in default-size chunks; each chunk the leader
    actually sends is packed by kvwire, fits the peer frame and decodes to itself."""
    from tests.kvcore.raft.harness import Network  # the core's in-memory network

    net = Network(["1", "2", "3"])
    net.elect("1")
    net.isolate("3")
    for i in range(4):
        net.propose("1", f"v{i}".encode())
    net.stabilize()
    big = random.Random(1).randbytes(3 * (1 << 20) + 17)
    net.raft("1").compact(net.raft("1").log.applied, big)
    net.stabilize()
    net.recover()
    limit = NodeConfig().max_frame_bytes
    chunks: list[RaftSnapshot] = []
    orig = net.deliver

    def through_the_wire(m: Any) -> None:
        payload = kvwire.pack(m)
        assert len(payload) <= limit
        back = kvwire.unpack(payload)
        if isinstance(back, RaftSnapshot):
            chunks.append(back)
        orig(back)

    net.deliver = through_the_wire  # type: ignore[method-assign]
    for _ in range(20):
        net.tick_all(1)
        if net.nodes["3"].snapshot_data == big:
            break
    assert len(chunks) >= 4 and max(len(c.data) for c in chunks) == 1 << 20
    assert net.nodes["3"].snapshot_data == big


def _raft(me: str = "1") -> Raft:
    return Raft(RaftConfig(id=me), MemoryRaftStorage(["1", "2"]).load(), random.Random(0))


@pytest.mark.parametrize("data", [b"\xff\xfe remove 2", b"explode 2", b"remove ", b"promote a b", b""])
def test_a_bad_configuration_entry_is_dropped_by_the_core(data: bytes) -> None:
    """A CONF entry that is not "OP NODE" would be decoded when a follower appends it; the core
    refuses the whole AppendEntries instead (counted in ``dropped``), so nothing raises."""
    m = RaftAppend(term=1, src="2", dst="1", prev_index=0, prev_term=0,
                   entries=(Entry(term=1, index=1, kind=CONF, data=data),))
    r = _raft()
    r.step(kvwire.unpack(kvwire.pack(m)))
    assert r.dropped == 1 and r.log.last_index() == 0


def test_an_entry_of_an_unknown_kind_is_dropped_by_the_core() -> None:
    m = RaftAppend(term=1, src="2", dst="1", prev_index=0, prev_term=0,
                   entries=(Entry(term=1, index=1, kind="other", data=b"x"),))
    r = _raft()
    r.step(m)
    assert r.dropped == 1 and r.log.last_index() == 0


def test_a_good_configuration_entry_is_taken() -> None:
    m = RaftAppend(term=1, src="2", dst="1", prev_index=0, prev_term=0,
                   entries=(Entry(term=1, index=1, kind=CONF, data=b"add-learner 3"),))
    r = _raft()
    r.step(kvwire.unpack(kvwire.pack(m)))
    assert r.dropped == 0 and r.log.last_index() == 1


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_a_node_without_a_group_counts_raft_messages_as_malformed(msg: Any) -> None:
    """A node that runs no Raft group has no table for these kinds: counted, dropped, no raise."""
    node = Node(FakeRuntime("a", seed=1), NodeConfig())
    before = node.stats.malformed
    node.on_message("b", kvwire.unpack(kvwire.pack(msg)))
    assert node.stats.malformed == before + 1


def test_a_node_in_a_group_takes_hostile_raft_messages_without_raising() -> None:
    """The same hostile-but-decodable messages reach a node that runs a group: each is counted
    (the core's ``dropped``, or the group's wrong-sender check) and nothing raises or changes
    the log."""
    rt = FakeRuntime("a", seed=2)
    node = Node(rt, NodeConfig())
    node.start()
    node.form_group(["a", "b", "c"])
    group = node.replica
    assert group is not None
    last = group.raft.log.last_index()
    term = group.raft.term
    hostile: list[tuple[str, Any]] = [
        ("b", RaftAppend(term=term + 1, src="b", dst="a", prev_index=last, prev_term=1,
                         entries=(Entry(term=term + 1, index=last + 1, kind=CONF, data=b"\xff\xfe"),))),
        ("b", RaftAppend(term=term + 1, src="b", dst="a", prev_index=last, prev_term=1,
                         entries=(Entry(term=term + 1, index=last + 5),))),
        ("b", RaftAppend(term=term + 1, src="b", dst="a", prev_index=last, prev_term=1,
                         entries=(Entry(term=term + 1, index=last + 1, kind="weird"),))),
        ("b", RaftVote(term=term + 1, src="c", dst="a", last_index=0, last_term=0)),  # not its sender
        ("b", RaftVote(term=term + 1, src="b", dst="z", last_index=0, last_term=0)),  # not for us
        ("b", RaftSnapshot(term=term + 1, src="b", dst="a", meta=SnapshotMeta(index=0, term=0),
                           offset=0, data=b"", done=True)),
    ]
    def counted() -> int:
        return node.stats.malformed + group.raft.dropped + group.stats.dropped

    for src, m in hostile:
        before = counted()
        node.on_message(src, kvwire.unpack(kvwire.pack(m)))
        rt.advance(0.0)
        assert counted() > before, m
    assert group.raft.log.last_index() == last and group.raft.term == term
