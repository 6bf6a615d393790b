"""The rules both request parsers share: the interface, the byte buffer and the checks.

Theory of operation
-------------------
:class:`RequestParser` is the interface :mod:`realnet.httpparse` describes and the part of it
that is the same for every library: the byte buffer, the head scan, the body framing and the
judgement of a parsed head. An implementation (:mod:`realnet.httpparse_llhttp`,
:mod:`realnet.httpparse_h11`) subclasses it and supplies only the library calls.

What is ours and what is the library's. The parser finds where a request head ends (the blank
line), skips empty lines before it (RFC 9112 §2.2), bounds its size and its number of field
lines (431), and checks the request line's shape and version (single spaces; HTTP/1.0 and 1.1
only, another ``HTTP/d.d`` is 505), which both libraries are more lenient about than this
server has promised. The head then goes to the library, which parses the request line and the
field lines (tokens, values, ``Content-Length`` syntax); the body goes to the library too, which
decodes chunked framing (sizes, extensions, trailers). One set of rules then judges the parsed
head for both (:func:`_judge`): Host (RFC 9112 §3.2), framing (RFC 9112 §6.3: TE with CL -> 400,
``chunked`` not final -> 400, another coding -> 501, HTTP/1.0 with TE -> 400), the body limit
(413 before a body byte is read), the request-target's form, ``Expect`` (417), keep-alive.

A chunked body is given to the library piece by piece, each piece ending just after a blank line
(``\\r\\n\\r\\n``): a chunked message always ends with one, so the library never reads past the
end of the message into the next pipelined request, and the parser knows exactly where the next
request starts without the library telling it. A ``Content-Length`` body is given in exactly
that many bytes; with llhttp, when the whole body is already buffered, together with its head in
one call (the common case of a small PUT costs one library call, like a GET).

The parser handles what a connection needs and nothing more: a body reaches the handler whole
(at most :attr:`HttpLimits.max_body` bytes), so the interface has no body-chunk events.
:class:`Request` and :class:`HttpLimits` live here (the parser makes the one within the other)
and are re-exported by :mod:`realnet.httpparse` and :mod:`realnet.http`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "CONTINUE",
    "HttpLimits",
    "ParseError",
    "Request",
    "RequestParser",
]


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


@dataclass(frozen=True)
class HttpLimits:
    """Per-server limits. Requests beyond them are refused and the connection closed."""

    max_body: int = 1024 * 1024 + 64 * 1024
    """Bytes of request body (declared or chunked); over -> 413 ``too_large``."""
    max_header_bytes: int = 16 * 1024
    """Bytes of request line + header fields; over -> 431."""
    max_headers: int = 100
    """Number of header field lines; over -> 431."""
    keepalive_timeout: float = 75.0
    """Seconds an idle connection (or a half-received request) is kept open."""
    head_timeout: float = 10.0
    """Seconds a whole request head may take once its first byte arrived; over -> 408, close (a
    head trickled a byte at a time stays active, so the idle timeout alone never ends it)."""
    request_timeout: float | None = None
    """Seconds a whole request, head and body, may take once its first byte arrived; over ->
    408, close (a body trickled a byte at a time stays active, as a head does). None: the
    keep-alive timeout (the node passes its own setting, ``--request-timeout``)."""

    def whole_request_timeout(self) -> float:
        """:attr:`request_timeout`, or the keep-alive timeout when it is None."""
        return self.keepalive_timeout if self.request_timeout is None else self.request_timeout
    max_connections: int = 0
    """Client connections open at once (0: no cap); one more is answered 503 and closed."""
    max_buffered_bodies: int = 64 * 1024 * 1024
    """Bytes of requests held by parsers across all connections of the server (bodies being
    received); a connection that pushes the total over it is answered 503 and closed."""


class ParseError(Exception):
    """A request the server refuses itself: answer ``status`` with ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Continue:
    def __repr__(self) -> str:
        return "CONTINUE"


CONTINUE: Final = _Continue()
"""Event: answer ``100 Continue`` now (the head expects it and its body has not started)."""

_CTL = bytes(range(0x09)) + bytes(range(0x0A, 0x20)) + b"\x7f"
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = b"0123456789"
_HEAD, _BODY, _CHUNKED = 0, 1, 2


def _bad(message: str) -> ParseError:
    return ParseError(400, "bad_request", message)


def _sentence(prefix: str, detail: str) -> str:
    detail = detail.strip().rstrip(".")
    return f"{prefix}: {detail}." if detail else f"{prefix}."


def _is_token(s: str) -> bool:
    return bool(s) and s.isascii() and not s.encode("ascii").translate(None, _TCHAR)


def _check_head(buf: bytes | bytearray, pos: int, end: int, limits: HttpLimits) -> bool:
    """Our checks on the head in ``buf[pos:end]`` (without its blank line); True for HTTP/1.0."""
    if end - pos > limits.max_header_bytes:
        raise ParseError(
            431, "too_large",
            f"The request line and header fields exceed {limits.max_header_bytes} bytes.",
        )
    if buf.count(b"\r\n", pos, end) > limits.max_headers:
        raise ParseError(
            431, "too_large", f"The request has more than {limits.max_headers} header fields."
        )
    # request-line = method SP request-target SP HTTP-version, single spaces (RFC 9112 §3):
    # a target holds no space, so exactly two spaces.
    line_end = buf.find(b"\r\n", pos, end)
    if line_end < 0:
        line_end = end
    if buf.count(b" ", pos, line_end) != 2:
        raise _bad("The request line must be 'METHOD target HTTP-version' with single spaces.")
    if buf.endswith(b"HTTP/1.1", pos, line_end):
        return False
    if buf.endswith(b"HTTP/1.0", pos, line_end):
        return True
    v = bytes(buf[max(pos, line_end - 8) : line_end])
    if len(v) == 8 and v.startswith(b"HTTP/") and v[5] in _DIGITS and v[6] == 46 and v[7] in _DIGITS:
        raise ParseError(
            505, "version_not_supported",
            f"{v.decode()} is not supported; use HTTP/1.1 or HTTP/1.0.",
        )
    raise _bad("The request line does not end with a valid HTTP version.")


def _check_field_bytes(head: bytes) -> None:
    """No control character but HTAB, CR and LF only as CRLF, no obsolete folding (h11 allows
    bare LF and folding; llhttp refuses both itself)."""
    lines = head.count(b"\r\n")
    if len(head.translate(None, _CTL)) + 2 * lines != len(head):
        raise _bad("The request head contains a control character or a bare CR or LF.")
    if b"\r\n " in head or b"\r\n\t" in head:
        raise _bad("Obsolete line folding is not accepted in header fields.")


def _split_target(target: str, method: str) -> tuple[str, str]:
    """(path, query) of a request-target not in origin-form (RFC 9112 §3.2)."""
    if not target.isascii() or "#" in target:
        raise _bad("The request-target contains invalid characters.")
    if target[:1] == "/":
        path, _, query = target.partition("?")
        return path, query
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


def _transfer_coding_error(te: str, http10: bool, has_cl: bool) -> ParseError | None:
    """The refusal a Transfer-Encoding value earns (RFC 9112 §6.1, §6.3), or None for chunked."""
    if http10:
        return _bad("Transfer-Encoding is not allowed in an HTTP/1.0 request.")
    if has_cl:
        return _bad("The request has both Transfer-Encoding and Content-Length.")
    codings = [c.strip().lower() for c in te.split(",") if c.strip()]
    if not codings or codings[-1] != "chunked":
        return _bad("chunked must be the final transfer coding of a request.")
    if len(codings) > 1:
        if codings.count("chunked") > 1:
            return _bad("The chunked transfer coding is applied more than once.")
        return ParseError(501, "not_implemented", f"Transfer coding {codings[0]!r} is not supported.")
    return None


def _content_length(value: str, max_body: int) -> int:
    """A Content-Length the library accepted: digits, or a list of identical digits."""
    if not (value.isascii() and value.isdigit()):
        values = {v.strip() for v in value.split(",")}
        if len(values) != 1:
            raise _bad("Content-Length must be one decimal number.")
        value = values.pop()
        if not (value.isascii() and value.isdigit()):
            raise _bad("Content-Length must be a decimal number.")
    digits = value.lstrip("0") or "0"  # 000...05 is 5 (RFC 9110 §8.6: 1*DIGIT)
    if len(digits) > 18:  # far beyond any limit; don't build a huge int
        raise ParseError(
            413, "too_large",
            f"The request body of {len(digits)} digits' worth of bytes exceeds the limit of "
            f"{max_body} bytes.",
        )
    return int(digits)


def _plain(target: str, headers: dict[str, str], max_body: int) -> tuple[str, str, int] | None:
    """:func:`_judge`'s commonest HTTP/1.1 case, decided in one test: an origin-form target, a
    Host, a short plain Content-Length within ``max_body`` or none, and no field that changes
    framing, persistence or Expect. Returns (path, query, length), keep-alive and not chunked;
    None when the head needs the whole of :func:`_judge` (which may refuse it)."""
    if (
        target[:1] == "/" and target.isascii() and "#" not in target
        and "host" in headers
        and "connection" not in headers
        and "transfer-encoding" not in headers
        and "expect" not in headers
    ):
        cl = headers.get("content-length")
        if cl is None:
            length = 0
        elif cl.isdigit() and cl.isascii() and len(cl) < 8 and int(cl) <= max_body:
            length = int(cl)
        else:
            return None
        path, _, query = target.partition("?")
        return path, query, length
    return None


def _judge(
    method: str, target: str, http10: bool, headers: dict[str, str], max_body: int
) -> tuple[str, str, bool, bool, int, bool]:
    """The rules both parsers share, on a parsed head.

    Returns (path, query, keep_alive, chunked, length, expects_continue).
    """
    if not http10:
        plain = _plain(target, headers, max_body)
        if plain is not None:
            return plain[0], plain[1], True, False, plain[2], False
    if target[:1] == "/" and target.isascii() and "#" not in target:
        path, _, query = target.partition("?")
    else:
        path, query = _split_target(target, method)
    if not http10 and "host" not in headers:
        raise _bad("An HTTP/1.1 request must have a Host header field.")
    conn = headers.get("connection")
    if conn is None:
        keep_alive = not http10
    else:
        tokens = [tok.strip() for tok in conn.lower().split(",")]
        keep_alive = "keep-alive" in tokens if http10 else "close" not in tokens
    chunked = False
    length = 0
    te = headers.get("transfer-encoding")
    cl = headers.get("content-length")
    if te is not None:
        err = _transfer_coding_error(te, http10, cl is not None)
        if err is not None:
            raise err
        chunked = True
    elif cl is not None:
        length = int(cl) if cl.isdigit() and cl.isascii() and len(cl) < 19 else _content_length(cl, max_body)
        if length > max_body:
            raise ParseError(
                413, "too_large",
                f"The request body of {length} bytes exceeds the limit of {max_body} bytes.",
            )
    expects = False
    expect = headers.get("expect")
    if expect is not None and not http10:  # HTTP/1.0: ignored (RFC 9110 §10.1.1)
        if expect.strip().lower() != "100-continue":
            raise ParseError(417, "expectation_failed", f"The expectation {expect!r} is not supported.")
        expects = chunked or length > 0
    return path, query, keep_alive, chunked, length, expects


def _raw_field(head: bytes, name: bytes) -> str | None:
    """The value of a field in a raw head, joined with ", " when repeated (error paths only)."""
    values = []
    for line in head.split(b"\r\n")[1:]:
        n, colon, v = line.partition(b":")
        if colon and n.strip().lower() == name:
            values.append(v.strip(b" \t").decode("latin-1"))
    return ", ".join(values) if values else None


class RequestParser:
    """The interface (and the byte buffer) both implementations share; see the module docstring.

    Subclasses implement :meth:`_parse_head` (head bytes -> method, target, fields), and
    :meth:`_body_feed` / :meth:`_body_take` (give the library body bytes; take the decoded body
    once the message is complete).
    """

    name = ""

    __slots__ = (
        "_body_len", "_buf", "_fed", "_limits", "_max_body", "_peer", "_pos", "_remaining", "_req",
        "_scan", "_state", "keep_alive",
    )

    def __init__(self, limits: HttpLimits = HttpLimits(), peer: tuple[str, int] | None = None):
        self._limits = limits
        self._max_body = limits.max_body
        self._peer = peer
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._scan = 0
        self._state = _HEAD
        self._req: Request | None = None
        self._remaining = 0
        self._body_len = 0  # body bytes the library has decoded (implementations count them)
        self._fed = 0  # bytes of a chunked body given to the library
        self.keep_alive = True
        """Whether the connection stays open after the request last returned."""

    # --- the interface ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Buffer bytes read from the connection; nothing is parsed until :meth:`next_event`."""
        if self._pos >= len(self._buf):
            self._buf = data  # the common case: nothing left over, no copy
            self._pos = 0
            self._scan = 0
            return
        buf = self._buf
        if type(buf) is not bytearray:
            buf = bytearray(memoryview(buf)[self._pos :])
            self._scan = max(0, self._scan - self._pos)
            self._pos = 0
            self._buf = buf
        buf += data

    def parse_whole(self, data: bytes) -> Request | None:
        """The fast path: when this parser holds nothing and ``data`` is exactly one complete,
        ordinary request, that request (as :meth:`feed` + :meth:`next_event` would give it), else
        None with nothing consumed, and the caller takes the general path. Raises
        :class:`ParseError` only where :meth:`next_event` would raise the same."""
        return None

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet consumed."""
        return len(self._buf) - self._pos

    @property
    def in_message(self) -> bool:
        """True when part of a request has arrived (a timeout then deserves a 408)."""
        return self._state != _HEAD or len(self._buf) > self._pos

    @property
    def in_head(self) -> bool:
        """True while part of a request head has arrived and not all of it (the head deadline)."""
        return self._state == _HEAD and len(self._buf) > self._pos

    @property
    def pending(self) -> Request | None:
        """The request whose head has been accepted and whose body is still arriving (its
        ``body`` empty until then), or None: what the server may judge by its head alone."""
        return self._req if self._state != _HEAD else None

    @property
    def held(self) -> int:
        """Bytes this parser holds: buffered input and the body decoded so far (the server's
        cap on buffered bodies counts them)."""
        return len(self._buf) - self._pos + (self._body_len if self._state == _CHUNKED else 0)

    def next_event(self) -> Request | _Continue | None:
        """The next complete request, :data:`CONTINUE`, or None; raises :class:`ParseError`."""
        if self._state == _HEAD:
            if self._pos >= len(self._buf):
                return None
            ev = self._next_head()
            if ev is not None or self._state == _HEAD:
                return ev
        if self._state == _BODY:
            return self._next_length_body()
        return self._next_chunked_body()

    # --- heads --------------------------------------------------------------------------------

    def _next_head(self) -> Request | _Continue | None:
        buf, pos = self._buf, self._pos
        while buf.startswith(b"\r\n", pos):  # empty lines before a request (RFC 9112 §2.2)
            pos += 2
        self._pos = pos
        if pos >= len(buf):
            if pos:
                self._buf, self._pos, self._scan = b"", 0, 0
            return None
        end = buf.find(b"\r\n\r\n", max(pos, self._scan))
        if end < 0:
            if buf.find(b"\n\n", pos) >= 0:
                # a head whose lines end in a bare LF (printf, netcat): its CRLF blank line never
                # comes, so say so now rather than at the head deadline (RFC 9112 §2.2)
                raise _bad("The request's lines must end in CRLF, not a bare LF.")
            if _TCHAR.find(buf[pos]) < 0 and buf[pos] not in (10, 13):  # CR, LF: an empty line
                # cannot start a request line (a method is a token): refuse now rather than
                # wait for a head that never ends (a peer node's frames sent to this port)
                raise _bad("The request does not start with a method; this is not HTTP.")
            if len(buf) - pos - 3 > self._limits.max_header_bytes:
                raise ParseError(
                    431, "too_large",
                    f"The request line and header fields exceed {self._limits.max_header_bytes} bytes.",
                )
            self._scan = max(pos, len(buf) - 3)
            return None
        http10 = _check_head(buf, pos, end, self._limits)
        method, target, headers, body = self._parse_head(buf, pos, end)
        self._scan = 0
        path, query, keep_alive, chunked, length, expects = _judge(
            method, target, http10, headers, self._max_body
        )
        req = Request(
            method, target, path, query, "HTTP/1.0" if http10 else "HTTP/1.1", headers, b"",
            self._peer,
        )
        self.keep_alive = keep_alive
        if body is not None:  # the implementation took a whole Content-Length body with the head
            if chunked or length != len(body):
                raise _bad("The request's framing is inconsistent.")
            req.body = body
            self._pos = end + 4 + length
            if self._pos >= len(buf):
                self._buf, self._pos = b"", 0
            return req
        self._pos = end + 4
        if chunked:
            self._state = _CHUNKED
        elif length:
            self._state = _BODY
            self._remaining = length
        else:
            self._body_none()
            return req
        self._req = req
        self._fed = 0
        self._body_start(chunked, length)
        if expects and self._pos >= len(self._buf):
            return CONTINUE
        return None

    # --- bodies -------------------------------------------------------------------------------

    def _next_length_body(self) -> Request | None:
        buf, pos, n = self._buf, self._pos, self._remaining
        if len(buf) - pos < n:
            return None
        with memoryview(buf) as view:
            self._body_feed(view[pos : pos + n])
        self._pos = pos + n
        return self._complete()

    def _next_chunked_body(self) -> Request | None:
        while True:
            buf, pos = self._buf, self._pos
            if pos >= len(buf):
                return None
            # Neither library bounds chunk-size lines, extensions or the trailer section: bound
            # what the framing may add to the data (generous: 1-byte chunks add 5 bytes each).
            if self._fed - self._body_len > 8 * self._body_len + self._limits.max_header_bytes:
                raise ParseError(
                    431, "too_large", "The chunked framing or trailer section is too large."
                )
            end = buf.find(b"\r\n\r\n", pos)
            # Without a blank line, keep the last 3 bytes back: they may begin one.
            stop = end + 4 if end >= 0 else len(buf) - 3
            if stop <= pos:
                return None
            with memoryview(buf) as view:
                done = self._body_feed(view[pos:stop])
            self._fed += stop - pos
            self._pos = stop
            if done:
                return self._complete()

    def _complete(self) -> Request:
        req = self._req
        assert req is not None
        req.body = self._body_take()
        self._req = None
        self._state = _HEAD
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
        return req

    def _too_large(self) -> ParseError:
        return ParseError(
            413, "too_large", f"The chunked request body exceeds the limit of {self._max_body} bytes."
        )

    # --- what an implementation provides -----------------------------------------------------

    def _parse_head(
        self, buf: bytes | bytearray, pos: int, end: int
    ) -> tuple[str, str, dict[str, str], bytes | None]:
        """(method, target, fields with lower-cased names, repeats joined with ", ", body) of the
        head in ``buf[pos:end]``; the blank line follows it. ``body`` is None, or the whole
        Content-Length body when the implementation took it from ``buf`` with the head."""
        raise NotImplementedError

    def _body_none(self) -> None:
        """The head just parsed has no body."""

    def _body_start(self, chunked: bool, length: int) -> None:
        """The head just parsed has a body (chunked, or of ``length`` bytes)."""

    def _body_feed(self, data: memoryview) -> bool:
        """Give the library body bytes; True once the message is complete."""
        raise NotImplementedError

    def _body_take(self) -> bytes:
        raise NotImplementedError
