"""The peer transport and the asyncio runtime in one process: two transports on 127.0.0.1.

Each test runs its own event loop (``asyncio.run``) and waits on conditions with a deadline;
nothing sleeps a fixed time and no timing is asserted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import kvwire
from kvcore.messages import Forward, Get, Nack, SwimAck, SwimPing
from kvcore.metrics import NodeStats
from realnet.gossip import RttMeter
from realnet.runtime import AsyncioRuntime, FileStorage, open_storage
from realnet.transport import BACKOFF, CONNECTED, IDLE, PeerTransport, TransportConfig

DEADLINE = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(cond: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Peer:
    """A transport plus what it received."""

    def __init__(
        self,
        node_id: str,
        peers: dict[str, tuple[str, int]],
        *,
        members: dict[str, str] | None = None,
        cluster_name: str = "",
        **cfg: Any,
    ) -> None:
        self.received: list[tuple[str, Any]] = []
        self.stats = NodeStats()
        #: what gossip membership would say: id -> "HOST:PORT" (tests change it at will)
        self.members: dict[str, str] = members if members is not None else {}
        self.t = PeerTransport(
            node_id=node_id,
            peers=peers,
            resolve=self.members.get,
            on_message=lambda src, msg: self.received.append((src, msg)),
            node_stats=self.stats,
            rng=random.Random(1),
            config=TransportConfig(**cfg),
            cluster_name=cluster_name,
        )


def test_messages_flow_both_ways_with_the_sender_named_and_bytes_counted() -> None:
    async def body() -> None:
        pa, pb = free_port(), free_port()
        a = Peer("a", {"b": ("127.0.0.1", pb)})
        b = Peer("b", {"a": ("127.0.0.1", pa)})
        await a.t.listen("127.0.0.1", pa)
        await b.t.listen("127.0.0.1", pb)
        try:
            for i in range(100):
                a.t.send("b", SwimAck(seq=i, gossip=()))
            b.t.send("a", Forward(request_id=7, op=Get(key=b"k")))
            await until(lambda: len(b.received) == 100 and len(a.received) == 1, "delivery")
            assert b.received == [("a", SwimAck(seq=i, gossip=())) for i in range(100)]
            assert a.received == [("b", Forward(request_id=7, op=Get(key=b"k")))]
            ack_size = len(kvwire.frame(SwimAck(seq=5, gossip=())))
            assert b.stats.received_bytes["SwimAck"] >= 100 * ack_size - 100  # seq widths vary
            assert b.stats.received_bytes["SwimAck"] == a.stats.sent_bytes["SwimAck"]
            assert a.stats.sent_bytes["Hello"] == b.stats.received_bytes["Hello"] > 0
            assert a.t.links["b"].state == CONNECTED
        finally:
            await a.t.close()
            await b.t.close()

    asyncio.run(body())


def test_sends_while_connecting_are_queued_up_to_the_limit() -> None:
    async def body() -> None:
        pa, pb = free_port(), free_port()
        a = Peer("a", {"b": ("127.0.0.1", pb)}, queue_limit=10)
        b = Peer("b", {"a": ("127.0.0.1", pa)})
        await b.t.listen("127.0.0.1", pb)
        try:
            for i in range(25):  # all before the loop runs: the link is still connecting
                a.t.send("b", Nack(seq=i))
            assert a.t.stats.dropped == {"queue_full": 15}
            await until(lambda: len(b.received) == 10, "the queued messages")
            assert [m.seq for _, m in b.received] == list(range(10))
            a.t.send("nobody", Nack(seq=0))
            assert a.t.stats.dropped["unknown_peer"] == 1
        finally:
            await a.t.close()
            await b.t.close()

    asyncio.run(body())


def test_a_down_peer_means_backoff_and_drops_until_it_comes_up() -> None:
    async def body() -> None:
        pa, pb = free_port(), free_port()
        a = Peer("a", {"b": ("127.0.0.1", pb)}, backoff_min=0.05, backoff_max=0.2)
        b = Peer("b", {"a": ("127.0.0.1", pa)})
        await a.t.listen("127.0.0.1", pa)
        try:
            a.t.send("b", Nack(seq=1))  # nobody listens: refused
            link = a.t.links["b"]
            await until(lambda: link.state == BACKOFF, "backoff")
            assert a.t.stats.dropped == {"connect_failed": 1}
            a.t.send("b", Nack(seq=2))
            assert a.t.stats.dropped["backoff"] == 1
            assert link.last_error  # the reason is kept for /cluster/info
            # b comes up and says Hello on its own link: a reconnects and delivers again
            await b.t.listen("127.0.0.1", pb)
            b.t.connect_all()
            await until(lambda: link.state == CONNECTED, "a's link to b")

            def delivered() -> bool:
                a.t.send("b", Nack(seq=3))
                return any(m.seq == 3 for _, m in b.received)

            await until(delivered, "a message after the reconnect")
        finally:
            await a.t.close()
            await b.t.close()

    asyncio.run(body())


def test_a_closed_connection_is_reconnected() -> None:
    async def body() -> None:
        pa, pb = free_port(), free_port()
        a = Peer(
            "a", {"b": ("127.0.0.1", pb)}, backoff_min=0.01, backoff_max=0.05, stable_after=0.05
        )
        b = Peer("b", {"a": ("127.0.0.1", pa)})
        await b.t.listen("127.0.0.1", pb)
        try:
            link = a.t.links["b"]
            a.t.send("b", Nack(seq=1))
            await until(lambda: len(b.received) == 1, "first message")
            # a connection that served for a while comes back at once, unasked
            await until(lambda: link.connected_for() >= 0.05, "the connection to be stable")
            for proto in list(b.t.inbound):  # b drops the connection
                assert proto.transport is not None
                proto.transport.abort()
            await until(lambda: a.t.stats.disconnects == 1, "a to notice")
            await until(lambda: link.state == CONNECTED, "the reconnect")
            a.t.send("b", Nack(seq=2))
            await until(lambda: len(b.received) == 2, "a message on the new connection")
            # dropped again at once (as a peer that refuses us does): back only when asked
            a.t.config = dataclasses.replace(a.t.config, stable_after=60.0)
            for proto in list(b.t.inbound):
                assert proto.transport is not None
                proto.transport.abort()
            await until(lambda: link.state == IDLE, "the link to wait, idle")
            assert a.t.stats.connects == 2
            a.t.send("b", Nack(seq=3))
            await until(lambda: len(b.received) == 3, "a message on a third connection")
        finally:
            await a.t.close()
            await b.t.close()

    asyncio.run(body())


def test_an_at_address_reaches_whoever_listens_there_and_unknown_ids_are_welcome() -> None:
    """How a node joins through a seed: it knows the seed's address, not its id."""

    async def body() -> None:
        pa, pb = free_port(), free_port()
        a = Peer("a", {})  # no static peers at all
        b = Peer("b", {})
        await a.t.listen("127.0.0.1", pa)
        await b.t.listen("127.0.0.1", pb)
        try:
            a.t.send(f"@127.0.0.1:{pb}", Nack(seq=1))
            await until(lambda: b.received == [("a", Nack(seq=1))], "the message to the address")
            # b never heard of a: it answers on the connection a opened (its Hello names it)...
            b.t.send("a", Nack(seq=2))
            await until(lambda: a.received == [("b", Nack(seq=2))], "the answer sent back")
            assert b.t.stats.sent_back == 1 and a.t.stats.received_back == 1 and not b.t.stats.dropped
            b.t.send("c", Nack(seq=0))  # ...and drops what is for a node with neither
            assert b.t.stats.dropped == {"unknown_peer": 1}
            # once membership tells it where a listens, it answers on its own link
            b.members["a"] = f"127.0.0.1:{pa}"
            b.t.send("a", Nack(seq=3))
            await until(lambda: a.received[1:] == [("b", Nack(seq=3))], "the answer on b's own link")
            assert set(a.t.links) == {f"@127.0.0.1:{pb}"} and set(b.t.links) == {"a"}
            assert b.t.stats.sent_back == 1
        finally:
            await a.t.close()
            await b.t.close()

    asyncio.run(body())


def test_membership_beats_the_static_address_and_a_moved_member_is_redialled() -> None:
    async def body() -> None:
        pb, pb2 = free_port(), free_port()
        a = Peer("a", {"b": ("127.0.0.1", pb)})  # static config: b at pb
        b = Peer("b", {})
        b2 = Peer("b", {})  # b restarted elsewhere
        await b.t.listen("127.0.0.1", pb)
        await b2.t.listen("127.0.0.1", pb2)
        try:
            a.t.send("b", Nack(seq=1))  # membership knows nothing: the static address
            await until(lambda: len(b.received) == 1, "delivery at the static address")
            a.members["b"] = f"127.0.0.1:{pb2}"  # gossip says b moved
            a.t.send("b", Nack(seq=2))
            await until(lambda: len(b2.received) == 1, "delivery at the new address")
            assert b2.received == [("a", Nack(seq=2))] and len(b.received) == 1
            assert a.t.stats.links_closed == {"moved": 1}
            assert a.t.links["b"].addr == f"127.0.0.1:{pb2}"
            # an address gossip made up is dropped and counted, never raised
            a.members["c"] = "no port here"
            a.t.send("c", Nack(seq=3))
            a.t.send("a", Nack(seq=4))  # ourselves: never dialled
            assert a.t.stats.dropped == {"bad_address": 1, "unknown_peer": 1}
            assert "c" not in a.t.links
        finally:
            for p in (a, b, b2):
                await p.t.close()

    asyncio.run(body())


def test_a_failed_link_redials_only_when_there_is_something_to_send() -> None:
    """A dead member costs one connection attempt per message, not an endless redial loop."""

    async def body() -> None:
        pb = free_port()  # nobody listens there
        a = Peer("a", {"b": ("127.0.0.1", pb)}, backoff_min=0.01, backoff_max=0.02)
        try:
            a.t.send("b", Nack(seq=1))
            link = a.t.links["b"]
            await until(lambda: link.state == IDLE and link.failures == 1, "backoff to end idle")
            # no demand: the expired backoff did not dial again
            assert a.t.stats.connect_failures == 1 and link.state == IDLE
            a.t.send("b", Nack(seq=2))  # demand: dial again
            await until(lambda: a.t.stats.connect_failures == 2, "the second attempt")
            await until(lambda: link.state == IDLE, "idle again")
            assert a.t.stats.connect_failures == 2
        finally:
            await a.t.close()

    asyncio.run(body())


def test_idle_and_forgotten_links_are_closed_and_reopened_on_demand() -> None:
    async def body() -> None:
        pb = free_port()
        a = Peer("a", {}, members={"b": f"127.0.0.1:{pb}"}, idle_timeout=0.3)
        b = Peer("b", {})
        await b.t.listen("127.0.0.1", pb)
        try:
            a.t.send(f"@127.0.0.1:{pb}", Nack(seq=1))
            a.t.send("b", Nack(seq=2))
            await until(lambda: len(b.received) == 2, "both messages")

            def inbound_from_a() -> int:
                return sum(1 for p in b.t.inbound if p.peer == "a")

            await until(lambda: inbound_from_a() == 2, "two connections from a")
            a.t.forget("b")  # membership: b left
            assert set(a.t.links) == {f"@127.0.0.1:{pb}"}
            await until(lambda: inbound_from_a() == 1, "b to see that connection closed")
            # the seed-address link is used no more: the sweep closes it
            await until(lambda: not a.t.links, "the idle sweep")
            assert a.t.stats.links_closed == {"forgotten": 1, "idle": 1}
            await until(lambda: inbound_from_a() == 0, "b to see the idle link closed")
            a.t.send("b", Nack(seq=3))  # still a member after all: a new link
            await until(lambda: len(b.received) == 3, "a message on a new link")
        finally:
            await a.t.close()
            await b.t.close()

    asyncio.run(body())


def test_a_hello_from_another_named_cluster_is_refused() -> None:
    async def body() -> None:
        pb = free_port()
        a = Peer("a", {"b": ("127.0.0.1", pb)}, cluster_name="blue")
        b = Peer("b", {}, cluster_name="green")
        other = Peer("c", {"b": ("127.0.0.1", pb)})  # no name: accepted by anyone
        await b.t.listen("127.0.0.1", pb)
        try:
            a.t.send("b", Nack(seq=1))
            other.t.send("b", Nack(seq=2))
            await until(lambda: b.received == [("c", Nack(seq=2))], "the unnamed peer's message")
            await until(
                lambda: b.t.stats.frames_malformed.get("cluster_mismatch") == 1, "the refusal"
            )
        finally:
            for p in (a, b, other):
                await p.t.close()

    asyncio.run(body())


def test_a_timer_that_raises_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> list[str]:
        rt = AsyncioRuntime("n1")
        seen: list[str] = []

        def boom() -> None:
            raise RuntimeError("boom")

        rt.call_later(0.0, boom)
        rt.call_later(0.01, lambda: seen.append("later"))
        h = rt.call_later(0.0, lambda: seen.append("cancelled"))
        h.cancel()
        assert abs(rt.now() - asyncio.get_running_loop().time()) < 1.0
        await until(lambda: bool(seen), "the second timer")
        assert rt.timer_errors == 1
        return seen

    with caplog.at_level(logging.ERROR, logger="realnet.runtime"):
        assert asyncio.run(body()) == ["later"]
    assert "boom" in caplog.text


def test_file_storage_round_trips_any_key(tmp_path: Path) -> None:
    s = FileStorage(tmp_path / "d")
    for key in ("node_id", "../etc/passwd", ".hidden", "a/b", "é ü", "raft:term"):
        assert s.get(key) is None
        s.put(key, key.encode() * 3)
    again = FileStorage(tmp_path / "d")
    for key in ("node_id", "../etc/passwd", ".hidden", "a/b", "é ü", "raft:term"):
        assert again.get(key) == key.encode() * 3
    assert all(p.parent == tmp_path / "d" for p in (tmp_path / "d").iterdir())
    assert not list((tmp_path / "d").glob("*.tmp"))
    assert type(open_storage(None)).__name__ == "MemoryStorage"


def test_file_storage_deletes_lists_by_prefix_and_takes_long_keys(tmp_path: Path) -> None:
    """What the durable store needs: kv:<hex of a key of up to 1 KiB>, listed back at start."""
    s = FileStorage(tmp_path / "d")
    long_keys = ["kv:" + bytes([i]).hex() * 1024 for i in range(3)]  # 2 KiB names: hashed
    for i, k in enumerate(long_keys):
        s.put(k, b"long-%d" % i)
    s.put("kv:61", b"a")
    s.put("kv:", b"empty key")
    s.put("mark:importing:7", b"n2")
    s.put("swim.incarnation", b"3")
    assert all(len(p.name) < 255 for p in (tmp_path / "d").iterdir())
    assert s.get(long_keys[1]) == b"long-1"
    again = FileStorage(tmp_path / "d")
    assert again.items("kv:") == sorted(
        [("kv:", b"empty key"), ("kv:61", b"a"), *((k, b"long-%d" % i) for i, k in enumerate(long_keys))]
    )
    assert again.items("mark:") == [("mark:importing:7", b"n2")]
    assert again.items("nothing") == []
    again.delete(long_keys[0])
    again.delete("kv:61")
    again.delete("kv:61")  # absent: fine
    assert again.get(long_keys[0]) is None and again.get("kv:61") is None
    assert [k for k, _ in FileStorage(tmp_path / "d").items("kv:")] == ["kv:", *sorted(long_keys[1:])]
    (tmp_path / "d" / "stray.val.tmp").write_bytes(b"torn")  # a put that crashed: ignored
    assert [k for k, _ in again.items("")] == sorted(
        ["kv:", *long_keys[1:], "mark:importing:7", "swim.incarnation"]
    )


def test_probe_rtts_are_smoothed_and_relayed_acks_are_not_samples() -> None:
    now = [0.0]
    meter = RttMeter(lambda: now[0], max_pending=2)
    meter.sent("b", SwimPing(seq=1, target="b", gossip=()))
    now[0] = 0.5
    meter.received("c", SwimAck(seq=1, gossip=()))  # an indirect ack relayed by helper c
    assert meter.srtt == {} and meter.samples == 0
    meter.sent("b", SwimPing(seq=2, target="b", gossip=()))
    now[0] = 0.51
    meter.received("b", SwimAck(seq=2, gossip=()))
    assert meter.srtt["b"] == pytest.approx(0.01)
    meter.sent("b", SwimPing(seq=3, target="b", gossip=()))
    now[0] = 0.53
    meter.received("b", SwimAck(seq=3, gossip=()))
    assert meter.srtt["b"] == pytest.approx(0.01 + (0.02 - 0.01) / 8)  # RFC 6298's 1/8 gain
    meter.received("b", SwimAck(seq=3, gossip=()))  # a duplicate: no second sample
    assert meter.samples == 2
    for seq in (4, 5, 6):  # never answered: only the newest max_pending are remembered
        meter.sent("b", SwimPing(seq=seq, target="b", gossip=()))
    meter.received("b", SwimAck(seq=4, gossip=()))
    assert meter.samples == 2
    meter.forget("b")
    assert meter.srtt == {}


def test_file_storage_sync_is_a_no_op_because_every_write_is_synced(tmp_path: Path) -> None:
    s = FileStorage(tmp_path / "d")
    s.put("a", b"1")
    s.sync()
    s.delete("a")
    s.sync()
    s.put("b", b"2")
    assert FileStorage(tmp_path / "d").items("") == [("b", b"2")]


def test_a_forward_from_a_peer_not_known_yet_is_answered_on_its_own_connection() -> None:
    """The gap: a node that just joined forwards a client request to the owner, which has no
    address for it yet (gossip has not told it); the ForwardReply used to be dropped
    (``unknown_peer``) and the client got 504. Now it goes back on the connection the Forward
    came in on, from the peer the dialler reached, and what it says is delivered in order."""
    from kvcore.messages import ForwardReply, Reply

    async def body() -> None:
        pa, pb = free_port(), free_port()
        a = Peer("a", {"b": ("127.0.0.1", pb)})  # a knows where b listens
        b = Peer("b", {})  # b knows nobody
        await a.t.listen("127.0.0.1", pa)
        await b.t.listen("127.0.0.1", pb)
        try:
            a.t.send("b", Forward(request_id=7, op=Get(key=b"k")))
            await until(lambda: b.received == [("a", Forward(request_id=7, op=Get(key=b"k")))], "the forward")
            big = b"v" * 300_000  # larger than any handshake frame
            for i in range(3):
                b.t.send("a", ForwardReply(request_id=7 + i, reply=Reply(value=big if i == 1 else b"x")))
            await until(lambda: len(a.received) == 3, "the replies sent back")
            assert [(src, m.request_id) for src, m in a.received] == [("b", 7), ("b", 8), ("b", 9)]
            assert a.received[1][1].reply.value == big
            assert b.t.stats.sent_back == 3 and a.t.stats.received_back == 3
            assert "unknown_peer" not in b.t.stats.dropped and not b.t.links
            assert a.stats.received_bytes["ForwardReply"] == b.stats.sent_bytes["ForwardReply"] > 300_000
            assert a.t.links["b"].state == CONNECTED and not a.t.stats.frames_malformed
        finally:
            await a.t.close()
            await b.t.close()

    asyncio.run(body())


def test_one_turn_cannot_buffer_more_than_the_high_water_mark_for_a_peer() -> None:
    """A peer that does not read (a stopped process) gets at most ``write_high_water`` bytes
    buffered, counting the frames written this turn and not yet handed to the socket: a burst
    of large messages in one turn (Raft appends, snapshot chunks) is dropped past it, counted
    as backpressure, instead of queueing without bound (the audit: a leader at 7 GB)."""
    from kvcore.raft.messages import ConfState, RaftSnapshot, SnapshotMeta

    async def body() -> None:
        pb = free_port()
        mute = socket.socket()  # accepts (the kernel's backlog) and never reads
        mute.bind(("127.0.0.1", pb))
        mute.listen(8)
        high = 256 * 1024
        a = Peer("a", {"b": ("127.0.0.1", pb)}, write_high_water=high)
        try:
            a.t.send("b", Nack(seq=0))
            await until(lambda: a.t.links["b"].state == CONNECTED, "the connection")
            await asyncio.sleep(0.05)
            meta = SnapshotMeta(index=9, term=1, conf=ConfState(voters=("a", "b")))
            chunk = 32 * 1024
            for i in range(100):  # 3.2 MB in one turn
                a.t.send("b", RaftSnapshot(term=1, src="a", dst="b", meta=meta, offset=i * chunk,
                                           data=b"x" * chunk, done=False))
            sent = 100 - a.t.stats.dropped.get("backpressure", 0)
            assert 1 <= sent <= high // chunk
            await asyncio.sleep(0.05)
            link = a.t.links["b"]
            assert link.transport is not None
            assert link.transport.get_write_buffer_size() <= high
        finally:
            await a.t.close()
            mute.close()

    asyncio.run(body())
