"""A small, strict HTTP/1.1 server on ``asyncio.Protocol`` for the node's client API.

Theory of operation
-------------------
One :class:`_HttpConnection` protocol object per TCP connection, no streams and no tasks. The
connection owns the loop (keep-alive, pipelining, back-pressure, timeouts, closing) and the
responses; parsing is a library's, behind :class:`realnet.httpparse.RequestParser`: every byte
read is fed to the connection's parser, which yields complete requests (head and whole body),
an "answer 100 Continue now" event, or a refusal (status, code, sentence). The parser is
llhttp through ``httptools`` by default, or ``h11`` (``start_http_server(..., parser="h11")``,
``python -m realnet.node --http-parser h11``); :mod:`realnet.httpparse` says which rules are the
library's and which are ours (framing per RFC 9112 §6.3, Host, limits, Expect), and they are the
same for both: a declared body above :attr:`HttpLimits.max_body` is 413 before any body byte is
read; a head above :attr:`HttpLimits.max_header_bytes` or with too many fields is 431;
``Expect: 100-continue`` gets an interim ``100 Continue`` once the head has been accepted and no
body byte has arrived yet (RFC 9110 §10.1.1); any other expectation gets 417.

The common read holds exactly one whole request and arrives at an idle connection; it takes the
parser's fast path (:meth:`~realnet.httpparse.RequestParser.parse_whole`: one library call, no
buffering), which gives the same request or refusal as the general path or declines and leaves
everything to it. Before that, a server given a ``lane`` (:data:`Lane`, the node's is
:meth:`realnet.api.Api.lane`) offers such a read to it when :mod:`realnet.httpplain` recognises a
plain request in it (``GET``, ``PUT`` or ``DELETE`` of a path with nothing to decode, HTTP/1.1,
Host, a Content-Length body or none, no field that changes framing or persistence): the lane
answers with the response's bytes,
a Response or a future exactly as the handler would, or declines having done nothing, and the
parser's path takes the read. A plain request thus costs a regular expression match and a table
lookup instead of a library call with its callbacks, a field dictionary and a :class:`Request`. Once a request is
complete it goes to the handler, which returns a :class:`Response` (the fast
path: the response is ready before ``data_received`` returns) or a future that is resolved
later, for example after the request was forwarded to another node. A connection handles one
request at a time: while a response is outstanding, further bytes are only buffered (in the
parser, which parses nothing until the connection asks for the next request), so pipelined
requests are answered strictly in order, and reading is paused when that buffer passes
``_HIGH_WATER``. Reading is also paused while the transport's write buffer is full (a client that
sends but does not read), and resumed with it. A handler that raises, returns something that is
not a response, or whose future fails, produces ``500 internal`` with the traceback logged; the
server itself never dies of a request.

A keep-alive response of at most ``_DEFER_MAX`` bytes is not written at once: the connection holds
it and the server writes every held response at the end of the event loop's turn, in one pass
(:meth:`_ServerState.write_held`). Under load a turn reads many connections' requests; their
responses then leave back to back, so a client on this host is woken once per batch instead of
once per response (the wake-up, charged to the sender on loopback, was 14 % of the node's CPU
under ``benchmarks/http_throughput.py``), and the kernel's send path stays warm: 7–17 % less CPU
per local request, measured against the node that wrote at once in the same run. Idle, a
response waits one loop turn. A connection holds at most one response: a second one in the same
turn (pipelining) writes the held one first, then itself, so responses leave in order and the
transport's back-pressure (``pause_writing``) sees every byte as before; and everything else a
connection does to its transport (100 Continue, a refusal, a close, the client's EOF) writes its
held response first. Deferred answers given as a batch (:func:`batch_answerer`: the node's
forwarded requests, whose replies from the owner arrive many per turn and are answered together
on the next one) are written when the batch ends, not one more turn later: the batch is a turn of
its own, and under load that turn is one event-loop iteration (an ``epoll_wait``) per batch fewer.

Every response carries ``Content-Length`` (except 204 and 304, where RFC 9110 §8.6 forbids it or
it would describe another representation) and a ``Date`` field cached per second. The bytes of a
response live in :mod:`realnet.httpresponse` (:class:`Response`, :class:`Pending`,
:func:`json_response`, :func:`error_response`, :func:`keepalive_response`, re-exported here): the
head of a plain keep-alive response (status line, Content-Type, Date) is built once per second
per status and type, and the next such response is that head, its Content-Length line and its
body. Error bodies are always ``{"error": CODE, "message": SENTENCE}``.

``HEAD`` reaches the handler as ``HEAD``; the server drops the body of its response and keeps the
``Content-Length``, so a handler may answer HEAD exactly as it answers GET.

A protocol error (400, 408, 413, 417, 431, 501, 505) is answered and the connection closed. Closing
is a *lingering close* as nginx and Apache do it: shut down our sending side (FIN after the
response), discard whatever the client still sends, and close the socket when the client closes
or after ``_LINGER_SECONDS``. Closing a socket with unread input makes the kernel send a RST,
which can destroy the error response before the client reads it (RFC 9112 §9.6).

Idle keep-alive connections (and requests that stall half-way) are closed by one periodic sweep
per server rather than a timer per request, and the hot path never reads the clock: a connection
only sets an ``active`` flag when bytes arrive or a deferred response is sent. The sweep (every
``min(1 s, keepalive_timeout / 4)``) clears the flag and notes the time; a connection whose flag
stayed clear for :attr:`HttpLimits.keepalive_timeout` is closed (answered ``408`` first when a
request was half-received). Idle time is thus measured to within one sweep interval.

What clients may hold is bounded (issue 10), each bound an :class:`HttpLimits` field: at most
``max_connections`` connections (one more is answered ``503 too_many_connections`` at once and
closed, without lingering: the point is to give its descriptor back; :func:`default_max_connections`
derives the cap from the open-file limit); a request head must be complete within
``head_timeout`` seconds of the sweep first seeing it begun, however actively it trickles (408);
the bytes the parsers of all connections hold while bodies arrive are summed
(``server_stats.buffered``), and once the sum passes ``max_buffered_bodies`` a connection holding
over 64 KiB of it is answered ``503 busy`` and closed (a small request is never refused for it:
the bound is the larger of the setting and ``max_connections`` x 64 KiB); a whole request, body included, must arrive within
``request_timeout`` of its start (408; by default the keep-alive timeout; a head is cut at the
sooner of the two deadlines). A server given a ``head_check`` (the node's token and
Host checks) judges a request whose body is still to come by its head, before it answers
``100 Continue`` or buffers a byte of the body: refused, it is answered at once and the
connection closed, so a client without a token can hold no body. Everything a client's input causes is logged through one
rate-limited log (:data:`refusals`, :class:`realnet.ratelog.RateLog`), and
:func:`rate_limited_exception_handler` does the same for the event loop's reports, among them the
flood asyncio's accept loop produces when ``accept()`` fails with EMFILE. What was refused is
counted by reason (``server_stats.refused``).

Counters live in one :class:`HttpServerStats` per server, reachable as :func:`server_stats` of
the server :func:`start_http_server` returned (and as its ``server_stats`` attribute where the
server takes attributes: asyncio's does, uvloop's does not). :func:`stop_http_server` shuts
a server down gracefully: stop accepting, close idle connections, let in-flight requests finish
(their responses say ``Connection: close``), then abort what remains after a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from realnet.httpparse import (
    CONTINUE,
    DEFAULT_PARSER,
    PARSERS,
    HttpLimits,
    ParseError,
    Request,
    RequestParser,
)
from realnet.httpplain import PlainRecogniser
from realnet.httpresponse import (
    Pending,
    Response,
    _known_head_bytes,
    _serialize,
    error_response,
    json_response,
    keepalive_response,
)
from realnet.ratelog import RateLog

__all__ = [
    "give_answers",
    "DEFAULT_PARSER",
    "PARSERS",
    "Handler",
    "HttpLimits",
    "HttpServerStats",
    "HeadCheck",
    "Lane",
    "Pending",
    "Request",
    "Response",
    "default_max_connections",
    "error_response",
    "json_response",
    "keepalive_response",
    "rate_limited_exception_handler",
    "refusals",
    "start_http_server",
    "stop_http_server",
]

log = logging.getLogger(__name__)


Handler = Callable[[Request], "Response | Pending"]
#: judges a request by its head while its body is still to come: a Response refuses it (sent at
#: once, the connection then closed without reading the body), None lets the body be read
HeadCheck = Callable[[Request], "Response | None"]
#: the handler's lane for plain requests (module docstring): given (method, target, Host,
#: Authorization or None, body) of a request :class:`realnet.httpplain.PlainRecogniser`
#: recognised, the bytes of a keep-alive response (:func:`keepalive_response`), a Response or a
#: future, as the handler would answer that request; or None having done nothing (the parser's
#: path then)
Lane = Callable[[bytes, bytes, str, "str | None", bytes], "bytes | Response | Pending | None"]


@dataclass(slots=True)
class HttpServerStats:
    """Counters of one server, cheap to bump on the hot path; read them for /metrics."""

    requests: int = 0
    """Complete requests handed to the handler."""
    bad_requests: int = 0
    """Requests refused by the server itself (malformed, too large, unsupported)."""
    handler_errors: int = 0
    """Handler exceptions, failed futures and invalid responses (each answered 500)."""
    responses_by_class: list[int] = field(default_factory=lambda: [0] * 6)
    """Responses sent, indexed by ``status // 100`` (index 0 unused)."""
    connections_open: int = 0
    connections_total: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    """Connections and requests refused to bound resources, by reason: ``connections`` (over
    :attr:`HttpLimits.max_connections`), ``head_timeout``, ``body_timeout`` (a request unfinished
    within :attr:`HttpLimits.request_timeout`), ``buffered_bodies``,
    ``accept_errors`` (the listening socket's accept failed: EMFILE and its kin)."""
    refused_before_body: int = 0
    """Requests the head check refused, their bodies never read (the handler that judged them
    counts them by status too)."""
    buffered: int = 0
    """Bytes the parsers of every connection hold now (bodies being received, pipelined input)."""

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def snapshot(self) -> dict[str, int]:
        """A flat copy, e.g. ``{"requests": 10, "responses_2xx": 9, ...}``."""
        out = {
            "requests": self.requests,
            "bad_requests": self.bad_requests,
            "handler_errors": self.handler_errors,
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "buffered_bytes": self.buffered,
        }
        for reason, n in sorted(self.refused.items()):
            out[f"refused_{reason}"] = n
        for cls in range(1, 6):
            out[f"responses_{cls}xx"] = self.responses_by_class[cls]
        return out


# --- protocol tables -------------------------------------------------------------------------

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_HIGH_WATER = 256 * 1024  # buffered bytes (behind an outstanding response) before pause_reading
#: a keep-alive response up to this size is held until the end of the loop turn (module docstring);
#: a connection holds one at most, so what a server holds is bounded by its connections
_DEFER_MAX = 16 * 1024
_LINGER_SECONDS = 2.0  # lingering close: how long to drain a client after our FIN
_LINGER_MAX_BYTES = 16 * 1024 * 1024  # ... and how much of it to discard at most

_INTERNAL = error_response(500, "internal", "The server failed to handle the request.")

#: one rate-limited log for everything a client's input causes (realnet.ratelog)
refusals = RateLog(log, rate=1.0, burst=10)


def give_answers(answers: list[tuple[Callable[[Response], None], Response]]) -> None:
    """Call ``callback(response)`` for each of ``answers`` in order; one that raises is logged
    and the others still run (as the loop does for a failing callback)."""
    for callback, resp in answers:
        try:
            callback(resp)
        except Exception:
            log.exception("a deferred response callback failed")


class _ServerState:
    """What all connections of one server share: handler, limits, counters, the idle sweep."""

    __slots__ = (
        "__weakref__",
        "_sweep_handle",
        "conns",
        "drained",
        "all_closed",
        "handler",
        "head_check",
        "lane",
        "limits",
        "plain",
        "loop",
        "max_connections",
        "parser_class",
        "server",
        "shutting_down",
        "stats",
        "_held_conns",
        "_in_batch",
    )

    def __init__(
        self,
        handler: Handler,
        limits: HttpLimits,
        loop: asyncio.AbstractEventLoop,
        parser_class: type[RequestParser],
        head_check: HeadCheck | None = None,
        lane: Lane | None = None,
    ):
        self.handler = handler
        self.head_check = head_check
        self.lane = lane
        self.plain = PlainRecogniser(limits)
        self.limits = limits
        self.parser_class = parser_class
        self.stats = HttpServerStats()
        self.max_connections = limits.max_connections
        self.loop = loop
        self.conns: set[_HttpConnection] = set()
        self.server: asyncio.Server | None = None
        self.shutting_down = False
        self.drained: asyncio.Future[None] | None = None
        self.all_closed: asyncio.Future[None] | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        #: connections holding a response until the end of this loop turn (write_held)
        self._held_conns: list[_HttpConnection] = []
        #: a batch of deferred answers is being given (:meth:`answer_batch`): what they hold is
        #: written when it ends, not on the next turn
        self._in_batch = False

    def answer_batch(self, answers: list[tuple[Callable[[Response], None], Response]]) -> None:
        """Call ``callback(response)`` for each of ``answers`` in order (the deferred answers
        one loop turn brought: a handler's ``add_response_callback`` callbacks), then write
        every response held meanwhile, at once rather than on the next turn: the batch is
        already a turn of its own, and its responses leave back to back as a turn's do. A
        callback that raises is logged and the others still run."""
        self._in_batch = True
        try:
            give_answers(answers)
        finally:
            self._in_batch = False
            if self._held_conns:
                self.write_held()

    def write_held(self) -> None:
        """Write every held response, in the order they were held."""
        held = self._held_conns
        self._held_conns = []
        for conn in held:
            try:
                conn.write_held()
            except Exception:  # one connection's transport must not take the others' answers
                log.exception("writing a held response failed")

    def make_protocol(self) -> _HttpConnection:
        return _HttpConnection(self)

    def sweep_interval(self) -> float:
        limits = self.limits
        return max(0.05, min(1.0, limits.keepalive_timeout / 4, limits.head_timeout / 4,
                             limits.whole_request_timeout() / 4))

    def start_sweep(self) -> None:
        if self._sweep_handle is None:
            self._sweep_handle = self.loop.call_later(self.sweep_interval(), self._sweep)

    def stop_sweep(self) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None

    def _sweep(self) -> None:
        self._sweep_handle = None
        now = self.loop.time()
        timeout = self.limits.keepalive_timeout
        request_timeout = self.limits.whole_request_timeout()
        head_timeout = min(self.limits.head_timeout, request_timeout)
        for conn in list(self.conns):
            if conn.overdue(now, head_timeout, request_timeout):
                continue
            if conn.active:
                conn.active = False
                conn.idle_since = now
            elif now - conn.idle_since >= timeout:
                conn.expire()
        serving = self.server is not None and self.server.is_serving()
        if serving or self.conns:
            self.start_sweep()

    def connection_closed(self, conn: _HttpConnection) -> None:
        self.conns.discard(conn)
        self.stats.connections_open -= 1
        self.check_drained()
        if not self.conns and self.all_closed is not None and not self.all_closed.done():
            self.all_closed.set_result(None)

    def check_drained(self) -> None:
        """During shutdown: resolve ``drained`` once every connection has had its last answer."""
        if self.drained is not None and not self.drained.done():
            if all(conn.answered_last for conn in self.conns):
                self.drained.set_result(None)


class _HttpConnection(asyncio.Protocol):
    """One client connection. See the module docstring for the request cycle."""

    __slots__ = (
        "_busy",
        "_closing",
        "_discarded",
        "_handler",
        "_head_judged",
        "_head_mark",
        "_held",
        "_head_only",
        "_held_response",
        "_http10",
        "_keep_alive",
        "_linger_handle",
        "_lingering",
        "_fed",
        "_parser",
        "_peer",
        "_peer_eof",
        "_read_paused",
        "_srv",
        "_stats",
        "_transport",
        "_write_paused",
        "active",
        "idle_since",
        "dispatched",
    )

    def __init__(self, srv: _ServerState) -> None:
        self._srv = srv
        self._stats = srv.stats
        self._handler = srv.handler
        self._transport: asyncio.Transport | None = None
        self._peer: tuple[str, int] | None = None
        self._parser: RequestParser = srv.parser_class(srv.limits)
        #: the parser was ever fed (``feed``): until then it holds nothing and is in no request
        #: (the lane and ``parse_whole`` never leave bytes in it), so the hot path need not ask
        self._fed = False
        self._busy = False
        self._closing = False
        self._lingering = False
        self._discarded = 0
        self._peer_eof = False
        self._read_paused = False
        self._write_paused = False
        self.active = False
        self.idle_since = srv.loop.time()
        self._keep_alive = True
        self._http10 = False
        self._head_only = False
        self._linger_handle: asyncio.TimerHandle | None = None
        #: a response written at the end of this loop turn (see the module docstring)
        self._held_response: bytes | None = None
        #: requests dispatched so far; (dispatched, time) when the sweep first saw a partial head
        self.dispatched = 0
        self._head_mark: tuple[int, float] | None = None
        #: the request whose head the server's head check last passed (its body still arriving)
        self._head_judged: Request | None = None
        #: bytes this connection's parser holds, as last added to the server's ``buffered``
        self._held = 0

    # --- asyncio.Protocol callbacks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # an asyncio.Transport in behaviour (uvloop's transports are not its subclasses)
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = (str(peer[0]), int(peer[1]))
            self._parser = self._srv.parser_class(self._srv.limits, self._peer)
        srv = self._srv
        srv.stats.connections_total += 1
        cap = srv.max_connections
        if cap and srv.stats.connections_open >= cap:
            self._over_cap(transport, cap)
            return
        srv.conns.add(self)
        srv.stats.connections_open += 1

    def _over_cap(self, transport: asyncio.Transport, cap: int) -> None:
        """One connection too many: answer 503 at once and close (no lingering: the point is to
        give the descriptor back)."""
        srv = self._srv
        srv.stats.refuse("connections")
        srv.stats.responses_by_class[5] += 1
        refusals.warning(
            "http.connections", "refusing a client connection from %s: %d are open (the cap)",
            self._peer, cap,
        )
        self._closing = True
        self._lingering = True
        resp = error_response(
            503, "too_many_connections",
            f"The node serves at most {cap} client connections at once; try again later.",
        )
        resp.headers = (("Retry-After", "1"),)
        try:
            transport.write(_serialize(resp, False, False, False))
        finally:
            transport.close()
    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._held_response = None
        self._closing = True
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        if self._held:
            self._srv.stats.buffered -= self._held
            self._held = 0
        if self in self._srv.conns:
            self._srv.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discarded += len(data)
            if self._discarded > _LINGER_MAX_BYTES and self._transport is not None:
                self._transport.abort()  # (lingering: nothing is held)
            return
        self.active = True
        parser = self._parser
        if not (self._busy or self._write_paused or self._closing):
            lane = self._srv.lane
            if lane is not None and self._answer_plain(lane, data):
                if self._read_paused or self._peer_eof:
                    self._process()  # what the general path does after a request
                return
            # The fast path: a read holding exactly one request, to a parser holding nothing.
            try:
                req = parser.parse_whole(data)
            except ParseError as err:
                self._reject(err.status, err.code, err.message)
                return
            if req is not None:
                self._keep_alive = parser.keep_alive
                self._dispatch(req)
                if self._read_paused or self._peer_eof:
                    self._process()  # what the general path does after a request
                return
        self._fed = True
        parser.feed(data)
        if self._busy or self._write_paused:
            # Behind an outstanding response: only buffer, up to the high-water mark.
            if parser.buffered > _HIGH_WATER and not self._read_paused and self._transport:
                self._read_paused = True
                self._transport.pause_reading()
            self._account()
            return
        self._process()

    def _account(self) -> None:
        """Keep the server's count of held bytes; refuse the connection that overfills it."""
        if self._transport is None or self._lingering:
            return
        held = self._parser.held
        stats = self._stats
        stats.buffered += held - self._held
        self._held = held
        limit = self._srv.limits.max_buffered_bodies
        if stats.buffered > limit and held > 64 * 1024:
            stats.refuse("buffered_bodies")
            refusals.warning(
                "http.buffered_bodies",
                "refusing a request from %s: request bodies held across connections passed %d bytes",
                self._peer, limit,
            )
            stats.buffered -= held
            self._held = 0
            self._reject(
                503, "busy",
                "The node holds too many request bodies being received; try again later.",
            )

    def eof_received(self) -> bool:
        self._peer_eof = True
        self.write_held()  # returning False closes the transport: what it holds leaves first
        if self._lingering:
            return False
        # Keep our sending side open while a response is still owed; _process closes after it.
        return self._busy or (self._write_paused and self._parser.buffered > 0)

    def pause_writing(self) -> None:
        self._write_paused = True
        if not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._process()

    # --- request cycle ------------------------------------------------------------------------

    def _process(self) -> None:
        """Take requests from the parser and dispatch them until one is outstanding or more
        bytes are needed."""
        parser = self._parser
        while not (self._busy or self._closing or self._write_paused):
            try:
                event = parser.next_event()
            except ParseError as err:
                self._reject(err.status, err.code, err.message)
                break
            if event is None:
                if parser.pending is not None and self._head_refused():
                    return
                break
            if event is CONTINUE:
                if self._head_refused():
                    return  # no 100 Continue for a request the head alone refuses
                if self._transport is not None:
                    self.write_held()
                    self._transport.write(_CONTINUE)
                continue
            assert type(event) is Request
            self._keep_alive = parser.keep_alive
            self._dispatch(event)
        transport = self._transport
        if transport is None or self._lingering:
            return
        if self._held or parser.buffered:
            self._account()
            if self._lingering:
                return
        if self._peer_eof and not self._busy and not self._write_paused:
            self.write_held()
            transport.close()  # the client half-closed and every complete request was answered
            return
        if (
            self._read_paused
            and not self._write_paused
            and (not self._busy or parser.buffered <= _HIGH_WATER)
        ):
            self._read_paused = False
            transport.resume_reading()

    def _head_refused(self) -> bool:
        """Judge the head of the request whose body is arriving by the server's head check (once):
        refused, answer now and close, never reading the body (True). So a client without the
        token holds no body in the node's buffers and is sent no ``100 Continue``."""
        req = self._parser.pending
        check = self._srv.head_check
        if check is None or req is None or req is self._head_judged:
            return False
        self._head_judged = req
        try:
            resp = check(req)
        except Exception:
            refusals.log(logging.ERROR, "http.500", "HTTP head check failed on %s %.200s", req.method,
                         req.target, exc_info=True)
            self._stats.handler_errors += 1
            resp = _INTERNAL
        if resp is None:
            return False
        self._stats.refused_before_body += 1
        self._stats.requests += 1
        self._http10 = req.version == "HTTP/1.0"
        self._head_only = req.method == "HEAD"
        self._keep_alive = False  # the body is not read: the connection cannot carry another
        self._respond(resp)
        return True

    def _answer_plain(self, lane: Lane, data: bytes) -> bool:
        """The plain-request lane (module docstring): True when ``data``, a whole plain request
        to an idle connection, was taken by the handler's lane, which answered it now (the
        response's bytes) or will (a future); False having done nothing."""
        srv = self._srv
        if srv.shutting_down or (self._fed and self._parser.in_message):
            return False  # (shutting down: the response must say Connection: close)
        parts = srv.plain(data)
        if parts is None:
            return False
        stats = self._stats
        try:
            result: Any = lane(*parts)
        except Exception:
            refusals.log(logging.ERROR, "http.500", "HTTP lane failed on %s %.200s", parts[0],
                         parts[1], exc_info=True)
            stats.handler_errors += 1
            result = _INTERNAL
        if result is None:
            return False
        self._http10 = self._head_only = False
        self._keep_alive = True
        self.dispatched += 1
        stats.requests += 1
        if type(result) is bytes:  # b"HTTP/1.1 204 ...": the status class is its 10th byte
            stats.responses_by_class[result[9] - 48] += 1
            self._send(result, True)
        elif type(result) is not Response and (
            add_response_callback := getattr(result, "add_response_callback", None)
        ) is not None:
            # _take's answer later, inline (every forwarded request's)
            self._busy = True
            add_response_callback(self._on_response)
        else:
            self._busy = True
            self._take(result, parts[0].decode(), parts[1].decode())
        return True

    def _dispatch(self, req: Request) -> None:
        """Hand the complete request to the handler; answer now or when its future resolves."""
        self._http10 = req.version == "HTTP/1.0"
        self._head_only = req.method == "HEAD"
        self._busy = True
        self.dispatched += 1
        self._stats.requests += 1
        try:
            result: Any = self._handler(req)
        except Exception:
            refusals.log(logging.ERROR, "http.500", "HTTP handler failed on %s %.200s", req.method,
                         req.target, exc_info=True)
            self._stats.handler_errors += 1
            result = _INTERNAL
        if type(result) is Response:
            self._respond(result)
        else:
            self._take(result, req.method, req.target)

    def _take(self, result: Any, method: str, target: str) -> None:
        """Answer with what the handler returned: a Response now, a future when it resolves."""
        if type(result) is Response:
            self._respond(result)
            return
        add_response_callback = getattr(result, "add_response_callback", None)
        if add_response_callback is not None:
            add_response_callback(self._on_response)
            return
        add_done_callback = getattr(result, "add_done_callback", None)
        if add_done_callback is not None:
            add_done_callback(self._on_handler_done)
            return
        if isinstance(result, Response):
            self._respond(result)
            return
        log.error(
            "HTTP handler returned %s for %s %s, not a Response or a Future",
            type(result).__name__, method, target,
        )
        if asyncio.iscoroutine(result):
            result.close()  # never awaited: close it to silence the warning; the log says why
        self._stats.handler_errors += 1
        self._respond(_INTERNAL)

    def _on_handler_done(self, fut: Pending) -> None:
        if fut.cancelled():
            log.error("HTTP handler future was cancelled")
            resp = _INTERNAL
            self._stats.handler_errors += 1
        elif (exc := fut.exception()) is not None:
            refusals.log(logging.ERROR, "http.500", "HTTP handler future failed", exc_info=exc)
            resp = _INTERNAL
            self._stats.handler_errors += 1
        else:
            resp = fut.result()
            if not isinstance(resp, Response):
                log.error("HTTP handler future resolved to %s, not a Response", type(resp))
                resp = _INTERNAL
                self._stats.handler_errors += 1
        self._on_response(resp)

    def _on_response(self, resp: Response) -> None:
        """The answer to the request that was outstanding, given later (a future resolved, or
        a :class:`Pending` with ``add_response_callback`` called back): write it, then go on."""
        if self._transport is None or self._lingering:
            # the client went away while the request was being handled, or the connection was
            # refused meanwhile (its pipelined body overfilled the buffers: 503 and FIN written):
            # nothing may follow that (a write after write_eof raises)
            return
        self.active = True
        # _respond, with _serialize's commonest case asked first (every forwarded request's
        # answer); anything else, _respond itself. tests/realnet/test_http_held.py holds the two
        # to the same bytes.
        if (
            self._keep_alive
            and not self._http10
            and not self._head_only
            and not resp.headers
            and not self._srv.shutting_down
            and (data := _known_head_bytes(resp.status, resp.content_type, resp.body)) is not None
        ):
            self._stats.responses_by_class[resp.status // 100] += 1
            self._send(data, True)
        else:
            self._respond(resp)
        # What _process would find to do: pipelined bytes (the parser parsed nothing while the
        # response was outstanding), a half-close to finish, or reading to resume.
        if (self._fed and self._parser.buffered) or self._peer_eof or self._read_paused:
            self._process()

    def _respond(self, resp: Response) -> None:
        keep_alive = self._keep_alive and not self._srv.shutting_down
        try:
            data = _serialize(resp, keep_alive, self._http10, self._head_only)
            status = resp.status
        except (ValueError, TypeError, UnicodeEncodeError):
            refusals.log(logging.ERROR, "http.500", "HTTP handler produced a response that cannot be sent",
                         exc_info=True)
            self._stats.handler_errors += 1
            data = _serialize(_INTERNAL, keep_alive, self._http10, self._head_only)
            status = 500
        self._stats.responses_by_class[status // 100] += 1
        self._send(data, keep_alive)

    def _send(self, data: bytes, keep_alive: bool) -> None:
        """Write a response (or hold it till the end of the loop turn: module docstring)."""
        self._busy = False
        transport = self._transport
        if transport is None:
            return
        if keep_alive and self._held_response is None and len(data) <= _DEFER_MAX:
            self._held_response = data
            # held with the others till the end of this turn (or of the batch of answers being
            # given: _ServerState.answer_batch), then written by _ServerState.write_held
            srv = self._srv
            held = srv._held_conns
            held.append(self)
            if len(held) == 1 and not srv._in_batch:
                srv.loop.call_soon(srv.write_held)
            return
        self.write_held()
        transport.write(data)
        if not keep_alive:
            self._linger_close()

    def write_held(self) -> None:
        """Write the response this connection holds, if any (before anything else it writes)."""
        data = self._held_response
        if data is not None:
            self._held_response = None
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.write(data)

    def _reject(self, status: int, code: str, message: str) -> None:
        """Answer a request the server refuses, then close the connection."""
        self._stats.bad_requests += 1
        self._stats.responses_by_class[status // 100] += 1
        refusals.info(f"http.{status}", "refusing a request from %s: %d %s", self._peer, status, message)
        if self._transport is not None:
            self.write_held()
            self._transport.write(
                _serialize(error_response(status, code, message), False, False, False)
            )
        self._linger_close()

    # --- closing ------------------------------------------------------------------------------

    def _linger_close(self) -> None:
        """Send FIN after the queued response, drain the client for a while, then close."""
        if self._lingering:
            return
        self._closing = True
        self._lingering = True
        transport = self._transport
        if transport is None:
            return
        self.write_held()
        if self._peer_eof:
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:
            transport.abort()
            return
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        self._linger_handle = self._srv.loop.call_later(_LINGER_SECONDS, self._linger_expired)
        if self._srv.shutting_down:
            self._srv.check_drained()

    def _linger_expired(self) -> None:
        self._linger_handle = None
        transport = self._transport
        if transport is not None:
            self.write_held()
            if transport.get_write_buffer_size():
                transport.abort()  # the client does not even read its response
            else:
                transport.close()

    def overdue(self, now: float, head_timeout: float, timeout: float) -> bool:
        """Called by the sweep: 408 and close (True) when one request's head has been arriving
        for ``head_timeout`` seconds, or the whole request, body included, for ``timeout``
        (:attr:`HttpLimits.request_timeout`), however active the connection is: a head or a body trickled a byte
        at a time stays active, so the idle timeout alone never ends it. Marks are taken by the
        sweep, so the hot path never reads the clock; precision is one sweep interval."""
        parser = self._parser
        if self._busy or self._lingering or not parser.in_message:
            self._head_mark = None
            return False
        mark = self._head_mark
        if mark is None or mark[0] != self.dispatched:
            self._head_mark = (self.dispatched, now)
            return False
        in_head = parser.in_head
        limit = head_timeout if in_head else timeout
        if now - mark[1] < limit:
            return False
        what = "head" if in_head else "body"
        self._stats.refuse(f"{what}_timeout")
        refusals.warning(f"http.{what}_timeout", "closing a connection from %s: its request %s took "
                         "over %g s", self._peer, "head" if in_head else "(head and body)", limit)
        if in_head:
            self._reject(408, "timeout", f"The request head did not arrive within {limit:g} seconds.")
        else:
            self._reject(408, "timeout", f"The request body did not arrive within {limit:g} seconds "
                         "of the request's start.")
        return True

    def expire(self) -> None:
        """Called by the sweep when the connection has been inactive too long."""
        transport = self._transport
        if transport is None or self._lingering or self._busy:
            return
        if self._write_paused:
            transport.abort()
        elif self._parser.in_message:
            self._reject(408, "timeout", "The request was not received in time.")
        else:
            self.write_held()
            transport.close()

    @property
    def answered_last(self) -> bool:
        """True once the final response is queued (lingering) or the connection is gone."""
        return self._lingering or self._transport is None

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def close_after_linger(self) -> None:
        """End a lingering close early: close once the queued response is written."""
        if self._lingering and self._transport is not None:
            self.write_held()
            self._transport.close()

    def close_if_idle(self) -> None:
        """Close now unless a request is on its way or being answered (graceful shutdown)."""
        transport = self._transport
        idle = not (self._busy or self._lingering or self._parser.in_message)
        if transport is not None and idle:
            self._closing = True
            self.write_held()
            transport.close()


#: descriptors kept back from the client connection cap: peer links, storage files, the listeners
_FD_RESERVE = 128
#: the default cap never goes above this many client connections
_MAX_DEFAULT_CONNECTIONS = 16384


def default_max_connections() -> int:
    """The client connection cap when none is configured: the process's soft limit on open
    files, less a reserve for everything else, so that the node refuses a connection with a
    503 while it still has a descriptor to answer with, rather than run out (EMFILE)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not on this platform
        return 1000
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return _MAX_DEFAULT_CONNECTIONS
    return max(8, min(_MAX_DEFAULT_CONNECTIONS, soft - _FD_RESERVE))


def rate_limited_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler, rate-limited (:data:`refusals`): asyncio reports a
    failed ``accept()`` (EMFILE, ENFILE, ENOBUFS, ENOMEM) through it, with a traceback, and a
    flood of them must not fill the log. Accept failures are counted in ``refused_accept_errors``
    of every server's stats."""
    message = str(context.get("message", ""))
    exc = context.get("exception")
    # asyncio's accept loop schedules one retry (_start_serving) per failed accept(), so one
    # burst over the limit leaves thousands of retries behind, each of which may fail again
    # (after a shutdown: an invalid descriptor): both are accept trouble, one line each at most
    if "accept" in message or "_start_serving" in message:
        for state in list(_STATES.values()):
            state.stats.refuse("accept_errors")
        refusals.warning("http.accept", "accepting a connection failed: %s", exc or message)
        return
    # anything else keeps its traceback, for the first few only
    first = refusals.counts.get("loop", 0) < 3
    refusals.log(logging.ERROR, "loop", "%s: %r", message, exc, exc_info=exc if first else None)


_STATES: weakref.WeakKeyDictionary[asyncio.Server, _ServerState] = weakref.WeakKeyDictionary()


async def start_http_server(
    handler: Handler,
    host: str | None,
    port: int,
    limits: HttpLimits = HttpLimits(),
    *,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
    parser: str | None = None,
    head_check: HeadCheck | None = None,
    lane: Lane | None = None,
) -> asyncio.Server:
    """Listen on host:port (or serve on an already bound ``sock``) and serve ``handler``; the
    server's counters are ``.server_stats``. ``parser`` names the request parser
    (:data:`realnet.httpparse.PARSERS`: ``"httptools"`` or ``"h11"``; default
    :data:`DEFAULT_PARSER`). ``head_check`` judges a request whose body is still to come by its
    head (:data:`HeadCheck`): before any ``100 Continue`` and before the body is buffered.
    ``lane`` answers plain requests before any parser sees them (:data:`Lane`, the module
    docstring)."""
    if parser is None:
        parser = DEFAULT_PARSER
    if parser not in PARSERS:
        raise ValueError(f"unknown HTTP parser {parser!r}; choose one of {', '.join(PARSERS)}")
    loop = asyncio.get_running_loop()
    state = _ServerState(handler, limits, loop, PARSERS[parser], head_check, lane)
    if sock is not None:
        server = await loop.create_server(state.make_protocol, sock=sock, backlog=1024)
    else:
        server = await loop.create_server(
            state.make_protocol, host, port, reuse_port=reuse_port or None, backlog=1024
        )
    state.server = server
    try:
        server.server_stats = state.stats  # type: ignore[attr-defined]
    except AttributeError:
        pass  # uvloop's server takes no attribute: server_stats(server)
    _STATES[server] = state
    state.start_sweep()
    return server


def batch_answerer(
    server: asyncio.Server | None,
) -> Callable[[list[tuple[Callable[[Response], None], Response]]], None] | None:
    """What gives a batch of deferred answers to a server :func:`start_http_server` returned
    and writes what they hold when the batch ends (:meth:`_ServerState.answer_batch`); None for
    another server."""
    state = _STATES.get(server) if server is not None else None
    return state.answer_batch if state is not None else None


def server_stats(server: asyncio.Server | None) -> HttpServerStats | None:
    """The counters of a server :func:`start_http_server` returned (None for another)."""
    state = _STATES.get(server) if server is not None else None
    return state.stats if state is not None else None


async def stop_http_server(server: asyncio.Server, grace: float = 5.0) -> None:
    """Stop accepting, close idle connections, give in-flight requests ``grace`` seconds.

    A request being received or handled gets its response, marked ``Connection: close``. Once
    every connection has had its last response queued, the remaining connections are closed
    (each after its queued bytes are written); whatever is still busy after ``grace`` seconds
    is aborted.
    """
    server.close()
    state = _STATES.get(server)
    if state is not None:
        loop = state.loop
        deadline = loop.time() + grace
        state.shutting_down = True
        state.drained = loop.create_future()
        state.all_closed = loop.create_future()
        for conn in list(state.conns):
            conn.close_if_idle()
        state.check_drained()
        try:
            await asyncio.wait_for(asyncio.shield(state.drained), grace)
        except TimeoutError:
            for conn in list(state.conns):
                conn.abort()
        for conn in list(state.conns):
            conn.close_after_linger()
        if state.conns:
            try:  # closing flushes what is queued; a client that does not read is aborted
                await asyncio.wait_for(
                    asyncio.shield(state.all_closed), max(0.1, deadline - loop.time())
                )
            except TimeoutError:
                for conn in list(state.conns):
                    conn.abort()
        state.stop_sweep()
    await server.wait_closed()
