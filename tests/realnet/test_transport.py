"""The peer transport and the asyncio runtime in one process: two transports on 127.0.0.1.

Each test runs its own event loop (``asyncio.run``) and waits on conditions with a deadline;
nothing sleeps a fixed time and no timing is asserted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvcore.messages import Forward, Get, Ping, Pong
from kvcore.metrics import NodeStats
from realnet import wire
from realnet.runtime import AsyncioRuntime, FileStorage, open_storage
from realnet.transport import BACKOFF, CONNECTED, PeerTransport, TransportConfig

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

    def __init__(self, node_id: str, peers: dict[str, tuple[str, int]], **cfg: Any) -> None:
        self.received: list[tuple[str, Any]] = []
        self.stats = NodeStats()
        self.t = PeerTransport(
            node_id=node_id,
            peers=peers,
            on_message=lambda src, msg: self.received.append((src, msg)),
            node_stats=self.stats,
            rng=random.Random(1),
            config=TransportConfig(**cfg),
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
                a.t.send("b", Ping(seq=i, sent_at=1.5))
            b.t.send("a", Forward(request_id=7, op=Get(key=b"k")))
            await until(lambda: len(b.received) == 100 and len(a.received) == 1, "delivery")
            assert b.received == [("a", Ping(seq=i, sent_at=1.5)) for i in range(100)]
            assert a.received == [("b", Forward(request_id=7, op=Get(key=b"k")))]
            ping_size = len(wire.frame(Ping(seq=5, sent_at=1.5)))
            assert b.stats.received_bytes["Ping"] >= 100 * ping_size - 100  # seq widths vary
            assert b.stats.received_bytes["Ping"] == a.stats.sent_bytes["Ping"]
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
                a.t.send("b", Pong(seq=i, sent_at=0.0))
            assert a.t.stats.dropped == {"queue_full": 15}
            await until(lambda: len(b.received) == 10, "the queued messages")
            assert [m.seq for _, m in b.received] == list(range(10))
            a.t.send("nobody", Pong(seq=0, sent_at=0.0))
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
            a.t.send("b", Ping(seq=1, sent_at=0.0))  # nobody listens: refused
            link = a.t.links["b"]
            await until(lambda: link.state == BACKOFF, "backoff")
            assert a.t.stats.dropped == {"connect_failed": 1}
            a.t.send("b", Ping(seq=2, sent_at=0.0))
            assert a.t.stats.dropped["backoff"] == 1
            assert link.last_error  # the reason is kept for /cluster/info
            # b comes up and says Hello on its own link: a reconnects and delivers again
            await b.t.listen("127.0.0.1", pb)
            b.t.connect_all()
            await until(lambda: link.state == CONNECTED, "a's link to b")

            def delivered() -> bool:
                a.t.send("b", Ping(seq=3, sent_at=0.0))
                return any(m.seq == 3 for _, m in b.received)

            await until(delivered, "a message after the reconnect")
        finally:
            await a.t.close()
            await b.t.close()

    asyncio.run(body())


def test_a_closed_inbound_connection_is_reconnected() -> None:
    async def body() -> None:
        pa, pb = free_port(), free_port()
        a = Peer("a", {"b": ("127.0.0.1", pb)}, backoff_min=0.01, backoff_max=0.05)
        b = Peer("b", {"a": ("127.0.0.1", pa)})
        await b.t.listen("127.0.0.1", pb)
        try:
            a.t.send("b", Ping(seq=1, sent_at=0.0))
            await until(lambda: len(b.received) == 1, "first message")
            for proto in list(b.t.inbound):  # b drops the connection
                assert proto.transport is not None
                proto.transport.abort()
            link = a.t.links["b"]
            await until(lambda: a.t.stats.disconnects == 1, "a to notice")
            await until(lambda: link.state == CONNECTED, "the reconnect")
            a.t.send("b", Ping(seq=2, sent_at=0.0))
            await until(lambda: len(b.received) == 2, "a message on the new connection")
        finally:
            await a.t.close()
            await b.t.close()

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
