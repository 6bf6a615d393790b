"""A small, strict HTTP/1.1 server on ``asyncio.Protocol`` for the node's client API.

Theory of operation
-------------------
One :class:`_HttpConnection` protocol object per TCP connection, no streams and no tasks. Bytes
arrive in ``data_received`` and go through a three-state machine:

``_HEAD``
    Wait for the blank line (``b"\\r\\n\\r\\n"``) that ends the request head, then parse it in one
    pass: one ``bytes.translate`` over the whole head rejects control characters and bare CR/LF,
    the head is decoded once as Latin-1 (a byte per character, RFC 9110 §5.5), the request line
    is split on single spaces and each field line at its first colon, all with C-level str
    methods and no regular expression. Field names are validated as tokens once and cached
    (``"Host"`` -> ``"host"``), so a stream of similar requests parses without re-validating
    names. Leading empty lines are skipped (RFC 9112 §2.2). When a connection is idle and a read
    holds a whole request, it is parsed straight from that read without copying it into the
    connection's buffer: the common case of a keep-alive client costs no buffering at all.
``_BODY``
    A ``Content-Length`` body (RFC 9112 §6.2): wait until that many bytes are buffered.
``_CHUNKED``
    A chunked body (RFC 9112 §7.1): chunk-size lines, data, CRLF, the last chunk and a trailer
    section which is read and discarded. Extensions are ignored.

The framing rules of RFC 9112 §6.3 are applied when the head is parsed, before any body byte is
read: both ``Transfer-Encoding`` and ``Content-Length`` -> 400; ``chunked`` not final or repeated ->
400; any other transfer coding -> 501; an invalid ``Content-Length`` -> 400 (a list of identical
values is accepted, RFC 9110 §8.6); a declared length above :attr:`HttpLimits.max_body` -> 413
right away, so a 10 MB upload is refused without reading it. An HTTP/1.1 request must carry
exactly one ``Host`` (RFC 9112 §3.2). ``Expect: 100-continue`` gets an interim ``100 Continue``
once the head has been accepted and no body byte has arrived yet (RFC 9110 §10.1.1); any other
expectation gets 417.

Once a request is complete it goes to the handler, which returns a :class:`Response` (the fast
path: the response is written before ``data_received`` returns) or a future that is resolved
later, for example after the request was forwarded to another node. A connection handles one
request at a time: while a response is outstanding, further bytes are only buffered, so pipelined
requests are answered strictly in order, and reading is paused when that buffer passes
``_HIGH_WATER``. Reading is also paused while the transport's write buffer is full (a client that
sends but does not read), and resumed with it. A handler that raises, returns something that is
not a response, or whose future fails, produces ``500 internal`` with the traceback logged; the
server itself never dies of a request.

Every response carries ``Content-Length`` (except 204 and 304, where RFC 9110 §8.6 forbids it or
it would describe another representation) and a ``Date`` field cached per second. Error bodies
are always ``{"error": CODE, "message": SENTENCE}``.

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

Counters live in one :class:`HttpServerStats` per server, reachable as ``server.server_stats``
on the ``asyncio.Server`` returned by :func:`start_http_server`. :func:`stop_http_server` shuts
a server down gracefully: stop accepting, close idle connections, let in-flight requests finish
(their responses say ``Connection: close``), then abort what remains after a grace period.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

__all__ = [
    "Handler",
    "HttpLimits",
    "HttpServerStats",
    "Request",
    "Response",
    "error_response",
    "json_response",
    "start_http_server",
    "stop_http_server",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Request:
    """One parsed request, handed to the handler with its complete body."""

    method: str  # "GET", ... (case-sensitive token, as sent)
    target: str  # raw request-target
    path: str  # raw path (before '?'), NOT percent-decoded
    query: str  # after '?', "" if none
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: dict[str, str]  # lower-cased names; repeated fields joined with ", "
    body: bytes
    peer: tuple[str, int] | None


@dataclass(slots=True)
class Response:
    """What a handler answers. The server adds Content-Length, Date and Connection itself."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], "Response | asyncio.Future[Response]"]


def json_response(status: int, obj: object) -> Response:
    """A compact JSON response."""
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status, body, "application/json")


def error_response(status: int, code: str, message: str) -> Response:
    """The one error form of the API: ``{"error": code, "message": message}``."""
    return json_response(status, {"error": code, "message": message})


@dataclass(frozen=True)
class HttpLimits:
    """Per-server limits. Requests beyond them are refused and the connection closed."""

    max_body: int = 1024 * 1024 + 64 * 1024
    """Bytes of request body (declared or chunked); over -> 413 ``too_large``."""
    max_header_bytes: int = 16 * 1024
    """Bytes of request line + header fields (also the trailer section); over -> 431."""
    max_headers: int = 100
    """Number of header field lines; over -> 431."""
    keepalive_timeout: float = 75.0
    """Seconds an idle connection (or a half-received request) is kept open."""


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

    def snapshot(self) -> dict[str, int]:
        """A flat copy, e.g. ``{"requests": 10, "responses_2xx": 9, ...}``."""
        out = {
            "requests": self.requests,
            "bad_requests": self.bad_requests,
            "handler_errors": self.handler_errors,
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
        }
        for cls in range(1, 6):
            out[f"responses_{cls}xx"] = self.responses_by_class[cls]
        return out


# --- protocol tables -------------------------------------------------------------------------

_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Control characters other than HTAB (RFC 9110 §5.5 allows only VCHAR, SP, HTAB and obs-text in
# a field line). ``len(x.translate(None, _CTL)) == len(x)`` checks for them in one C pass.
_CTL = bytes(range(0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"
_HEX = b"0123456789abcdefABCDEF"
_DIGITS = "0123456789"

_METHODS = {m: m for m in ("GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH")}
_NAME_CACHE: dict[str, str] = {}  # raw field name -> lower-cased, valid names only
_NAME_CACHE_MAX = 1024
_PREFIX_CACHE: dict[tuple[int, str | None], bytes] = {}

_STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_FRAMING_FIELDS = frozenset({"content-length", "transfer-encoding", "connection"})

_HIGH_WATER = 256 * 1024  # buffered bytes (behind an outstanding response) before pause_reading
_LINGER_SECONDS = 2.0  # lingering close: how long to drain a client after our FIN
_LINGER_MAX_BYTES = 16 * 1024 * 1024  # ... and how much of it to discard at most
_MAX_CHUNK_LINE = 4096  # chunk-size line including extensions

_HEAD, _BODY, _CHUNKED = 0, 1, 2
_C_SIZE, _C_DATA, _C_DATA_END, _C_TRAILER = 0, 1, 2, 3

_INTERNAL = error_response(500, "internal", "The server failed to handle the request.")

_time = time.time
_date_valid_until = 0.0  # wall-clock second at which _date_line goes stale
_date_line = b""


def _date() -> bytes:
    """The ``Date`` field line, formatted at most once per second."""
    global _date_valid_until, _date_line
    now = _time()
    if now >= _date_valid_until:
        second = int(now)
        _date_line = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        _date_valid_until = second + 1.0
    return _date_line


def _prefix(status: int, content_type: str | None) -> bytes:
    """Status line and Content-Type field line of a response, validated once and cached."""
    key = (status, content_type)
    prefix = _PREFIX_CACHE.get(key)
    if prefix is not None:
        return prefix
    line = _STATUS_LINES.get(status)
    if line is None or status < 200:
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"invalid response status {status!r}")
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    prefix = line
    if content_type is not None:
        if "\r" in content_type or "\n" in content_type:
            raise ValueError(f"invalid content type {content_type!r}")
        prefix += b"Content-Type: " + content_type.encode("latin-1") + b"\r\n"
    if len(_PREFIX_CACHE) < 256:
        _PREFIX_CACHE[key] = prefix
    return prefix


def _serialize(resp: Response, keep_alive: bool, http10: bool, head_only: bool) -> bytes:
    """The response as one bytes object. Raises ValueError on a response the server cannot send."""
    status = resp.status
    prefix = _PREFIX_CACHE.get((status, resp.content_type))
    if prefix is None:
        prefix = _prefix(status, resp.content_type)
    body = resp.body
    no_body = status == 204 or status == 304
    if no_body and body:
        raise ValueError(f"a {status} response must not have a body")
    if keep_alive and not http10 and not resp.headers:
        # The common case: one formatting operation.
        date = _date_line if _time() < _date_valid_until else _date()
        if no_body:
            return prefix + date + b"\r\n"
        if head_only:
            return b"%s%sContent-Length: %d\r\n\r\n" % (prefix, date, len(body))
        return b"%s%sContent-Length: %d\r\n\r\n%s" % (prefix, date, len(body), body)
    parts = [prefix, _date()]
    if not no_body:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    for name, value in resp.headers:
        if not _is_token(name):
            raise ValueError(f"invalid response header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"invalid value for response header {name!r}")
        if name.lower() in _FRAMING_FIELDS:
            raise ValueError(f"response header {name!r} is set by the server")
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    elif http10:
        parts.append(b"Connection: keep-alive\r\n")
    parts.append(b"\r\n")
    if body and not head_only:
        parts.append(body)
    return b"".join(parts)


class _Reject(Exception):
    """A request the server refuses itself; becomes an error response and a closed connection."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _is_token(s: str) -> bool:
    """RFC 9110 §5.6.2 token: one or more tchar."""
    return bool(s) and s.isascii() and not s.encode("ascii").translate(None, _TCHAR)


def _bad(message: str) -> _Reject:
    return _Reject(400, "bad_request", message)


def _content_length(value: str, max_body: int) -> int:
    """Parse a Content-Length value (RFC 9110 §8.6): digits, or a list of identical digits."""
    if not (value.isascii() and value.isdigit()):
        candidates = {v.strip() for v in value.split(",")}
        if len(candidates) != 1:
            raise _bad("Content-Length must be one decimal number.")
        value = candidates.pop()
        if not (value.isascii() and value.isdigit()):
            raise _bad("Content-Length must be a decimal number.")
    if len(value) > 18:  # far beyond any limit; don't build a huge int
        return max_body + 1
    return int(value)


def _split_target(target: str, method: str) -> tuple[str, str]:
    """(path, query) of a request-target that is not in origin-form (RFC 9112 §3.2)."""
    if target == "*":
        if method != "OPTIONS":
            raise _bad("The asterisk request-target is only allowed with OPTIONS.")
        return "*", ""
    low = target[:8].lower()
    if low.startswith("http://"):
        rest = target[7:]
    elif low.startswith("https://"):
        rest = target[8:]
    else:
        raise _bad("The request-target must be an absolute path or an absolute URI.")
    cut = len(rest)
    for sep in "/?":
        i = rest.find(sep)
        if 0 <= i < cut:
            cut = i
    if cut == 0:
        raise _bad("The absolute request-target has no authority.")
    rest = rest[cut:]
    if not rest.startswith("/"):
        rest = "/" + rest
    path, _, query = rest.partition("?")
    return path, query


class _ServerState:
    """What all connections of one server share: handler, limits, counters, the idle sweep."""

    __slots__ = (
        "__weakref__",
        "_sweep_handle",
        "conns",
        "drained",
        "all_closed",
        "handler",
        "limits",
        "loop",
        "server",
        "shutting_down",
        "stats",
    )

    def __init__(self, handler: Handler, limits: HttpLimits, loop: asyncio.AbstractEventLoop):
        self.handler = handler
        self.limits = limits
        self.stats = HttpServerStats()
        self.loop = loop
        self.conns: set[_HttpConnection] = set()
        self.server: asyncio.Server | None = None
        self.shutting_down = False
        self.drained: asyncio.Future[None] | None = None
        self.all_closed: asyncio.Future[None] | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None

    def make_protocol(self) -> _HttpConnection:
        return _HttpConnection(self)

    def sweep_interval(self) -> float:
        return max(0.05, min(1.0, self.limits.keepalive_timeout / 4))

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
        for conn in list(self.conns):
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
    """One client connection. See the module docstring for the state machine."""

    __slots__ = (
        "_body",
        "_buf",
        "_busy",
        "_chunk_left",
        "_chunk_state",
        "_closing",
        "_discarded",
        "_handler",
        "_head_only",
        "_http10",
        "_keep_alive",
        "_linger_handle",
        "_lingering",
        "_max_body",
        "_max_head",
        "_max_headers",
        "_peer",
        "_peer_eof",
        "_read_paused",
        "_remaining",
        "_req",
        "_scan",
        "_srv",
        "_state",
        "_stats",
        "_trailer_bytes",
        "_transport",
        "_write_paused",
        "active",
        "idle_since",
    )

    def __init__(self, srv: _ServerState) -> None:
        self._srv = srv
        self._stats = srv.stats
        self._handler = srv.handler
        limits = srv.limits
        self._max_body = limits.max_body
        self._max_head = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._transport: asyncio.Transport | None = None
        self._peer: tuple[str, int] | None = None
        self._buf = bytearray()
        self._scan = 0
        self._state = _HEAD
        self._busy = False
        self._closing = False
        self._lingering = False
        self._discarded = 0
        self._peer_eof = False
        self._read_paused = False
        self._write_paused = False
        self.active = False
        self.idle_since = srv.loop.time()
        self._req: Request | None = None
        self._remaining = 0
        self._keep_alive = True
        self._http10 = False
        self._head_only = False
        self._body = bytearray()
        self._chunk_state = _C_SIZE
        self._chunk_left = 0
        self._trailer_bytes = 0
        self._linger_handle: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol callbacks -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._peer = (str(peer[0]), int(peer[1]))
        srv = self._srv
        srv.conns.add(self)
        srv.stats.connections_open += 1
        srv.stats.connections_total += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._closing = True
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        self._buf.clear()
        self._srv.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._discarded += len(data)
            if self._discarded > _LINGER_MAX_BYTES and self._transport is not None:
                self._transport.abort()
            return
        self.active = True
        if self._busy or self._buf or self._state != _HEAD or self._write_paused:
            buf = self._buf
            buf += data
            if self._busy or self._write_paused:
                if len(buf) > _HIGH_WATER and not self._read_paused and self._transport:
                    self._read_paused = True
                    self._transport.pause_reading()
                return
            self._process()
            return
        # Fast path: an idle connection and an empty buffer, so the head (and most often the
        # whole request) is in `data`: parse it from there without copying into the buffer.
        end = data.find(b"\r\n\r\n")
        if end <= 0 or end > self._max_head or data[0] == 13:  # 13: CR of a leading empty line
            self._buf += data
            self._process()
            return
        start = end + 4
        try:
            self._parse_head(data[:end], len(data) > start)
        except _Reject as rej:
            self._reject(rej.status, rej.code, rej.message)
            return
        if self._state == _BODY:
            n = self._remaining
            if n == 0:
                self._dispatch(b"")
            elif start + n <= len(data):
                self._dispatch(data[start : start + n])
                start += n
        if start < len(data):
            if not self._closing:
                self._buf += memoryview(data)[start:]
                self._process()
        elif self._read_paused or self._peer_eof:
            self._process()

    def eof_received(self) -> bool:
        self._peer_eof = True
        if self._lingering:
            return False
        # Keep our sending side open while a response is still owed; _process closes after it.
        return self._busy or (self._write_paused and bool(self._buf))

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
        """Parse and dispatch buffered requests until one is outstanding or more bytes are needed."""
        buf = self._buf
        while not (self._busy or self._closing or self._write_paused):
            state = self._state
            if state == _HEAD:
                if not buf:
                    break
                if buf[0] == 13:  # empty lines before a request line are ignored (RFC 9112 §2.2)
                    skip = 0
                    while buf.startswith(b"\r\n", skip):
                        skip += 2
                    if skip:
                        del buf[:skip]
                        self._scan = 0
                        continue
                end = buf.find(b"\r\n\r\n", self._scan)
                if end < 0:
                    if len(buf) - 3 > self._max_head:
                        self._reject_head_too_large()
                        break
                    self._scan = max(0, len(buf) - 3)
                    break
                if end > self._max_head:
                    self._reject_head_too_large()
                    break
                head = bytes(buf[:end])
                del buf[: end + 4]
                self._scan = 0
                try:
                    self._parse_head(head, bool(buf))
                except _Reject as rej:
                    self._reject(rej.status, rej.code, rej.message)
                    break
            elif state == _BODY:
                n = self._remaining
                if len(buf) < n:
                    break
                if n == 0:
                    body = b""
                elif len(buf) == n:
                    body = bytes(buf)
                    buf.clear()
                else:
                    with memoryview(buf) as view:
                        body = view[:n].tobytes()
                    del buf[:n]
                self._dispatch(body)
            else:
                if not self._read_chunks():
                    break
                body = bytes(self._body)
                self._body = bytearray()
                self._dispatch(body)
        transport = self._transport
        if transport is None or self._lingering:
            return
        if self._peer_eof and not self._busy and not self._write_paused:
            transport.close()  # the client half-closed and every complete request was answered
            return
        if (
            self._read_paused
            and not self._write_paused
            and (not self._busy or len(buf) <= _HIGH_WATER)
        ):
            self._read_paused = False
            transport.resume_reading()

    def _parse_head(self, head: bytes, more: bool) -> None:
        # The head is decoded once as Latin-1 (one byte per character, RFC 9110 §5.5) and
        # parsed with str operations, which are faster than the bytes equivalents here.
        text = head.decode("latin-1")
        reqline, crlf, fields = text.partition("\r\n")
        lines = fields.split("\r\n") if crlf else []
        if len(lines) > self._max_headers:
            raise _Reject(
                431, "too_large", f"The request has more than {self._max_headers} header fields."
            )
        # No control character but HTAB anywhere; CR and LF only as the CRLF line ends.
        if len(head.translate(None, _CTL)) + 2 * len(lines) != len(head):
            raise _bad("The request head contains a control character or a bare CR or LF.")

        # request-line = method SP request-target SP HTTP-version (RFC 9112 §3)
        parts = reqline.split(" ")
        if len(parts) != 3:
            raise _bad("The request line must be 'METHOD target HTTP-version' with single spaces.")
        m, target, v = parts
        method = _METHODS.get(m)
        if method is None:
            if not _is_token(m):
                raise _bad("The request method is not a valid token.")
            method = m
        if v == "HTTP/1.1":
            http10 = False
        elif v == "HTTP/1.0":
            http10 = True
        elif (
            len(v) == 8
            and v.startswith("HTTP/")
            and v[5] in _DIGITS
            and v[6] == "."
            and v[7] in _DIGITS
        ):
            raise _Reject(
                505, "version_not_supported", f"{v} is not supported; use HTTP/1.1 or HTTP/1.0."
            )
        else:
            raise _bad("The request line does not end with a valid HTTP version.")
        if not target.isascii() or "\t" in target or "#" in target:
            raise _bad("The request-target contains invalid characters.")
        if target[:1] == "/":
            path, _, query = target.partition("?")
        elif target:
            path, query = _split_target(target, method)
        else:
            raise _bad("The request-target is empty.")

        # field-line = field-name ":" OWS field-value OWS (RFC 9112 §5)
        headers: dict[str, str] = {}
        names = _NAME_CACHE
        for raw in lines:
            rawname, colon, value = raw.partition(":")
            name = names.get(rawname)
            if name is None or not colon:
                if raw[:1] in (" ", "\t"):
                    raise _bad("Obsolete line folding is not accepted in header fields.")
                if not colon:
                    raise _bad("A header field line has no colon.")
                if not _is_token(rawname):
                    raise _bad("A header field name is not a valid token.")
                name = rawname.lower()
                if len(names) < _NAME_CACHE_MAX:
                    names[rawname] = name
            value = value.strip(" \t")
            prev = headers.get(name)
            if prev is None:
                headers[name] = value
            elif name == "host":
                raise _bad("The request has more than one Host header field.")
            else:
                headers[name] = prev + ", " + value

        conn = headers.get("connection")
        if conn is None:
            keep_alive = not http10
        else:
            tokens = [tok.strip() for tok in conn.lower().split(",")]
            keep_alive = "keep-alive" in tokens if http10 else "close" not in tokens
        if not http10 and "host" not in headers:
            raise _bad("An HTTP/1.1 request must have a Host header field.")

        # Message body length (RFC 9112 §6.3).
        chunked = False
        length = 0
        te = headers.get("transfer-encoding")
        cl = headers.get("content-length")
        if te is not None:
            if http10:
                raise _bad("Transfer-Encoding is not allowed in an HTTP/1.0 request.")
            if cl is not None:
                raise _bad("The request has both Transfer-Encoding and Content-Length.")
            codings = [c.strip().lower() for c in te.split(",") if c.strip()]
            if not codings or codings[-1] != "chunked":
                raise _bad("chunked must be the final transfer coding of a request.")
            if len(codings) > 1:
                if codings.count("chunked") > 1:
                    raise _bad("The chunked transfer coding is applied more than once.")
                raise _Reject(
                    501, "not_implemented", f"Transfer coding {codings[0]!r} is not supported."
                )
            chunked = True
        elif cl is not None:
            if cl.isdigit() and cl.isascii() and len(cl) < 19:
                length = int(cl)
            else:
                length = _content_length(cl, self._max_body)
            if length > self._max_body:
                raise _Reject(
                    413,
                    "too_large",
                    f"The request body of {length} bytes exceeds the limit of "
                    f"{self._max_body} bytes.",
                )

        expect = headers.get("expect")
        if expect is not None and not http10:  # HTTP/1.0: ignored (RFC 9110 §10.1.1)
            if expect.strip().lower() != "100-continue":
                raise _Reject(
                    417, "expectation_failed", f"The expectation {expect!r} is not supported."
                )
            if (chunked or length) and not more and self._transport is not None:
                self._transport.write(_CONTINUE)

        self._req = Request(
            method, target, path, query, "HTTP/1.0" if http10 else "HTTP/1.1", headers, b"",
            self._peer,
        )
        self._keep_alive = keep_alive
        self._http10 = http10
        self._head_only = method == "HEAD"
        if chunked:
            self._state = _CHUNKED
            self._chunk_state = _C_SIZE
            self._chunk_left = 0
            self._trailer_bytes = 0
        else:
            self._state = _BODY
            self._remaining = length

    def _read_chunks(self) -> bool:
        """Consume chunked body bytes from the buffer; True once the message is complete."""
        buf = self._buf
        while True:
            state = self._chunk_state
            if state == _C_DATA:
                have = len(buf)
                if have == 0:
                    return False
                n = self._chunk_left
                if have <= n:
                    self._body += buf
                    buf.clear()
                    self._chunk_left = n - have
                    if have < n:
                        return False
                else:
                    with memoryview(buf) as view:
                        self._body += view[:n]
                    del buf[:n]
                    self._chunk_left = 0
                self._chunk_state = _C_DATA_END
            elif state == _C_DATA_END:
                if len(buf) < 2:
                    return False
                if buf[0] != 13 or buf[1] != 10:
                    self._reject(400, "bad_request", "Chunk data is not followed by CRLF.")
                    return False
                del buf[:2]
                self._chunk_state = _C_SIZE
            elif state == _C_SIZE:
                i = buf.find(b"\r\n")
                if i < 0:
                    if len(buf) > _MAX_CHUNK_LINE:
                        self._reject(400, "bad_request", "A chunk-size line is too long.")
                    return False
                line = bytes(buf[:i])
                del buf[: i + 2]
                semi = line.find(b";")
                size_hex = (line if semi < 0 else line[:semi]).rstrip(b" \t")
                if (
                    not size_hex
                    or size_hex.translate(None, _HEX)
                    or len(line.translate(None, _CTL)) != len(line)
                ):
                    self._reject(400, "bad_request", "A chunk-size line is not valid.")
                    return False
                digits = size_hex.lstrip(b"0")
                size = int(digits, 16) if 0 < len(digits) <= 15 else (0 if not digits else -1)
                if size < 0 or len(self._body) + size > self._max_body:
                    self._reject(
                        413,
                        "too_large",
                        f"The chunked request body exceeds the limit of {self._max_body} bytes.",
                    )
                    return False
                if size == 0:
                    self._chunk_state = _C_TRAILER
                else:
                    self._chunk_left = size
                    self._chunk_state = _C_DATA
            else:  # trailer section: field lines up to an empty line, discarded (RFC 9112 §7.1.2)
                i = buf.find(b"\r\n")
                if i < 0:
                    if self._trailer_bytes + len(buf) > self._max_head:
                        self._reject(431, "too_large", "The chunked trailer section is too large.")
                    return False
                if i == 0:
                    del buf[:2]
                    return True
                line = bytes(buf[:i])
                del buf[: i + 2]
                self._trailer_bytes += i + 2
                colon = line.find(b":")
                if (
                    colon <= 0
                    or line[:colon].translate(None, _TCHAR)
                    or len(line.translate(None, _CTL)) != len(line)
                ):
                    self._reject(400, "bad_request", "A trailer field line is not valid.")
                    return False
                if self._trailer_bytes > self._max_head:
                    self._reject(431, "too_large", "The chunked trailer section is too large.")
                    return False

    def _dispatch(self, body: bytes) -> None:
        """Hand the complete request to the handler; answer now or when its future resolves."""
        req = self._req
        assert req is not None
        req.body = body
        self._req = None
        self._state = _HEAD
        self._busy = True
        self._stats.requests += 1
        try:
            result: Any = self._handler(req)
        except Exception:
            log.exception("HTTP handler failed on %s %s", req.method, req.target)
            self._stats.handler_errors += 1
            result = _INTERNAL
        if type(result) is Response:
            self._respond(result)
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
            type(result).__name__, req.method, req.target,
        )
        if asyncio.iscoroutine(result):
            result.close()  # never awaited: close it to silence the warning; the log says why
        self._stats.handler_errors += 1
        self._respond(_INTERNAL)

    def _on_handler_done(self, fut: asyncio.Future[Response]) -> None:
        if fut.cancelled():
            log.error("HTTP handler future was cancelled")
            resp = _INTERNAL
            self._stats.handler_errors += 1
        elif (exc := fut.exception()) is not None:
            log.error("HTTP handler future failed", exc_info=exc)
            resp = _INTERNAL
            self._stats.handler_errors += 1
        else:
            resp = fut.result()
            if not isinstance(resp, Response):
                log.error("HTTP handler future resolved to %s, not a Response", type(resp))
                resp = _INTERNAL
                self._stats.handler_errors += 1
        if self._transport is None:
            return  # the client went away while the request was being handled
        self.active = True
        self._respond(resp)
        self._process()

    def _respond(self, resp: Response) -> None:
        keep_alive = self._keep_alive and not self._srv.shutting_down
        try:
            data = _serialize(resp, keep_alive, self._http10, self._head_only)
            status = resp.status
        except (ValueError, TypeError, UnicodeEncodeError):
            log.exception("HTTP handler produced a response that cannot be sent")
            self._stats.handler_errors += 1
            data = _serialize(_INTERNAL, keep_alive, self._http10, self._head_only)
            status = 500
        self._stats.responses_by_class[status // 100] += 1
        self._busy = False
        transport = self._transport
        if transport is None:
            return
        transport.write(data)
        if not keep_alive:
            self._linger_close()

    def _reject(self, status: int, code: str, message: str) -> None:
        """Answer a request the server refuses, then close the connection."""
        self._stats.bad_requests += 1
        self._stats.responses_by_class[status // 100] += 1
        log.debug("refusing request from %s: %d %s", self._peer, status, message)
        if self._transport is not None:
            self._transport.write(
                _serialize(error_response(status, code, message), False, False, False)
            )
        self._linger_close()

    def _reject_head_too_large(self) -> None:
        self._reject(
            431,
            "too_large",
            f"The request line and header fields exceed {self._max_head} bytes.",
        )

    # --- closing ------------------------------------------------------------------------------

    def _linger_close(self) -> None:
        """Send FIN after the queued response, drain the client for a while, then close."""
        if self._lingering:
            return
        self._closing = True
        self._lingering = True
        self._buf.clear()
        self._req = None
        transport = self._transport
        if transport is None:
            return
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
            if transport.get_write_buffer_size():
                transport.abort()  # the client does not even read its response
            else:
                transport.close()

    def expire(self) -> None:
        """Called by the sweep when the connection has been inactive too long."""
        transport = self._transport
        if transport is None or self._lingering or self._busy:
            return
        if self._write_paused:
            transport.abort()
        elif self._buf or self._state != _HEAD:
            self._reject(408, "timeout", "The request was not received in time.")
        else:
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
            self._transport.close()

    def close_if_idle(self) -> None:
        """Close now unless a request is on its way or being answered (graceful shutdown)."""
        transport = self._transport
        idle = not (self._busy or self._buf or self._lingering) and self._state == _HEAD
        if transport is not None and idle:
            self._closing = True
            transport.close()


_STATES: weakref.WeakKeyDictionary[asyncio.Server, _ServerState] = weakref.WeakKeyDictionary()


async def start_http_server(
    handler: Handler,
    host: str | None,
    port: int,
    limits: HttpLimits = HttpLimits(),
    *,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
) -> asyncio.Server:
    """Listen on host:port (or serve on an already bound ``sock``) and serve ``handler``; the
    server's counters are ``.server_stats``."""
    loop = asyncio.get_running_loop()
    state = _ServerState(handler, limits, loop)
    if sock is not None:
        server = await loop.create_server(state.make_protocol, sock=sock, backlog=1024)
    else:
        server = await loop.create_server(
            state.make_protocol, host, port, reuse_port=reuse_port or None, backlog=1024
        )
    state.server = server
    server.server_stats = state.stats  # type: ignore[attr-defined]
    _STATES[server] = state
    state.start_sweep()
    return server


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
