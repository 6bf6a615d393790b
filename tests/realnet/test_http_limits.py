"""Bounded HTTP resources (issue 10): the head deadline, the client connection cap, the cap on
request bodies held across connections, and strict Content-Length digits, on realnet.http
in-process with short limits configured for the test (each limit is a setting)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import pytest

import realnet.http
from realnet.http import HttpLimits, Request, Response, start_http_server, stop_http_server
from realnet.ratelog import RateLog

GUARD = 10.0  # seconds: a hang guard for reads, not a performance expectation


@pytest.fixture(autouse=True, params=list(realnet.http.PARSERS))
def http_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(realnet.http, "DEFAULT_PARSER", request.param)
    return str(request.param)


def echo(req: Request) -> Response:
    return Response(200, b"%d" % len(req.body), "text/plain")


@asynccontextmanager
async def server(limits: HttpLimits) -> AsyncIterator[tuple[asyncio.Server, int]]:
    srv = await start_http_server(echo, "127.0.0.1", 0, limits)
    try:
        yield srv, srv.sockets[0].getsockname()[1]
    finally:
        await stop_http_server(srv, grace=0.5)


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), GUARD)


async def get_ok(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await read_all(reader)
    writer.close()
    return data


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pieces: Iterable[bytes]) -> bytes:
    """Write ``pieces`` one at a time, 20 ms apart, until the server answers; its answer (b""
    if the pieces ran out first)."""
    for piece in pieces:
        writer.write(piece)
        try:
            return await asyncio.wait_for(reader.read(4096), 0.02)
        except TimeoutError:
            continue
    return b""


def test_a_head_trickled_a_byte_at_a_time_is_answered_408_and_closed() -> None:
    async def main() -> None:
        async with server(HttpLimits(head_timeout=0.3, keepalive_timeout=30)) as (srv, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
            # bounded: the server must close well before the end
            answer = await trickle(reader, writer, (head[i:i + 1] for i in range(len(head))))
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"did not arrive within 0.3 seconds" in answer
            rest = await read_all(reader)  # then the server closes
            assert rest is not None
            writer.close()
            assert srv.server_stats.refused["head_timeout"] == 1
            assert (await get_ok(port)).startswith(b"HTTP/1.1 200")

    asyncio.run(main())


def test_a_head_within_the_deadline_and_an_idle_keep_alive_are_not_cut() -> None:
    async def main() -> None:
        async with server(HttpLimits(head_timeout=0.3, keepalive_timeout=30)) as (srv, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(3):
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                line = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
                assert line.startswith(b"HTTP/1.1 200")
                await asyncio.wait_for(reader.readexactly(1), GUARD)
                await asyncio.sleep(0.5)  # idle between requests: only keepalive_timeout applies
            writer.close()
            assert "head_timeout" not in srv.server_stats.refused

    asyncio.run(main())


def test_connections_over_the_cap_get_503_and_the_node_serves_again_once_they_go() -> None:
    async def main() -> None:
        async with server(HttpLimits(max_connections=3)) as (srv, port):
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            # wait until the server counts them (accepting is asynchronous)
            for _ in range(200):
                if srv.server_stats.connections_open == 3:
                    break
                await asyncio.sleep(0.01)
            refused = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            for reader, writer in refused:
                data = await read_all(reader)
                assert data.startswith(b"HTTP/1.1 503"), data
                body = json.loads(data.split(b"\r\n\r\n", 1)[1])
                assert body["error"] == "too_many_connections" and "at most 3" in body["message"]
                assert b"Connection: close" in data
                writer.close()
            assert srv.server_stats.refused["connections"] == 2
            for _, writer in held:
                writer.close()
            for _ in range(200):
                if srv.server_stats.connections_open == 0:
                    break
                await asyncio.sleep(0.01)
            assert (await get_ok(port)).startswith(b"HTTP/1.1 200")

    asyncio.run(main())


def test_bodies_held_across_connections_are_capped() -> None:
    async def main() -> None:
        limits = HttpLimits(max_body=1024 * 1024, max_buffered_bodies=300 * 1024)
        async with server(limits) as (srv, port):
            conns = []
            answers = []
            for _ in range(6):  # 6 stalled uploads of 128 KiB of a 1 MiB body each
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PUT /kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n")
                writer.write(b"v" * 128 * 1024)
                await writer.drain()
                conns.append((reader, writer))
            for reader, _ in conns:
                try:
                    answers.append(await asyncio.wait_for(reader.read(4096), 1.0))
                except TimeoutError:
                    answers.append(b"")
            refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
            assert refused and all(b"too many request bodies" in a for a in refused), answers
            assert srv.server_stats.buffered <= 300 * 1024 + 128 * 1024
            assert srv.server_stats.refused["buffered_bodies"] == len(refused)
            for _, writer in conns:
                writer.close()
            for _ in range(200):
                if srv.server_stats.connections_open == 0:
                    break
                await asyncio.sleep(0.01)
            assert srv.server_stats.buffered == 0
            assert (await get_ok(port)).startswith(b"HTTP/1.1 200")

    asyncio.run(main())


@pytest.mark.parametrize("zeros", [1, 17, 40, 5000])
def test_content_length_with_leading_zeros_is_its_value(zeros: int) -> None:
    async def main() -> None:
        async with server(HttpLimits(max_header_bytes=16 * 1024)) as (_, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            cl = b"0" * zeros + b"5"
            writer.write(b"PUT /kv/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: "
                         + cl + b"\r\n\r\nhello")
            data = await read_all(reader)
            writer.close()
            # either parsed as 5 (llhttp and h11 both read 1*DIGIT) or refused with a true sentence
            if data.startswith(b"HTTP/1.1 200"):
                assert data.endswith(b"\r\n\r\n5"), data
            else:
                assert data.startswith(b"HTTP/1.1 400"), data
                assert b"exceeds" not in data

    asyncio.run(main())


def test_the_rate_limited_log_holds_back_a_flood_and_says_how_much(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rl = RateLog(logging.getLogger("test.ratelog"), rate=1.0, burst=3, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.ratelog"):
        logged = sum(rl.info("flood", "bad input %d", i) for i in range(1000))
        assert logged == 3 and rl.counts["flood"] == 1000 and rl.dropped["flood"] == 997
        now[0] = 2.0
        assert rl.info("flood", "bad input again")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[-1] == "bad input again (997 similar messages suppressed)"


def test_the_rate_log_keeps_its_tables_bounded_and_its_counters_monotonic() -> None:
    rl = RateLog(logging.getLogger("test.ratelog.bounded"), rate=1.0, burst=1, clock=lambda: 0.0,
                 max_kinds=3)
    for i in range(50):
        rl.log(logging.INFO, f"kind{i}", "event %d", i)
        rl.log(logging.INFO, f"kind{i}", "event %d", i)  # the second of each is over the burst
    assert set(rl.counts) == {"kind0", "kind1", "kind2", "other"} == set(rl.dropped)
    assert rl.counts["other"] == 94 and rl.dropped["kind0"] == 1 and rl.dropped["other"] == 93
    assert len(rl.suppressed) <= 4


async def _trickled_body_cut(srv: Any, port: int, seconds: str) -> None:
    """A 200-byte body trickled a byte every 20 ms (4 s, bounded) is cut with 408 after
    ``seconds``, counted as a body timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n")
    answer = await trickle(reader, writer, (b"a" for _ in range(200)))
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert f"request body did not arrive within {seconds} seconds".encode() in answer
    writer.close()
    assert srv.server_stats.refused["body_timeout"] == 1


def test_a_body_trickled_a_byte_at_a_time_is_answered_408_within_the_keep_alive_timeout() -> None:
    """The keep-alive timeout bounds a whole request, body included: a body trickled slowly
    keeps the connection active, so the idle sweep alone never ends it."""
    async def main() -> None:
        async with server(HttpLimits(head_timeout=0.3, keepalive_timeout=0.6)) as (srv, port):
            await _trickled_body_cut(srv, port, "0.6")
            assert (await get_ok(port)).startswith(b"HTTP/1.1 200")

    asyncio.run(main())


def test_the_request_timeout_is_a_setting_of_its_own_apart_from_the_keep_alive_timeout() -> None:
    """``request_timeout`` bounds a whole request, body included, whatever the keep-alive
    timeout: a body trickled past it is 408, one trickled within it is served on the same
    server; and a head is cut at the sooner of the head and request deadlines."""
    async def main() -> None:
        limits = HttpLimits(head_timeout=5.0, keepalive_timeout=30, request_timeout=0.6)
        async with server(limits) as (srv, port):
            await _trickled_body_cut(srv, port, "0.6")  # at 0.6 s, not at the keep-alive's 30 s
            # within it: 5 bytes at 20 ms (0.1 s, well inside 0.6 s) are served
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            answer = await trickle(reader, writer, (b"a" for _ in range(5)))
            if not answer:  # the last byte went out: the answer is on its way
                answer = await asyncio.wait_for(reader.read(4096), GUARD)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"5"), answer
            writer.close()
            # a head trickled past the request deadline (below the head deadline) is cut too
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
            answer = await trickle(reader, writer, (head[i:i + 1] for i in range(len(head))))
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert b"head did not arrive within 0.6 seconds" in answer
            writer.close()
            assert srv.server_stats.refused["head_timeout"] == 1

    asyncio.run(main())


def authorized_only(req: Request) -> Response | None:
    """A head check: refuse what carries no Authorization field (as the node's token check)."""
    if "authorization" in req.headers:
        return None
    return Response(401, b"no token", "text/plain")


@asynccontextmanager
async def checked_server(limits: HttpLimits) -> AsyncIterator[tuple[asyncio.Server, int]]:
    srv = await start_http_server(echo, "127.0.0.1", 0, limits, head_check=authorized_only)
    try:
        yield srv, srv.sockets[0].getsockname()[1]
    finally:
        await stop_http_server(srv, grace=0.5)


def test_a_head_the_check_refuses_is_answered_before_its_body_and_holds_no_buffer() -> None:
    """Without the token, a declared body is never read: the answer comes on the head alone, the
    connection closes, and nothing counts against the bodies held across connections. So
    clients without the token cannot fill that budget and starve those with it."""
    async def main() -> None:
        async with checked_server(HttpLimits(max_buffered_bodies=300_000)) as (srv, port):
            conns = []
            for _ in range(5):  # five half-sent 200 KB bodies, no token: each 401 at once
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"a" * 100_000)
                answer = await read_all(reader)
                assert answer.startswith(b"HTTP/1.1 401") and answer.endswith(b"no token"), answer[:200]
                assert b"Connection: close" in answer
                conns.append(writer)
            assert srv.server_stats.refused_before_body == 5 and not srv.server_stats.refused
            assert srv.server_stats.buffered == 0
            # one with the token sends its whole 200 KB body and is served
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
                         b"Content-Length: 200000\r\nConnection: close\r\n\r\n")
            for _ in range(4):
                writer.write(b"a" * 50_000)
                await writer.drain()
            answer = await read_all(reader)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"200000"), answer[:200]
            for w in (*conns, writer):
                w.close()

    asyncio.run(main())


def test_expect_100_continue_is_refused_without_a_continue_when_the_head_check_refuses() -> None:
    async def main() -> None:
        async with checked_server(HttpLimits()) as (_srv, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
            answer = await read_all(reader)
            assert answer.startswith(b"HTTP/1.1 401") and b"100 Continue" not in answer, answer
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PUT /kv/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nExpect: 100-continue\r\n"
                         b"Content-Length: 5\r\nConnection: close\r\n\r\n")
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            answer = await read_all(reader)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"5"), answer
            writer.close()

    asyncio.run(main())


def test_a_head_with_bare_lf_line_ends_is_refused_at_once_not_at_the_deadline() -> None:
    async def main() -> None:
        async with server(HttpLimits(head_timeout=30)) as (srv, port):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /kv/foo HTTP/1.1\nHost: 127.0.0.1\n\n")
            answer = await read_all(reader)  # GUARD (10 s) is well under the 30 s deadline
            assert answer.startswith(b"HTTP/1.1 400") and b"bare LF" in answer, answer
            writer.close()
            assert "head_timeout" not in srv.server_stats.refused

    asyncio.run(main())
