"""Responses held to the end of the loop turn: what leaves, when, and in which order.

A keep-alive response up to ``_DEFER_MAX`` bytes is held by its connection and written with the
others at the end of the event loop's turn (:mod:`realnet.http`'s docstring). These tests drive
the server's protocol objects on a real event loop with recording transports, so they can say
what was written before and after the turn ends, and that nothing a connection does to its
transport (a second pipelined response, 100 Continue, a refusal, a close, the client's EOF)
overtakes the response it holds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import realnet.http as http
import realnet.httpresponse as httpresponse
from realnet.http import HttpLimits, Request, Response
from realnet.ratelog import RateLog


class RecordingTransport(asyncio.Transport):
    """What a connection did to its transport, in order."""

    def __init__(self, log: list[tuple[str, Any]] | None = None, name: str = "t") -> None:
        super().__init__()
        self.log: list[tuple[str, Any]] = [] if log is None else log
        self.name = name
        self.closing = False

    def write(self, data: Any) -> None:
        assert not self.closing, "written after close"
        self.log.append((self.name, bytes(data)))

    def write_eof(self) -> None:
        self.log.append((self.name, "eof"))

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.log.append((self.name, "close"))
        self.closing = True

    def abort(self) -> None:
        self.log.append((self.name, "abort"))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


def handler(req: Request) -> Response:
    if req.target.startswith("/big"):
        return Response(200, b"b" * (http._DEFER_MAX + 1), "application/octet-stream")
    return Response(200, req.target.encode(), "text/plain")


def bodies(log: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Each write reduced to its body (the target the handler echoed), other events as they are."""
    out: list[tuple[str, Any]] = []
    for name, what in log:
        if isinstance(what, bytes):
            if what.startswith(b"HTTP/1.1 100"):
                out.append((name, "100"))
                continue
            _head, _, body = what.partition(b"\r\n\r\n")
            if body.startswith(b'{"error"'):
                out.append((name, "error"))
            else:
                out.append((name, body.decode() if len(body) < 100 else f"{len(body)} bytes"))
        else:
            out.append((name, what))
    return out


def get(target: str, extra: str = "") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


async def turn() -> None:
    """Let the loop finish the current turn (and run what it scheduled)."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def connect(state: http._ServerState, log: list[tuple[str, Any]], name: str) -> Any:
    conn = state.make_protocol()
    conn.connection_made(RecordingTransport(log, name))
    return conn


def run(coro: Any) -> None:
    asyncio.run(coro)


def make_state() -> http._ServerState:
    return http._ServerState(handler, HttpLimits(), asyncio.get_running_loop(), http.PARSERS[http.DEFAULT_PARSER])


def test_responses_of_one_turn_leave_together_at_its_end_in_the_order_they_were_made() -> None:
    async def main() -> None:
        state = make_state()
        log: list[tuple[str, Any]] = []
        a, b, c = (connect(state, log, n) for n in "abc")
        a.data_received(get("/1"))
        c.data_received(get("/2"))
        b.data_received(get("/3"))
        assert log == []  # held: nothing written inside the turn
        await turn()
        assert bodies(log) == [("a", "/1"), ("c", "/2"), ("b", "/3")]
        # the next turn holds afresh
        a.data_received(get("/4"))
        assert bodies(log)[3:] == []
        await turn()
        assert bodies(log)[3:] == [("a", "/4")]
        assert state.stats.requests == 4

    run(main())


def test_pipelined_requests_are_answered_in_order() -> None:
    async def main() -> None:
        state = make_state()
        log: list[tuple[str, Any]] = []
        a = connect(state, log, "a")
        a.data_received(get("/1") + get("/2") + get("/3"))
        # one response held at most: the second wrote the first, then itself; the third is held
        assert bodies(log) == [("a", "/1"), ("a", "/2")]
        await turn()
        assert bodies(log) == [("a", "/1"), ("a", "/2"), ("a", "/3")]

    run(main())


def test_a_large_response_is_written_at_once_after_what_is_held() -> None:
    async def main() -> None:
        state = make_state()
        log: list[tuple[str, Any]] = []
        a = connect(state, log, "a")
        a.data_received(get("/big"))
        assert bodies(log) == [("a", f"{http._DEFER_MAX + 1} bytes")]
        a.data_received(get("/1") + get("/big"))
        assert bodies(log)[1:] == [("a", "/1"), ("a", f"{http._DEFER_MAX + 1} bytes")]

    run(main())


@pytest.mark.parametrize(
    "case",
    ["connection-close", "http10", "continue", "bad-request", "client-eof", "expire", "close-if-idle"],
)
def test_nothing_a_connection_does_overtakes_the_response_it_holds(case: str) -> None:
    async def main() -> None:
        state = make_state()
        log: list[tuple[str, Any]] = []
        a = connect(state, log, "a")
        a.data_received(get("/1"))
        assert log == []
        if case == "connection-close":
            a.data_received(get("/2", "Connection: close\r\n"))
            want = [("a", "/1"), ("a", "/2"), ("a", "eof")]
        elif case == "http10":
            a.data_received(b"GET /2 HTTP/1.0\r\n\r\n")
            want = [("a", "/1"), ("a", "/2"), ("a", "eof")]
        elif case == "continue":
            a.data_received(b"PUT /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
            want = [("a", "/1"), ("a", "100")]
        elif case == "bad-request":
            a.data_received(b"NOT HTTP AT ALL\r\n\r\n")
            want = [("a", "/1"), ("a", "error"), ("a", "eof")]
        elif case == "client-eof":
            closes = a.eof_received()
            assert closes is False  # asyncio closes the transport at once: the response left first
            want = [("a", "/1")]
        elif case == "expire":
            a.expire()
            want = [("a", "/1"), ("a", "close")]
        else:
            a.close_if_idle()
            want = [("a", "/1"), ("a", "close")]
        assert bodies(log) == want
        await turn()
        assert bodies(log) == want  # the turn's end writes nothing more: what was held left once
        assert sum(1 for _n, w in bodies(log) if w == "/1") == 1

    run(main())


def test_a_connection_lost_while_holding_writes_nothing_afterwards() -> None:
    async def main() -> None:
        state = make_state()
        log: list[tuple[str, Any]] = []
        a, b = connect(state, log, "a"), connect(state, log, "b")
        a.data_received(get("/1"))
        b.data_received(get("/2"))
        a.connection_lost(None)
        await turn()
        assert bodies(log) == [("b", "/2")]

    run(main())


def test_a_deferred_answer_is_held_too_and_leaves_at_the_end_of_its_turn() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[Response]] = []

        def later(req: Request) -> asyncio.Future[Response]:
            fut: asyncio.Future[Response] = loop.create_future()
            futs.append(fut)
            return fut

        state = http._ServerState(later, HttpLimits(), loop, http.PARSERS[http.DEFAULT_PARSER])
        log: list[tuple[str, Any]] = []
        a = connect(state, log, "a")
        a.data_received(get("/1") + get("/2"))
        assert log == [] and len(futs) == 1
        futs[0].set_result(Response(200, b"/1", "text/plain"))
        await turn()
        # the first answer came, the pipelined second request was dispatched
        assert bodies(log) == [("a", "/1")] and len(futs) == 2
        futs[1].set_result(Response(200, b"/2", "text/plain"))
        await turn()
        assert bodies(log) == [("a", "/1"), ("a", "/2")]

    run(main())


class _Later:
    """A handler's answer given later through ``add_response_callback`` (as the node's reply
    slot gives a forwarded request's)."""

    def __init__(self, target: str, later: dict[str, Any]) -> None:
        self.target = target
        self.later = later

    def add_response_callback(self, fn: Any) -> None:
        self.later[self.target] = fn


def _batch_state(later: dict[str, Any]) -> http._ServerState:
    def h(req: Request) -> Any:
        if req.target.startswith("/later"):
            return _Later(req.target, later)
        return Response(200, req.target.encode(), "text/plain")

    return http._ServerState(h, HttpLimits(), asyncio.get_running_loop(), http.PARSERS[http.DEFAULT_PARSER])


def test_a_batch_of_deferred_answers_is_written_when_the_batch_ends_in_order() -> None:
    async def main() -> None:
        later: dict[str, Any] = {}
        state = _batch_state(later)
        log: list[tuple[str, Any]] = []
        a, b = connect(state, log, "a"), connect(state, log, "b")
        a.data_received(get("/later1") + get("/now"))  # pipelined behind a deferred answer
        b.data_received(get("/later2"))
        assert log == [] and set(later) == {"/later1", "/later2"}

        def ok(target: str) -> Response:
            return Response(200, target.encode(), "text/plain")

        state.answer_batch([(later["/later2"], ok("/later2")), (later["/later1"], ok("/later1"))])
        # written before answer_batch returned, with no turn of the loop in between; a's
        # pipelined request, answered at once, leaves after the answer it waited behind (a
        # second response in a turn writes the one held first, then itself)
        assert bodies(log) == [("a", "/later1"), ("a", "/now"), ("b", "/later2")]
        await turn()
        assert len(log) == 3
        # outside a batch, a held response still leaves at the end of the turn
        b.data_received(get("/after"))
        assert len(log) == 3
        await turn()
        assert bodies(log)[3:] == [("b", "/after")]

    run(main())


def test_a_failing_callback_in_a_batch_is_logged_and_the_others_are_still_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        later: dict[str, Any] = {}
        state = _batch_state(later)
        log: list[tuple[str, Any]] = []
        a, b = connect(state, log, "a"), connect(state, log, "b")
        a.data_received(get("/later1"))
        b.data_received(get("/later2"))

        def boom(resp: Response) -> None:
            raise RuntimeError("boom")

        state.answer_batch([(later["/later1"], Response(200, b"/later1", "text/plain")), (boom, Response(200)),
                            (later["/later2"], Response(200, b"/later2", "text/plain"))])
        assert bodies(log) == [("a", "/later1"), ("b", "/later2")]
        b.data_received(get("/after"))  # the batch is over: held to the end of the turn again
        assert len(log) == 2
        await turn()
        assert bodies(log)[2:] == [("b", "/after")]

    run(main())
    assert "a deferred response callback failed" in caplog.text


def test_the_node_api_gives_its_batch_of_answers_to_the_server_when_it_has_one() -> None:
    from realnet.api import Api

    given: list[Any] = []
    called: list[Any] = []
    api = Api.__new__(Api)
    api._ready = [(called.append, Response(204))]
    api.answer_batch = given.append
    api._run_ready()
    assert called == [] and len(given) == 1 and given[0][0][0] == called.append
    assert api._ready == []
    api._ready = [(called.append, Response(204))]
    api.answer_batch = None
    api._run_ready()
    assert [r.status for r in called] == [204]


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_an_answer_owed_to_a_connection_refused_meanwhile_does_not_lose_another_clients(
    loop_kind: str,
) -> None:
    # A's request is being answered (forwarded) when its pipelined body overfills the server's
    # buffers: A is refused (503, FIN). Its late answer must be dropped, not written after the
    # FIN (a RuntimeError that took B's held answer, given in the same batch, with it).
    async def main() -> None:
        later: dict[str, Any] = {}

        def h(req: Request) -> Any:
            return _Later(req.target, later)

        server = await http.start_http_server(h, "127.0.0.1", 0, HttpLimits(max_buffered_bodies=100 * 1024))
        try:
            port = server.sockets[0].getsockname()[1]
            state = http._STATES[server]
            ra, wa = await asyncio.open_connection("127.0.0.1", port)
            rb, wb = await asyncio.open_connection("127.0.0.1", port)
            wa.write(get("/later1"))
            wb.write(get("/later2"))
            for _ in range(200):
                if len(later) == 2:
                    break
                await asyncio.sleep(0.005)
            body = b"x" * (200 * 1024)
            wa.write(f"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            first = await asyncio.wait_for(ra.readuntil(b"\r\n\r\n"), 5)
            assert first.startswith(b"HTTP/1.1 503")
            await asyncio.sleep(0.05)

            def ok(target: str) -> Response:
                return Response(200, target.encode(), "text/plain")

            state.answer_batch([(later["/later1"], ok("/later1")), (later["/later2"], ok("/later2"))])
            got = await asyncio.wait_for(rb.readuntil(b"/later2"), 2)
            assert got.startswith(b"HTTP/1.1 200")
            rest = await asyncio.wait_for(ra.read(), 2)  # A: its 503's body, then the close
            assert b"HTTP/1.1" not in rest
            wa.close()
            wb.close()
        finally:
            server.close()

    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(main())
    else:
        run(main())


_RESPONSES = [
    Response(200, b"x", "application/octet-stream"), Response(200, b"", "application/octet-stream"),
    Response(200, b"v" * 1023, "application/octet-stream"), Response(200, b"v" * 1024, "application/octet-stream"),
    Response(200, b"v" * 5000, "application/octet-stream"),
    Response(200, b"v" * (http._DEFER_MAX + 1), "application/octet-stream"),
    Response(204), Response(204, b"a body"), Response(304), Response(304, b"a body"),
    http.error_response(404, "not_found", "no such key"), Response(200, b"x", None),
    Response(200, b"x", "text/plain", (("X-Extra", "1"),)), Response(599, b"x", "text/plain"),
    Response(200, b"x", "bad\r\ntype"),
]
_REQUESTS = {
    "keep-alive": get("/later"), "close": get("/later", "Connection: close\r\n"),
    "http10": b"GET /later HTTP/1.0\r\nHost: x\r\n\r\n", "head": b"HEAD /later HTTP/1.1\r\nHost: x\r\n\r\n",
    "shutting-down": get("/later"), "stale-date": get("/later"),
}


@pytest.mark.parametrize("case", list(_REQUESTS))
@pytest.mark.parametrize("resp", _RESPONSES, ids=lambda r: f"{r.status}-{len(r.body)}-{r.content_type}-{r.headers}")
def test_a_deferred_answer_is_written_as_an_answer_given_at_once(
    case: str, resp: Response, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deferred answer (``_on_response``, with _serialize's commonest case asked first) puts
    the same bytes on the wire, counted alike, as the same Response given at once (``_respond``
    and ``_serialize``): every status, body size, content type and field, every kind of
    request, a server shutting down, the Date line gone stale."""
    # (the refusals this test causes must not spend the rate-limited log other tests read)
    monkeypatch.setattr(http, "refusals", RateLog(logging.getLogger("tests.http_held"), rate=1.0, burst=10))

    async def main() -> None:
        later: dict[str, Any] = {}

        def h(req: Request) -> Any:
            return _Later(req.target, later) if later.get("defer") else resp

        loop = asyncio.get_running_loop()
        states = [http._ServerState(h, HttpLimits(), loop, http.PARSERS[http.DEFAULT_PARSER]) for _ in "ab"]
        logs: list[list[tuple[str, Any]]] = [[], []]
        for i, (state, log) in enumerate(zip(states, logs, strict=True)):
            conn = connect(state, log, "c")
            for _ in range(2):  # the second time the head was built before in this second
                if case == "stale-date":
                    monkeypatch.setattr(httpresponse, "_date_valid_until", 0.0)
                later["defer"] = i == 1
                # (shutting down: before the answer given at once, while the deferred one waits)
                state.shutting_down = case == "shutting-down" and i == 0
                conn.data_received(_REQUESTS[case])
                state.shutting_down = case == "shutting-down"
                if i == 1 and "/later" in later:  # (a closing connection reads no more)
                    later.pop("/later")(resp)
                await turn()
                state.shutting_down = False
                if conn._transport is None or conn._transport.is_closing():
                    break
        # (the Date line may differ if the second turned meanwhile: compare without it)
        strip = [[(n, w if not isinstance(w, bytes) else b"\r\n".join(
            ln for ln in w.split(b"\r\n") if not ln.startswith(b"Date: "))) for n, w in log] for log in logs]
        assert strip[0] == strip[1] and strip[0]
        assert states[0].stats.snapshot() == states[1].stats.snapshot()

    run(main())


def test_the_commonest_deferred_answer_takes_no_general_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forwarded request's answer (keep-alive HTTP/1.1, a head built before in this second)
    is written without _respond and _serialize."""

    async def main() -> None:
        later: dict[str, Any] = {}
        state = _batch_state(later)
        log: list[tuple[str, Any]] = []
        a = connect(state, log, "a")
        a.data_received(get("/now"))  # the head of a 200 text/plain, built in this second
        await turn()
        calls: list[str] = []

        def general(name: str) -> Any:
            def call(*args: Any) -> None:
                calls.append(name)
                raise AssertionError(name)

            return call

        monkeypatch.setattr(http._HttpConnection, "_respond", general("_respond"))
        # (the connection calls the name realnet.http imported, keepalive_response its own)
        monkeypatch.setattr(http, "_serialize", general("_serialize"))
        monkeypatch.setattr(httpresponse, "_serialize", general("_serialize"))
        a.data_received(get("/later1"))
        state.answer_batch([(later["/later1"], Response(200, b"/later1", "text/plain"))])
        assert bodies(log) == [("a", "/now"), ("a", "/later1")] and calls == []

    run(main())


def test_a_lane_answer_given_later_is_waited_on_without_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plain request the lane answers later (a forwarded one) is waited on by its
    ``add_response_callback`` directly, as ``_take`` would; what ``_take`` alone decides (a
    Response, a future without that method) still goes through it."""

    async def main() -> None:
        later: dict[str, Any] = {}
        loop = asyncio.get_running_loop()

        def lane(method: bytes, target: bytes, host: str, auth: str | None, body: bytes) -> Any:
            if target == b"/later":
                return _Later("/later", later)
            if target == b"/future":
                fut: asyncio.Future[Response] = loop.create_future()
                fut.set_result(Response(200, b"/future", "text/plain"))
                return fut
            return Response(200, target, "text/plain")

        state = http._ServerState(handler, HttpLimits(), loop, http.PARSERS[http.DEFAULT_PARSER], lane=lane)
        log: list[tuple[str, Any]] = []
        a = connect(state, log, "a")
        taken: list[str] = []
        take = http._HttpConnection._take

        def counted(self: Any, result: Any, method: str, target: str) -> None:
            taken.append(target)
            take(self, result, method, target)

        monkeypatch.setattr(http._HttpConnection, "_take", counted)
        a.data_received(get("/later"))
        later.pop("/later")(Response(200, b"/later", "text/plain"))
        await turn()
        a.data_received(get("/future"))
        await turn()
        await turn()
        a.data_received(get("/now"))
        await turn()
        assert bodies(log) == [("a", "/later"), ("a", "/future"), ("a", "/now")]
        assert taken == ["/future", "/now"]
        assert state.stats.requests == 3

    run(main())


def test_a_turns_replies_are_deferred_as_one_batch_by_the_slots_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's reply slots defer their answers as ``Api._defer`` does (its work, inline):
    the replies of one turn run together, in order, from one scheduled call."""
    from kvcore.messages import Reply
    from realnet.api import Api, _ReplySlot
    from realnet.metrics import OpLatency

    scheduled: list[Any] = []

    class Loop:
        def call_soon(self, fn: Any, *args: Any) -> None:
            scheduled.append((fn, args))

    api = Api.__new__(Api)
    api._ready = []
    api.answer_batch = None
    api.loop = Loop()  # type: ignore[assignment]
    api.clock = lambda: 2.0
    api.op_latency = OpLatency()
    api.statuses = {}

    def never(*args: Any) -> None:
        raise AssertionError("Api._defer was called")

    monkeypatch.setattr(Api, "_defer", never)
    got: list[tuple[int, Response]] = []
    slots = [_ReplySlot(api, i != 1, "get" if i != 1 else "put", 1.0) for i in range(3)]
    for i, slot in enumerate(slots):
        slot.deferred = True
        slot.add_response_callback(lambda r, i=i: got.append((i, r)))
    for slot in reversed(slots):
        slot(Reply(value=b"v") if slot.is_get else Reply())
    assert got == [] and len(scheduled) == 1
    fn, args = scheduled.pop()
    fn(*args)
    assert [(i, r.status) for i, r in got] == [(2, 200), (1, 204), (0, 200)]
    assert api.statuses == {200: 2, 204: 1} and api._ready == [] and scheduled == []
