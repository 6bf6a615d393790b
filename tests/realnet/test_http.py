"""realnet.http in-process on 127.0.0.1 port 0 with a toy handler, driven over raw sockets.

Each test runs its own event loop (``asyncio.run``). Reads are bounded by a generous hang guard,
never by a timed assertion; nothing sleeps a fixed time. Every test runs once per request parser
(:data:`realnet.httpparse.PARSERS`); the parsers themselves are tested without sockets in
``test_http_parser.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import realnet.http
from realnet.http import (
    HttpLimits,
    HttpServerStats,
    Request,
    Response,
    error_response,
    json_response,
    start_http_server,
    stop_http_server,
)
from tests.realnet.test_http_parser import FRAMING_REFUSALS

GUARD = 10.0  # seconds: a hang guard for reads, not a performance expectation


@pytest.fixture(autouse=True, params=list(realnet.http.PARSERS))
def http_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with this parser as the servers' default."""
    monkeypatch.setattr(realnet.http, "DEFAULT_PARSER", request.param)
    return str(request.param)


# --- a toy application --------------------------------------------------------------------------


class Toy:
    """PUT/GET/DELETE on /kv/KEY, plus routes that misbehave on purpose."""

    def __init__(self) -> None:
        self.store: dict[str, bytes] = {}
        self.seen: list[Request] = []
        self.tasks_seen: list[asyncio.Task[Any] | None] = []
        self.pending: list[asyncio.Future[Response]] = []

    def __call__(self, req: Request) -> Response | asyncio.Future[Response]:
        self.seen.append(req)
        self.tasks_seen.append(asyncio.current_task())
        path = req.path
        if path.startswith("/kv/"):
            key = path[4:]
            if req.method == "PUT":
                self.store[key] = req.body
                return Response(204)
            if req.method in ("GET", "HEAD"):
                if key not in self.store:
                    return error_response(404, "not_found", f"No value for key {key!r}.")
                return Response(200, self.store[key], "application/octet-stream")
            if req.method == "DELETE":
                return Response(204) if self.store.pop(key, None) is not None else Response(404)
        if path.startswith("/echo"):
            return json_response(
                200,
                {
                    "method": req.method,
                    "target": req.target,
                    "path": req.path,
                    "query": req.query,
                    "version": req.version,
                    "headers": req.headers,
                    "body": req.body.decode("latin-1"),
                    "peer_host": req.peer[0] if req.peer else None,
                },
            )
        if path.startswith("/later/"):
            # Resolved on a later loop iteration, the way a forwarded request is.
            fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            body = path[len("/later/") :].encode()
            asyncio.get_running_loop().call_soon(
                lambda: asyncio.get_running_loop().call_soon(fut.set_result, Response(200, body))
            )
            return fut
        if path == "/held":
            held: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            self.pending.append(held)
            return held
        if path == "/boom":
            raise RuntimeError("the toy handler exploded")
        if path == "/future-fails":
            failed: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
            failed.set_exception(RuntimeError("the forward exploded"))
            return failed
        if path == "/not-a-response":
            return "oops"  # type: ignore[return-value]
        if path == "/bad-header":
            return Response(200, b"x", headers=(("X-Evil", "a\r\nInjected: 1"),))
        if path == "/headers":
            return Response(200, b"x", "text/plain", headers=(("X-Node", "n1"),))
        return error_response(404, "not_found", f"No route for {path}.")


# --- a raw HTTP client --------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type") == "application/json"
        return json.loads(self.body)


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_head(self) -> tuple[int, dict[str, str]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), GUARD)
        lines = raw[:-4].decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate {name}"
            headers[name.lower()] = value.strip()
        return int(status), headers

    async def response(self, *, head: bool = False) -> Reply:
        status, headers = await self.read_head()
        if status in (204, 304) or 100 <= status < 200:
            assert "content-length" not in headers
            return Reply(status, headers, b"")
        n = int(headers["content-length"])  # every other response has one
        body = b"" if head else await asyncio.wait_for(self.reader.readexactly(n), GUARD)
        return Reply(status, headers, body)

    async def request(self, method: str, target: str, body: bytes = b"", **hdrs: str) -> Reply:
        await self.send(raw_request(method, target, body, **hdrs))
        return await self.response(head=method == "HEAD")

    async def closed_by_server(self) -> bool:
        """True once the server has closed its side (EOF), after any remaining bytes."""
        rest = await asyncio.wait_for(self.reader.read(), GUARD)
        assert rest == b"", rest
        return True

    def close(self) -> None:
        self.writer.close()


def raw_request(method: str, target: str, body: bytes = b"", **hdrs: str) -> bytes:
    fields = {"Host": "test", **{k.replace("_", "-"): v for k, v in hdrs.items()}}
    if body and "Transfer-Encoding" not in fields:
        fields.setdefault("Content-Length", str(len(body)))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode() + b"\r\n" + body


@dataclass
class Server:
    server: asyncio.Server
    app: Toy
    port: int

    @property
    def stats(self) -> HttpServerStats:
        stats = self.server.server_stats  # type: ignore[attr-defined]
        assert isinstance(stats, HttpServerStats)
        return stats

    async def connect(self) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        return Conn(reader, writer)


@asynccontextmanager
async def serving(limits: HttpLimits | None = None) -> AsyncIterator[Server]:
    app = Toy()
    server = await start_http_server(app, "127.0.0.1", 0, limits or HttpLimits())
    try:
        yield Server(server, app, server.sockets[0].getsockname()[1])
    finally:
        await stop_http_server(server, grace=1.0)


async def poll_until(cond: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + GUARD
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def run(scenario: Callable[[Server], Awaitable[None]], limits: HttpLimits | None = None) -> None:
    async def main() -> None:
        async with serving(limits) as srv:
            await scenario(srv)

    asyncio.run(main())


# --- requests and bodies ------------------------------------------------------------------------


def test_put_then_get_with_content_length() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        r = await c.request("PUT", "/kv/a", b"hello")
        assert r.status == 204
        r = await c.request("GET", "/kv/a")
        assert (r.status, r.body) == (200, b"hello")
        assert r.headers["content-type"] == "application/octet-stream"
        assert "date" in r.headers
        r = await c.request("GET", "/kv/missing")
        assert r.status == 404
        assert r.json()["error"] == "not_found"
        c.close()

    run(scenario)


def test_request_fields_are_parsed() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        r = await c.request(
            "POST", "/echo?x=1&y=%20", b"body", X_Custom="  padded value\t", Accept="a"
        )
        got = r.json()
        assert got["method"] == "POST"
        assert got["target"] == "/echo?x=1&y=%20"
        assert (got["path"], got["query"]) == ("/echo", "x=1&y=%20")
        assert got["version"] == "HTTP/1.1"
        assert got["headers"]["x-custom"] == "padded value"
        assert got["headers"]["host"] == "test"
        assert got["body"] == "body"
        assert got["peer_host"] == "127.0.0.1"
        c.close()

    run(scenario)


def test_path_is_not_percent_decoded_and_absolute_form_is_accepted() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        got = (await c.request("GET", "/echo%2Fx/a%20b")).json()
        assert got["path"] == "/echo%2Fx/a%20b"
        got = (await c.request("GET", "http://test:80/echo?q=1")).json()
        assert (got["path"], got["query"]) == ("/echo", "q=1")
        c.close()

    run(scenario)


def test_repeated_header_fields_are_joined() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        await c.send(b"GET /echo HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
        assert (await c.response()).json()["headers"]["x-a"] == "1, 2"
        c.close()

    run(scenario)


def test_chunked_upload(http_parser: str) -> None:
    if http_parser == "h11":
        pytest.skip("h11 refuses BWS between a chunk size and its extension (test_http_parser.py)")

    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        body = (
            b"5\r\nhello\r\n"
            b"1;ext=val\r\n \r\n"
            b"00006 ;other\r\nworld!\r\n"  # BWS before ";" (RFC 9112 §7.1.1)
            b"0\r\nX-Trailer: ignored\r\n\r\n"
        )
        r = await c.request("PUT", "/kv/c", body, Transfer_Encoding="chunked")
        assert r.status == 204
        assert srv.app.store["c"] == b"hello world!"
        r = await c.request("GET", "/kv/c")  # the connection is still in step
        assert r.body == b"hello world!"
        c.close()

    run(scenario)


def test_chunked_upload_trickled_byte_by_byte() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        value = bytes(range(256)) * 3
        body = b"".join(b"%x\r\n%s\r\n" % (n, value[i : i + n]) for i, n in ((0, 700), (700, 68)))
        data = raw_request("PUT", "/kv/t", body + b"0\r\n\r\n", Transfer_Encoding="chunked")
        for i in range(len(data)):
            await c.send(data[i : i + 1])
        assert (await c.response()).status == 204
        assert srv.app.store["t"] == value
        c.close()

    run(scenario)


def test_large_body_in_many_segments() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        value = bytes(range(256)) * 4096  # 1 MiB
        assert (await c.request("PUT", "/kv/big", value)).status == 204
        r = await c.request("GET", "/kv/big")
        assert r.body == value
        c.close()

    run(scenario)


def test_head_has_content_length_but_no_body() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        await c.request("PUT", "/kv/h", b"12345")
        r = await c.request("HEAD", "/kv/h")
        assert (r.status, r.headers["content-length"]) == (200, "5")
        r = await c.request("GET", "/kv/h")  # nothing of the HEAD body was left on the wire
        assert r.body == b"12345"
        c.close()

    run(scenario)


def test_leading_empty_lines_are_ignored() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        await c.send(b"\r\n\r\n" + raw_request("GET", "/kv/none"))
        assert (await c.response()).status == 404
        await c.send(b"\r\n" + raw_request("GET", "/kv/none"))
        assert (await c.response()).status == 404
        for piece in (b"\r", b"\n", raw_request("GET", "/kv/none")):
            await c.send(piece)
        assert (await c.response()).status == 404
        c.close()

    run(scenario)


def test_handler_headers_are_sent() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        r = await c.request("GET", "/headers")
        assert r.headers["x-node"] == "n1"
        assert r.headers["content-type"] == "text/plain"
        c.close()

    run(scenario)


# --- connection management ----------------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        for i in range(20):
            assert (await c.request("PUT", f"/kv/k{i}", b"v%d" % i)).status == 204
            r = await c.request("GET", f"/kv/k{i}")
            assert r.body == b"v%d" % i
            assert "connection" not in r.headers
        assert srv.stats.connections_total == 1
        assert srv.stats.requests == 40
        c.close()

    run(scenario)


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        batch = b"".join(raw_request("PUT", f"/kv/p{i}", b"%d" % i) for i in range(30))
        batch += b"".join(raw_request("GET", f"/kv/p{i}") for i in range(30))
        await c.send(batch)
        for _ in range(30):
            assert (await c.response()).status == 204
        for i in range(30):
            assert (await c.response()).body == b"%d" % i
        c.close()

    run(scenario)


def test_future_responses_keep_pipelined_order() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        targets = ["/later/1", "/kv/x", "/later/3", "/later/4", "/kv/x", "/later/6"]
        await c.send(b"".join(raw_request("GET", t) for t in targets))
        bodies = []
        for _ in targets:
            r = await c.response()
            bodies.append(r.body if r.status == 200 else r.status)
        assert bodies == [b"1", 404, b"3", b"4", 404, b"6"]
        c.close()

    run(scenario)


def test_a_held_future_delays_only_its_own_connection() -> None:
    async def scenario(srv: Server) -> None:
        slow = await srv.connect()
        await slow.send(raw_request("GET", "/held") + raw_request("GET", "/kv/after"))
        other = await srv.connect()
        assert (await other.request("GET", "/kv/other")).status == 404
        assert len(srv.app.pending) == 1  # the pipelined request waits behind the held one
        srv.app.pending[0].set_result(Response(200, b"released"))
        assert (await slow.response()).body == b"released"
        assert (await slow.response()).status == 404
        slow.close()
        other.close()

    run(scenario)


def test_input_behind_a_held_response_is_buffered_then_served() -> None:
    # Over a megabyte of pipelined PUTs arrives while the first request is outstanding: the
    # server stops reading past its high-water mark and catches up once the response is out.
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        value = b"z" * 100_000
        puts = b"".join(raw_request("PUT", f"/kv/q{i}", value) for i in range(12))
        c.writer.write(raw_request("GET", "/held") + puts)
        await poll_until(lambda: bool(srv.app.pending))
        srv.app.pending[0].set_result(Response(200, b"first"))
        assert (await c.response()).body == b"first"
        for _ in range(12):
            assert (await c.response()).status == 204
        assert srv.app.store["q11"] == value
        c.close()

    run(scenario)


def test_a_client_that_does_not_read_is_not_served_past_the_write_buffer() -> None:
    # Pipelined GETs of a large value whose responses the client only reads later: the server
    # pauses at the transport's write high-water mark and resumes as the client drains.
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        value = bytes(range(256)) * 2048  # 512 KiB
        assert (await c.request("PUT", "/kv/big", value)).status == 204
        await c.send(b"".join(raw_request("GET", "/kv/big") for _ in range(16)))
        for _ in range(16):
            assert (await c.response()).body == value
        c.close()

    run(scenario)


def test_handlers_run_without_a_task_per_request() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        for i in range(5):
            await c.request("GET", f"/kv/{i}")
        await c.request("GET", "/later/x")
        assert srv.app.tasks_seen == [None] * 6
        c.close()

    run(scenario)


def test_connection_close_is_honoured() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        await c.send(raw_request("GET", "/kv/x", Connection="close"))
        r = await c.response()
        assert r.status == 404
        assert r.headers["connection"] == "close"
        assert await c.closed_by_server()
        c.close()

    run(scenario)


def test_http10_closes_by_default() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        await c.send(b"GET /kv/x HTTP/1.0\r\n\r\n")  # no Host needed in HTTP/1.0
        r = await c.response()
        assert r.status == 404
        assert r.headers["connection"] == "close"
        assert await c.closed_by_server()
        c.close()

    run(scenario)


def test_http10_keep_alive_on_request() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        for _ in range(3):
            await c.send(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = await c.response()
            assert r.headers["connection"] == "keep-alive"
            assert r.json()["version"] == "HTTP/1.0"
        c.close()

    run(scenario)


def test_idle_connections_are_closed_after_the_keepalive_timeout() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        assert (await c.request("GET", "/kv/x")).status == 404
        assert await c.closed_by_server()  # no request follows: the server closes it
        c.close()

    run(scenario, HttpLimits(keepalive_timeout=0.2))


def test_half_received_request_times_out_with_408() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        await c.send(b"PUT /kv/x HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        r = await c.response()
        assert r.status == 408
        assert r.json()["error"] == "timeout"
        assert await c.closed_by_server()
        c.close()

    run(scenario, HttpLimits(keepalive_timeout=0.2))


def test_client_half_close_still_gets_its_response() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        await c.send(raw_request("GET", "/later/eof"))
        c.writer.write_eof()
        assert (await c.response()).body == b"eof"
        assert await c.closed_by_server()
        c.close()

    run(scenario)


def test_stop_lets_in_flight_requests_finish_with_connection_close() -> None:
    async def main() -> None:
        app = Toy()
        server = await start_http_server(app, "127.0.0.1", 0)
        srv = Server(server, app, server.sockets[0].getsockname()[1])
        busy = await srv.connect()
        idle = await srv.connect()
        await idle.request("GET", "/kv/x")
        await busy.send(raw_request("GET", "/held"))
        await poll_until(lambda: bool(app.pending))  # the request reached the handler
        stopping = asyncio.ensure_future(stop_http_server(server, grace=GUARD))
        assert await idle.closed_by_server()
        app.pending[0].set_result(Response(200, b"done"))
        r = await busy.response()
        assert (r.body, r.headers["connection"]) == (b"done", "close")
        assert await busy.closed_by_server()
        await asyncio.wait_for(stopping, GUARD)
        assert srv.stats.connections_open == 0
        busy.close()
        idle.close()

    asyncio.run(main())


def test_stop_aborts_what_is_still_busy_after_the_grace_period() -> None:
    async def main() -> None:
        app = Toy()
        server = await start_http_server(app, "127.0.0.1", 0)
        srv = Server(server, app, server.sockets[0].getsockname()[1])
        stuck = await srv.connect()
        await stuck.send(raw_request("GET", "/held"))
        await poll_until(lambda: bool(app.pending))
        await asyncio.wait_for(stop_http_server(server, grace=0.1), GUARD)
        assert srv.stats.connections_open == 0
        try:
            rest = await asyncio.wait_for(stuck.reader.read(), GUARD)
        except ConnectionResetError:
            rest = b""
        assert rest == b""  # aborted without a response
        app.pending[0].set_result(Response(200, b"too late"))  # must not raise or write
        await asyncio.sleep(0)
        stuck.close()

    asyncio.run(main())


# --- handler failures ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/boom", "/future-fails", "/not-a-response", "/bad-header"])
def test_handler_failure_is_500_and_the_server_keeps_serving(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        with caplog.at_level(logging.ERROR, logger="realnet.http"):
            r = await c.request("GET", path)
        assert r.status == 500
        assert r.json()["error"] == "internal"
        assert "injected" not in r.headers
        # The same connection goes on, and so does a new one.
        assert (await c.request("PUT", "/kv/after", b"ok")).status == 204
        c2 = await srv.connect()
        assert (await c2.request("GET", "/kv/after")).body == b"ok"
        assert srv.stats.handler_errors == 1
        c.close()
        c2.close()

    run(scenario)
    assert any(rec.levelno >= logging.ERROR for rec in caplog.records)


# --- protocol errors ----------------------------------------------------------------------------


async def expect_error(
    srv: Server, data: bytes, status: int, code: str, *, then_closed: bool = True
) -> dict[str, Any]:
    c = await srv.connect()
    await c.send(data)
    r = await c.response()
    assert r.status == status, (r.status, r.body)
    body: dict[str, Any] = r.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"].endswith(".")
    if then_closed:
        assert r.headers["connection"] == "close"
        assert await c.closed_by_server()
    c.close()
    return body


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.x\r\nHost: h\r\n\r\n",
        b"GET noslash HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nName : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nY: b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ],
)
def test_malformed_request_is_400_then_the_server_serves_new_connections(data: bytes) -> None:
    async def scenario(srv: Server) -> None:
        await expect_error(srv, data, 400, "bad_request")
        c = await srv.connect()
        assert (await c.request("GET", "/kv/x")).status == 404
        assert srv.stats.bad_requests == 1
        assert srv.stats.requests == 1
        c.close()

    run(scenario)


@pytest.mark.parametrize("value", ["abc", "-1", "+5", "5, 6", "", "0x10", "1 2", "²"])
def test_bad_content_length_is_400(value: str) -> None:
    async def scenario(srv: Server) -> None:
        data = f"PUT /kv/x HTTP/1.1\r\nHost: h\r\nContent-Length: {value}\r\n\r\n12345"
        await expect_error(srv, data.encode("latin-1"), 400, "bad_request")

    run(scenario)


def test_repeated_identical_content_length_is_accepted() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        await c.send(b"PUT /kv/x HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc")
        assert (await c.response()).status == 204
        assert srv.app.store["x"] == b"abc"
        c.close()

    run(scenario)


@pytest.mark.parametrize(("fields", "status", "code"), FRAMING_REFUSALS)
def test_unsupported_framing(fields: str, status: int, code: str) -> None:
    async def scenario(srv: Server) -> None:
        data = f"PUT /kv/x HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        await expect_error(srv, data.encode(), status, code)
        assert srv.stats.requests == 0

    run(scenario)


def test_transfer_encoding_in_http10_is_400() -> None:
    async def scenario(srv: Server) -> None:
        data = b"PUT /kv/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        await expect_error(srv, data, 400, "bad_request")

    run(scenario)


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nhello\r\n0\r\n\r\n",  # size is not hex
        b"5\r\nhelloXX0\r\n\r\n",  # data not followed by CRLF
        b"\r\nhello\r\n0\r\n\r\n",  # empty size
        b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n",
    ],
)
def test_malformed_chunked_body_is_400(body: bytes) -> None:
    async def scenario(srv: Server) -> None:
        data = raw_request("PUT", "/kv/x", body, Transfer_Encoding="chunked")
        await expect_error(srv, data, 400, "bad_request")

    run(scenario)


def test_unsupported_version_is_505() -> None:
    async def scenario(srv: Server) -> None:
        await expect_error(srv, b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "version_not_supported")
        await expect_error(srv, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "version_not_supported")

    run(scenario)


def test_10mb_content_length_is_413_without_reading_the_body() -> None:
    async def scenario(srv: Server) -> None:
        head = b"PUT /kv/big HTTP/1.1\r\nHost: h\r\nContent-Length: 10485760\r\n\r\n"
        # Only the head is sent: the answer must come without any of the 10 MB.
        body = await expect_error(srv, head, 413, "too_large")
        assert "10485760" in body["message"]
        assert srv.stats.requests == 0
        assert srv.app.seen == []

    run(scenario)


def test_413_reaches_a_client_that_keeps_sending_its_body() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        size = 4 * 1024 * 1024
        c.writer.write(b"PUT /kv/big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size)
        c.writer.write(b"x" * size)  # buffered by the client; the server discards what it gets
        r = await c.response()
        assert r.status == 413
        c.writer.transport.abort()

    run(scenario)


def test_chunked_body_over_the_limit_is_413() -> None:
    async def scenario(srv: Server) -> None:
        body = b"400\r\n" + b"x" * 1024 + b"\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n"
        data = raw_request("PUT", "/kv/x", body, Transfer_Encoding="chunked")
        await expect_error(srv, data, 413, "too_large")

    run(scenario, HttpLimits(max_body=1500))


def test_content_length_at_the_limit_is_accepted() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        assert (await c.request("PUT", "/kv/x", b"y" * 1500)).status == 204
        c.close()
        await expect_error(srv, raw_request("PUT", "/kv/x", b"y" * 1501), 413, "too_large")

    run(scenario, HttpLimits(max_body=1500))


def test_oversized_header_section_is_431() -> None:
    async def scenario(srv: Server) -> None:
        data = raw_request("GET", "/kv/x", X_Big="a" * 20_000)
        await expect_error(srv, data, 431, "too_large")

    run(scenario)


def test_header_section_without_an_end_is_431_once_over_the_limit() -> None:
    async def scenario(srv: Server) -> None:
        # The blank line never comes: the server must not buffer forever.
        await expect_error(srv, b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000, 431, "too_large")

    run(scenario)


def test_too_many_header_fields_is_431() -> None:
    async def scenario(srv: Server) -> None:
        fields = "".join(f"X-{i}: v\r\n" for i in range(101))
        data = f"GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n".encode()
        await expect_error(srv, data, 431, "too_large")

    run(scenario)


def test_expect_100_continue() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        await c.send(b"PUT /kv/e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        status, _ = await c.read_head()
        assert status == 100
        await c.send(b"hello")
        assert (await c.response()).status == 204
        assert srv.app.store["e"] == b"hello"
        # A request without a body gets no interim response.
        await c.send(b"GET /kv/e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n")
        assert (await c.response()).body == b"hello"
        c.close()

    run(scenario)


def test_expect_100_continue_with_a_body_too_large_is_413_without_100() -> None:
    async def scenario(srv: Server) -> None:
        data = (
            b"PUT /kv/e HTTP/1.1\r\nHost: h\r\nContent-Length: 10485760\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        await expect_error(srv, data, 413, "too_large")  # read_head would fail on a 100 first

    run(scenario)


def test_stats_count_requests_statuses_and_connections() -> None:
    async def scenario(srv: Server) -> None:
        c = await srv.connect()
        await c.request("PUT", "/kv/s", b"1")
        await c.request("GET", "/kv/s")
        await c.request("GET", "/kv/nope")
        await expect_error(srv, b"BAD\r\n\r\n", 400, "bad_request")
        snap = srv.stats.snapshot()
        assert snap["requests"] == 3
        assert snap["bad_requests"] == 1
        assert snap["responses_2xx"] == 2
        assert snap["responses_4xx"] == 2
        assert snap["connections_total"] == 2
        assert snap["connections_open"] >= 1
        c.close()

    run(scenario)
