"""The peer transport's send path, written inline for speed, against the general code it copies.

``PeerTransport.send`` resolves a destination's address inline (``address_of``'s rules) and a
connected ``PeerLink.send`` frames and counts a message itself (``PeerLink._write``'s work).
These tests hold each copy to the general code: the same link opened at the same address (or the
same drop) for every kind of destination, and the same bytes on the wire, counters and turn
budget for every message written. No sockets: the links' connections are stand-ins.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from kvcore.config import parse_addr
from kvcore.messages import Forward, ForwardReply, Get, Reply
from kvcore.metrics import NodeStats
from realnet.outbound import CONNECTED, PeerLink
from realnet.transport import PeerTransport, TransportConfig


class _Wire:
    """A connected stream that keeps what is written."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.data += data
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def _transport(
    resolve: Any = None, peers: dict[str, tuple[str, int]] | None = None, high_water: int | None = None,
    early: int = TransportConfig.early_write_frames,
) -> PeerTransport:
    config = TransportConfig(early_write_frames=early, write_high_water=high_water or TransportConfig.write_high_water)
    return PeerTransport(
        node_id="a", on_message=lambda src, msg: None, node_stats=NodeStats(),
        rng=random.Random(1), peers=peers, resolve=resolve, config=config,
    )


def _connect(link: PeerLink) -> _Wire:
    wire = _Wire()
    link.state = CONNECTED
    link.transport = wire  # type: ignore[assignment]
    return wire


MEMBERS = {"m": "127.0.0.1:9001", "moved": "127.0.0.1:9002", "blank": "", "bad": "no port"}
STATIC = {"s": ("127.0.0.1", 9101), "moved": ("127.0.0.1", 9102), "blank": ("127.0.0.1", 9103),
          "m": ("127.0.0.1", 9104)}
DESTINATIONS = ["m", "moved", "blank", "bad", "s", "nobody", "a", "@127.0.0.1:9201", "@", "@bad"]


@pytest.mark.parametrize("with_resolve", [True, False])
@pytest.mark.parametrize("dst", DESTINATIONS)
def test_send_resolves_a_destination_as_address_of(dst: str, with_resolve: bool) -> None:
    async def body() -> None:
        t = _transport(MEMBERS.get if with_resolve else None, STATIC)
        try:
            expected = t.address_of(dst)
            t.send(dst, Forward(request_id=1, op=Get(key=b"k")))
            link = t.links.get(dst)
            if expected is None or dst == "a":  # nobody to send to: dropped, nothing opened
                assert link is None
                assert t.stats.dropped == {"unknown_peer" if expected is None else "self": 1}
                return
            try:
                parse_addr(expected)
            except ValueError:  # an address that does not parse: dropped, counted
                assert t.stats.dropped == {"bad_address": 1}
                return
            assert link is not None and link.addr == expected and not t.stats.dropped
        finally:
            await t.close()

    asyncio.run(body())


def _messages() -> list[tuple[str, bytes]]:
    import kvwire

    msgs: list[Any] = [Forward(request_id=i, op=Get(key=b"k%d" % i)) for i in range(5)]
    msgs += [ForwardReply(request_id=9, reply=Reply(value=b"v" * 3000)), ForwardReply(request_id=10, reply=Reply())]
    return [(type(m).__name__, kvwire.pack(m)) for m in msgs]


@pytest.mark.parametrize("early", [8, 2])
@pytest.mark.parametrize("high_water", [1 << 20, 3000])
def test_a_connected_link_writes_as_write_does(high_water: int, early: int) -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        peers = {"b": ("127.0.0.1", 9)}
        fast = _transport(peers=peers, high_water=high_water, early=early)
        general = _transport(peers=peers, high_water=high_water, early=early)
        fl, gl = fast.links["b"], general.links["b"]
        fw, gw = _connect(fl), _connect(gl)
        try:
            for _turn in range(2):
                for kind, data in _messages():
                    fl.send(kind, data)
                    # the general path: the same budget test, then _write
                    out_bytes = gl._out_bytes
                    if gl.paused or (out_bytes and out_bytes + len(data) > high_water):
                        general.stats.drop("backpressure")
                    else:
                        gl._write(kind, data)
                    assert (fl._out, fl._out_bytes) == (gl._out, gl._out_bytes)
                    assert (fw.data, fw.writes) == (gw.data, gw.writes)  # written alike mid-turn
                await asyncio.sleep(0)  # the turn's flush
                await asyncio.sleep(0)
                assert bytes(fw.data) == bytes(gw.data) and fw.data
                assert fast.stats.as_dict() == general.stats.as_dict()
                assert fast.node_stats.as_dict() == general.node_stats.as_dict()
            assert fl.last_used <= loop.time()
            # the small budget turned the large reply away, both ways alike
            assert fast.stats.dropped == ({} if high_water > 4000 else {"backpressure": 2})
        finally:
            await fast.close()
            await general.close()

    asyncio.run(body())


class _Unregistered(Get):  # type: ignore[misc]
    """A class the codec does not know (its name is no kind): encoding it fails."""

    __slots__ = ()


@pytest.mark.parametrize("fresh", [False, True])
def test_send_encodes_as_kvwire_pack(fresh: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``PeerTransport.send`` encodes with the kind's byte writer, or its encoder and msgpack,
    inline: the same bytes as the codec and msgpack give for every kind (``fresh``: with the
    tables empty, every kind takes ``kvwire.pack`` itself), and the same drop for what cannot
    be encoded."""
    import kvwire
    from tests.kvwire.test_frames import MESSAGES

    for msg in MESSAGES:
        kvwire.pack(msg)  # every kind's encoder made (the codec makes them on first use)
    if fresh:
        monkeypatch.setattr("realnet.transport._ENCODERS", {})
        monkeypatch.setattr("realnet.transport._WRITERS", {})
    general = kvwire.pack
    calls: list[Any] = []

    def counted(msg: Any) -> bytes:
        calls.append(msg)
        return general(msg)

    monkeypatch.setattr(kvwire, "pack", counted)

    async def body() -> None:
        t = _transport(peers={"b": ("127.0.0.1", 9)})
        wire = _connect(t.links["b"])
        calls.clear()  # (the transport packs its Hello when it is made)
        try:
            for msg in MESSAGES:
                t.send("b", msg)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert bytes(wire.data) == b"".join(
                kvwire.HEADER.pack(len(p)) + p for p in map(kvwire.frames.pack_general, MESSAGES))
            # only a kind without an encoder yet takes kvwire.pack's own call
            assert calls == (MESSAGES if fresh else [])
            t.send("b", _Unregistered(key=b"k"))
            assert t.stats.dropped == {"encode_error": 1}
        finally:
            await t.close()

    asyncio.run(body())


@pytest.mark.parametrize("early", [1, 3, 8])
def test_a_busy_turns_frames_leave_early_in_doubling_writes_and_the_rest_at_its_end(early: int) -> None:
    """A hundred frames sent in one turn: written once ``early_write_frames`` wait, then each
    time twice as many as the last write (the peer starts on them while the turn goes on, and
    a long burst takes few writes), the rest at the turn's end; the bytes on the wire are the
    frames in order, as with one write. The next turn counts afresh."""
    import kvwire

    async def body() -> None:
        t = _transport(peers={"b": ("127.0.0.1", 9)}, early=early)
        link = t.links["b"]
        wire = _connect(link)
        try:
            for turn in range(2):
                msgs = [Forward(request_id=1000 * turn + i, op=Get(key=b"k%d" % i)) for i in range(100)]
                wire.data.clear()
                wire.writes = 0
                ends, at, total = [], early, 0
                while total + at <= 100:  # where the early writes fall: early, then doubling
                    total += at
                    ends.append(total)
                    at *= 2
                for i, msg in enumerate(msgs, 1):
                    t.send("b", msg)
                    assert wire.writes == sum(1 for e in ends if e <= i), i
                await asyncio.sleep(0)  # the turn's end
                assert wire.writes == len(ends) + (total < 100)
                assert bytes(wire.data) == b"".join(kvwire.frame(m) for m in msgs)
                assert not link._out and link._out_bytes == 0
            assert t.stats.frames_sent == 200
        finally:
            await t.close()

    asyncio.run(body())
