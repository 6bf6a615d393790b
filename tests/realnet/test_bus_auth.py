"""The authenticated cluster bus in one process: transports on 127.0.0.1 with and without keys.

Each test runs its own event loop and waits on conditions with a deadline; secrets are made
per run. What a peer without the key can do is the point: nothing reaches the node, the refusal
is counted and logged on both sides, and a flood of hostile connections writes a few lines.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from typing import Any

import pytest

import kvwire
from kvcore.messages import Alive, Gossip, Hello, Nack
from kvwire import auth
from kvwire.auth import ClientHandshake, Keyring
from realnet.transport import CONNECTED

from .test_transport import Peer, free_port, until


def new_ring(*extra: Keyring) -> Keyring:
    key = base64.b64encode(secrets.token_bytes(32))
    return Keyring((key, *(k for r in extra for k in r.keys)))


def keyed(node_id: str, peers: dict[str, tuple[str, int]], ring: Keyring | None, **cfg: Any) -> Peer:
    p = Peer(node_id, peers, **cfg)
    p.t.keyring = ring
    return p


async def close_all(*peers: Peer) -> None:
    for p in peers:
        await p.t.close()


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    n = int.from_bytes(await reader.readexactly(4), "big")
    return await reader.readexactly(n)


async def raw_handshake(
    port: int, ring: Keyring, node_id: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, auth.Session]:
    """Dial as a client that holds ``ring`` and run the handshake by hand."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hs = ClientHandshake(ring, node_id)
    writer.write(hs.hello())
    fields = auth.handshake_fields(await read_frame(reader))
    assert fields is not None
    proof, session = hs.on_challenge(fields)
    writer.write(proof)
    return reader, writer, session


def test_two_nodes_with_one_secret_talk_and_the_link_is_authenticated() -> None:
    async def body() -> None:
        ring = new_ring()
        pa, pb = free_port(), free_port()
        a = keyed("a", {"b": ("127.0.0.1", pb)}, ring)
        b = keyed("b", {"a": ("127.0.0.1", pa)}, ring)
        await a.t.listen("127.0.0.1", pa)
        await b.t.listen("127.0.0.1", pb)
        try:
            for i in range(50):
                a.t.send("b", Nack(seq=i))
            b.t.send("a", Nack(seq=99))
            await until(lambda: len(b.received) == 50 and len(a.received) == 1, "delivery")
            assert b.received == [("a", Nack(seq=i)) for i in range(50)]
            assert a.t.links["b"].state == CONNECTED and a.t.links["b"].session is not None
            assert b.t.stats.frames_malformed == {}
        finally:
            await close_all(a, b)

    asyncio.run(body())


@pytest.mark.parametrize(
    ("dialler_has", "listener_has", "dialler_log", "listener_log", "reason"),
    [
        ("other", "key", "cluster secret differs", "cluster secret differs", "unknown_key"),
        ("none", "key", "requires a cluster secret", "has no cluster secret", "no_secret"),
        ("key", "none", "has no cluster secret", "uses a cluster secret", "secret_unexpected"),
    ],
)
def test_a_peer_with_another_or_no_secret_is_refused_with_a_sentence_on_both_sides(
    caplog: pytest.LogCaptureFixture,
    dialler_has: str, listener_has: str, dialler_log: str, listener_log: str, reason: str,
) -> None:
    async def body() -> None:
        ring = new_ring()
        rings = {"key": ring, "other": new_ring(), "none": None}
        pb = free_port()
        a = keyed("a", {"b": ("127.0.0.1", pb)}, rings[dialler_has])
        b = keyed("b", {}, rings[listener_has])
        await b.t.listen("127.0.0.1", pb)
        try:
            a.t.send("b", Gossip(updates=()))
            await until(lambda: b.t.stats.frames_malformed.get(reason, 0) >= 1, "the refusal")
            if dialler_has != "none":
                await until(lambda: sum(a.t.stats.handshakes_failed.values()) >= 1,
                            "the dialler's count")
            else:  # an open node hears the refusal as a sentence, not as a handshake failure
                await until(lambda: dialler_log in caplog.text, "the dialler's log line")
            assert b.received == []
        finally:
            await close_all(a, b)

    with caplog.at_level(logging.INFO, logger="realnet.transport"):
        asyncio.run(body())
    lines = [r.getMessage() for r in caplog.records]
    assert any(dialler_log in m and "refused" in m for m in lines), lines
    assert any(listener_log in m for m in lines), lines


def test_an_open_dialler_logs_the_refusal_it_is_sent() -> None:
    # what an open node does with a refusal frame on its one-way link: it says it
    async def body() -> None:
        pb = free_port()
        a = keyed("a", {"b": ("127.0.0.1", pb)}, None)
        b = keyed("b", {}, new_ring())
        await b.t.listen("127.0.0.1", pb)
        try:
            a.t.send("b", Nack(seq=1))
            await until(lambda: a.t.stats.handshakes_failed.get("refused_by_peer", 0) >= 1,
                        "the open dialler hears the refusal")
        finally:
            await close_all(a, b)

    asyncio.run(body())


def test_the_forged_alive_of_the_issue_changes_nothing_on_a_node_with_a_secret() -> None:
    # A Hello then a Gossip carrying Alive{node: "evil", slots: 0-16383, epoch: 1000}: the
    # attack of issue 10. Without the key it never reaches the node.
    async def body() -> None:
        pb = free_port()
        b = keyed("b", {}, new_ring())
        await b.t.listen("127.0.0.1", pb)
        evil = Alive(node="evil", incarnation=5, addr="127.0.0.1:1", peer_addr="127.0.0.1:2",
                     slots="0-16383", epoch=1000)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", pb)
            writer.write(kvwire.frame(Hello(node_id="evil")) + kvwire.frame(Gossip(updates=(evil,))))
            answer = auth.handshake_fields(await read_frame(reader))
            assert answer is not None and answer["auth"] == "refused"
            assert await reader.read() == b""  # then closed
            writer.close()
            assert b.received == []
            assert b.t.stats.frames_malformed == {"no_secret": 1}
        finally:
            await close_all(b)

    asyncio.run(body())


def test_a_member_cannot_say_hello_for_another_id() -> None:
    async def body() -> None:
        ring = new_ring()
        pb = free_port()
        b = keyed("b", {}, ring)
        await b.t.listen("127.0.0.1", pb)
        try:
            _reader, writer, session = await raw_handshake(pb, ring, "a")
            writer.write(session.seal(kvwire.pack(Hello(node_id="c"))))
            writer.write(session.seal(kvwire.pack(Nack(seq=1))))
            await until(lambda: b.t.stats.frames_malformed.get("wrong_sender") == 1, "refusal")
            assert b.received == []
            writer.close()
            # the same member, naming itself, is heard
            _reader, writer, session = await raw_handshake(pb, ring, "a")
            writer.write(session.seal(kvwire.pack(Hello(node_id="a"))))
            writer.write(session.seal(kvwire.pack(Nack(seq=2))))
            await until(lambda: b.received == [("a", Nack(seq=2))], "the honest member")
            # and a replayed frame closes its connection
            writer.write(_replay(session))
            await until(lambda: b.t.stats.frames_malformed.get("auth_failed") == 1, "replay")
            assert b.received == [("a", Nack(seq=2))]
            writer.close()
        finally:
            await close_all(b)

    asyncio.run(body())


def _replay(session: auth.Session) -> bytes:
    """A valid frame for an earlier sequence number (what a replay looks like on the wire)."""
    session._send_seq -= 2  # type: ignore[attr-defined]
    return session.seal(kvwire.pack(Nack(seq=2)))


def test_a_flood_of_hostile_connections_writes_a_few_lines_and_every_one_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> Peer:
        pb = free_port()
        b = keyed("b", {}, new_ring())
        await b.t.listen("127.0.0.1", pb)
        hostile = [
            kvwire.frame(Hello(node_id="x")),
            b"\x00\x00\x00\x05" + secrets.token_bytes(5),
            b"\xff\xff\xff\xff",
            auth.refusal("no"),
            ClientHandshake(new_ring(), "x").hello(),
        ]
        n = 300
        for i in range(n):
            _, writer = await asyncio.open_connection("127.0.0.1", pb)
            writer.write(hostile[i % len(hostile)])
            await writer.drain()
            writer.close()
        await until(lambda: sum(b.t.stats.frames_malformed.values()) >= n, "every refusal")
        await close_all(b)
        return b

    with caplog.at_level(logging.DEBUG, logger="realnet.transport"):
        b = asyncio.run(body())
    assert b.received == []
    warnings = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(warnings) <= 30, len(warnings)
    assert b.t.ratelog.suppressed_total >= 250


def test_connections_that_never_say_hello_cannot_keep_a_member_out() -> None:
    async def body() -> None:
        ring = new_ring()
        pa, pb = free_port(), free_port()
        b = keyed("b", {}, ring, max_inbound_pending=8, hello_timeout=60.0)
        a = keyed("a", {"b": ("127.0.0.1", pb)}, ring)
        await b.t.listen("127.0.0.1", pb)
        await a.t.listen("127.0.0.1", pa)
        squatters = [await asyncio.open_connection("127.0.0.1", pb) for _ in range(20)]
        try:
            await until(lambda: b.t.stats.frames_malformed.get("evicted", 0) >= 12, "evictions")
            a.t.send("b", Nack(seq=1))
            await until(lambda: b.received == [("a", Nack(seq=1))], "the member gets through")
            assert len(b.t.pending) <= 8
        finally:
            for _, w in squatters:
                w.close()
            await close_all(a, b)

    asyncio.run(body())


def test_an_inbound_connection_that_goes_quiet_after_its_hello_is_closed() -> None:
    async def body() -> None:
        ring = new_ring()
        pb = free_port()
        b = keyed("b", {}, ring, inbound_idle_timeout=0.3, idle_timeout=0.4)
        await b.t.listen("127.0.0.1", pb)
        try:
            reader, writer, session = await raw_handshake(pb, ring, "a")
            writer.write(session.seal(kvwire.pack(Hello(node_id="a"))))
            await until(lambda: b.t.pending == {} and len(b.t.inbound) == 1, "the Hello")
            await until(lambda: b.t.stats.inbound_idle_closed == 1, "the idle close")
            assert await reader.read() == b""
            assert not b.t.inbound
            writer.close()
        finally:
            await close_all(b)

    asyncio.run(body())


def test_a_handshake_that_never_finishes_is_closed_at_the_hello_deadline() -> None:
    async def body() -> None:
        ring = new_ring()
        pb = free_port()
        b = keyed("b", {}, ring, hello_timeout=0.3)
        await b.t.listen("127.0.0.1", pb)
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", pb)
            writer.write(ClientHandshake(ring, "a").hello())  # and never the proof
            await until(lambda: b.t.stats.frames_malformed.get("hello_timeout") == 1, "deadline")
            writer.close()
        finally:
            await close_all(b)

    asyncio.run(body())


def test_rotating_keys_with_reloads_keeps_the_link_working_and_rekeys_it() -> None:
    async def body() -> None:
        old = new_ring()
        new = new_ring()
        pa, pb = free_port(), free_port()
        a = keyed("a", {"b": ("127.0.0.1", pb)}, old)
        b = keyed("b", {"a": ("127.0.0.1", pa)}, old)
        await a.t.listen("127.0.0.1", pa)
        await b.t.listen("127.0.0.1", pb)
        sent = 0

        async def send_some(k: int) -> None:
            nonlocal sent
            for _ in range(k):
                a.t.send("b", Nack(seq=sent))
                b.t.send("a", Nack(seq=sent))
                sent += 1
            await until(lambda: len(b.received) == sent and len(a.received) == sent, "delivery")

        try:
            await send_some(10)
            steps = [
                Keyring(old.keys + new.keys),  # 1: the new key accepted
                Keyring(new.keys + old.keys),  # 2: the new key primary
                new,  # 3: the old key dropped
            ]
            for ring in steps:
                a.t.set_keyring(ring)
                await send_some(5)  # a has the next ring, b the previous one
                b.t.set_keyring(ring)
                await send_some(5)
            assert a.t.links["b"].session is not None
            assert a.t.links["b"].session.key == new.primary
            assert a.t.stats.links_closed.get("rekeyed", 0) >= 1
            assert b.received == [("a", Nack(seq=i)) for i in range(sent)]
        finally:
            await close_all(a, b)

    asyncio.run(body())


def test_connections_over_the_cap_are_refused_counted_and_logged_a_few_times(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body() -> Peer:
        pb = free_port()
        b = keyed("b", {}, new_ring(), max_inbound=5, max_inbound_pending=5, hello_timeout=60.0)
        await b.t.listen("127.0.0.1", pb)
        conns = [await asyncio.open_connection("127.0.0.1", pb) for _ in range(5)]
        await until(lambda: len(b.t.inbound) == 5, "five connections held")
        extra = [await asyncio.open_connection("127.0.0.1", pb) for _ in range(100)]
        await until(lambda: b.t.stats.inbound_rejected == 100, "every extra one refused")
        for _, w in conns + extra:
            w.close()
        await close_all(b)
        return b

    with caplog.at_level(logging.DEBUG, logger="realnet.transport"):
        b = asyncio.run(body())
    lines = [r for r in caplog.records if "too many inbound connections" in r.getMessage()]
    assert 1 <= len(lines) <= 3
    assert b.t.ratelog.suppressed_total >= 97


def test_a_turns_frames_leave_as_records_no_larger_than_one_largest_frame() -> None:
    from realnet.outbound import _records

    frames = [b"a" * 3, b"b" * 4, b"c" * 5, b"d" * 9, b"e"]
    assert list(_records(frames, 8)) == [b"aaa" + b"bbbb", b"c" * 5, b"d" * 9, b"e"]
    assert list(_records(frames, 100)) == [b"".join(frames)]
    assert list(_records([], 8)) == []


def test_a_dialler_refuses_a_node_that_answers_for_another_id(caplog: pytest.LogCaptureFixture) -> None:
    """a dials b's address, but c answers there (a stale address, or a holder of the secret
    posing as b): the handshake is refused on a's side, nothing meant for b reaches c."""
    async def body() -> None:
        ring = new_ring()
        pc = free_port()
        a = keyed("a", {"b": ("127.0.0.1", pc)}, ring)
        c = keyed("c", {}, ring)
        await c.t.listen("127.0.0.1", pc)
        try:
            a.t.send("b", Nack(seq=7))
            await until(lambda: a.t.stats.handshakes_failed.get("wrong_node", 0) >= 1, "the refusal")
            assert c.received == []
        finally:
            await close_all(a, c)

    with caplog.at_level(logging.INFO, logger="realnet.transport"):
        asyncio.run(body())
    assert any("is 'c', not 'b'" in r.getMessage() for r in caplog.records), caplog.text


def test_a_key_removed_by_a_reload_during_a_handshake_cannot_finish_it() -> None:
    """The audit's case on a real transport: mallory holds only the old key, gets its
    challenge, the node reloads without that key, then mallory sends its proof and a Hello."""
    async def body() -> None:
        old, new = new_ring(), new_ring()
        pb = free_port()
        b = keyed("b", {}, Keyring((*new.keys, *old.keys)))
        await b.t.listen("127.0.0.1", pb)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", pb)
            hs = ClientHandshake(old, "mallory")
            writer.write(hs.hello())
            fields = auth.handshake_fields(await read_frame(reader))
            assert fields is not None
            proof, session = hs.on_challenge(fields)
            b.t.set_keyring(new)  # step 3 of a rotation: the old key is gone
            writer.write(proof)
            writer.write(session.seal(kvwire.pack(Hello(node_id="mallory"))))
            await until(lambda: b.t.stats.frames_malformed.get("unknown_key", 0) >= 1, "the refusal")
            assert b.received == [] and "mallory" not in b.t.info()["inbound_peers"]
            writer.close()
        finally:
            await close_all(b)

    asyncio.run(body())


def test_an_answer_to_a_peer_not_known_yet_goes_back_sealed_to_the_authenticated_peer_only() -> None:
    """On an authenticated bus the answer to a member the owner has no address for goes back on
    that member's own connection, sealed in the session's other direction: only to the id the
    handshake proved. A record forged on that way back closes the link (``back_auth_failed``)."""
    from kvcore.messages import Forward, ForwardReply, Get, Reply

    async def body() -> None:
        ring = new_ring()
        pa, pb = free_port(), free_port()
        a = keyed("a", {"b": ("127.0.0.1", pb)}, ring)
        b = keyed("b", {}, ring)
        await a.t.listen("127.0.0.1", pa)
        await b.t.listen("127.0.0.1", pb)
        try:
            a.t.send("b", Forward(request_id=1, op=Get(key=b"k")))
            await until(lambda: len(b.received) == 1, "the forward")
            b.t.send("a", ForwardReply(request_id=1, reply=Reply(value=b"v")))
            await until(lambda: a.received == [("b", ForwardReply(request_id=1, reply=Reply(value=b"v")))],
                        "the sealed reply sent back")
            (conn,) = [p for p in b.t.inbound if p.peer == "a"]
            assert conn.session is not None and conn.session.peer == "a"
            assert b.t.stats.sent_back == 1 and a.t.stats.received_back == 1
            # a record on the way back that the session did not seal: refused, the link closes
            assert conn.transport is not None
            conn.transport.write(kvwire.frame(Nack(seq=9)) + b"\0" * auth.TAG_BYTES)
            await until(lambda: a.t.stats.frames_malformed.get("back_auth_failed") == 1, "the refusal")
            assert a.received == [("b", ForwardReply(request_id=1, reply=Reply(value=b"v")))]
        finally:
            await close_all(a, b)

    asyncio.run(body())
