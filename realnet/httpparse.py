"""Request parsing for :mod:`realnet.http`: one small interface, two library implementations.

Theory of operation
-------------------
A parser belongs to one connection. The connection :meth:`~RequestParser.feed`\\ s it every byte it
reads and asks :meth:`~RequestParser.next_event` for what is complete, one event at a time:

* a :class:`Request` with its whole body: a request is complete;
* :data:`CONTINUE`: a request head carrying ``Expect: 100-continue`` was accepted, its body is
  still to come and no byte of it has arrived (the connection answers ``100 Continue``);
* ``None``: more bytes are needed;
* :class:`ParseError` (raised) with the status, code and sentence of the refusal; the
  connection answers it and closes. A parser is not used after an error.

A connection may first offer a read to :meth:`~RequestParser.parse_whole`, the fast path for the
commonest case (an idle parser, one whole request in the read): it returns that request exactly
as the two calls above would, or None having consumed nothing (only :class:`HttptoolsParser`
has one; it declines whatever is not plain, and the general path then parses from the start).

Bytes past the request being returned stay buffered (pipelining): the connection asks for the
next event only when it is ready to handle it, so requests come out strictly in order and
:attr:`~RequestParser.buffered` is what the connection measures for back-pressure.

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

Two implementations:

:class:`HttptoolsParser` (the default)
    llhttp, Node.js's parser, through ``httptools`` (what uvicorn uses). Two heads it refuses are
    valid and parsed again, rewritten: a list of identical ``Content-Length`` values (RFC 9110
    §8.6), collapsed to one; a method outside llhttp's list (any token is a method, and the API
    answers it 405), replaced by ``POST`` while parsing and kept as sent in the request.
:class:`H11Parser`
    ``h11``, pure Python.

The two differ in one corner the RFC allows (BWS around a chunk extension's ``;``, RFC 9112
§7.1.1): llhttp accepts ``5 ;ext`` (told to) and refuses ``5; ext``; h11 does the opposite.
Both are 400 when refused.

A chunked body is given to the library piece by piece, each piece ending just after a blank line
(``\\r\\n\\r\\n``): a chunked message always ends with one, so the library never reads past the
end of the message into the next pipelined request, and the parser knows exactly where the next
request starts without the library telling it. A ``Content-Length`` body is given in exactly
that many bytes; with llhttp, when the whole body is already buffered, together with its head in
one call (the common case of a small PUT costs one library call, like a GET).

The parser handles what a connection needs and nothing more: a body reaches the handler whole
(at most :attr:`HttpLimits.max_body` bytes), so the interface has no body-chunk events.
:class:`Request` and :class:`HttpLimits` live here (the parser makes the one within the other)
and are re-exported by :mod:`realnet.http`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import h11
import httptools

__all__ = [
    "CONTINUE",
    "DEFAULT_PARSER",
    "HttpLimits",
    "Request",
    "PARSERS",
    "H11Parser",
    "HttptoolsParser",
    "ParseError",
    "RequestParser",
    "make_parser",
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
    if len(value) > 18:  # far beyond any limit; don't build a huge int
        return max_body + 1
    return int(value)


def _judge(
    method: str, target: str, http10: bool, headers: dict[str, str], max_body: int
) -> tuple[str, str, bool, bool, int, bool]:
    """The rules both parsers share, on a parsed head.

    Returns (path, query, keep_alive, chunked, length, expects_continue).
    """
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


# --- httptools (llhttp) ---------------------------------------------------------------------------

_NAMES: dict[bytes, str] = {}  # raw field name -> lower-cased str, names llhttp accepted
_METHOD_NAMES = {m.encode(): m for m in ("GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH")}
_LLHTTP_ERRORS = (httptools.HttpParserError,)


class HttptoolsParser(RequestParser):
    """llhttp through httptools: the default."""

    name = "httptools"

    __slots__ = ("_body", "_done", "_fields", "_lib", "_target", "_upgraded")

    def __init__(self, limits: HttpLimits = HttpLimits(), peer: tuple[str, int] | None = None):
        super().__init__(limits, peer)
        self._fields: dict[str, str] = {}
        self._target = b""
        self._body: list[bytes] = []
        self._body_len = 0
        self._done = False
        self._upgraded = False
        self._lib = self._new_lib()

    def _new_lib(self) -> httptools.HttpRequestParser:
        lib = httptools.HttpRequestParser(self)
        # RFC 9112 §7.1.1 allows whitespace (BWS) between a chunk size and its extension.
        lib.set_dangerous_leniencies(lenient_spaces_after_chunk_size=True)
        return lib

    # llhttp callbacks
    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = _NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_NAMES) < 1024:
                _NAMES[name] = key
        text = value.decode("latin-1").rstrip(" \t")
        fields = self._fields
        prev = fields.get(key)
        if prev is None:
            fields[key] = text
        elif key == "host":
            raise _bad("The request has more than one Host header field.")
        else:
            fields[key] = prev + ", " + text

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._body_len += len(body)
        if self._body_len > self._max_body:
            raise self._too_large()

    def on_message_complete(self) -> None:
        self._done = True

    def _parse_head(
        self, buf: bytes | bytearray, pos: int, end: int
    ) -> tuple[str, str, dict[str, str], bytes | None]:
        self._fields = {}
        self._target = b""
        self._done = self._upgraded = False
        stop = end + 4
        n = len(buf)
        if stop < n:
            stop = self._body_in_reach(buf, pos, end, n)
        try:
            if pos == 0 and stop == n:
                self._lib.feed_data(buf)  # the common case: the read holds one request
            else:
                with memoryview(buf) as view:
                    self._lib.feed_data(view[pos:stop])
        except httptools.HttpParserUpgrade:
            # An Upgrade (or CONNECT) request: this server does not switch protocols and serves
            # it as it is; llhttp has stopped, so the next request gets a fresh parser.
            self._lib = self._new_lib()
            self._done = self._upgraded = True
            if stop > end + 4:
                raise _bad("An Upgrade or CONNECT request with a body is not supported.") from None
        except ParseError:
            raise
        except _LLHTTP_ERRORS as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ParseError):
                raise cause from None
            head = bytes(buf[pos:end])
            if isinstance(exc, httptools.HttpParserInvalidMethodError):
                retry = self._unknown_method(head)
            else:
                retry = self._collapse_content_length(head, exc)
            if retry is None:
                raise self._refusal(head, exc) from None
            return (*retry, None)
        raw = self._lib.get_method()
        method = _METHOD_NAMES.get(raw) or raw.decode("ascii")
        body = None
        if stop > end + 4:
            parts = self._body
            self._body = []
            body = parts[0] if len(parts) == 1 else b"".join(parts)
        return method, self._target.decode("latin-1"), self._fields, body

    def parse_whole(self, data: bytes) -> Request | None:
        """See :meth:`RequestParser.parse_whole`. The common request (one read holding one HTTP/1.1
        request, head and Content-Length body if any) costs one llhttp call and the checks
        :meth:`_next_head` makes, without its buffering. Anything else is left to the general
        path (a fresh llhttp then parses it from the start, so every refusal, retry and leniency
        stays the general path's): a parser holding bytes, empty lines before the request, a
        head over a limit, HTTP/1.0 or another version, a body not wholly in ``data`` or bytes
        after it, chunked framing, and any head llhttp refuses or stops at (Upgrade)."""
        if self._state != _HEAD or self._pos < len(self._buf) or not data or data[0] == 13:
            return None  # (13: CR, the start of an empty line, or of something worse)
        end = data.find(b"\r\n\r\n")
        limits = self._limits
        if end < 0 or end > limits.max_header_bytes:
            return None
        line_end = data.find(b"\r\n", 0, end)
        if line_end < 0:
            line_end = end
        if (
            data.count(b" ", 0, line_end) != 2
            or not data.endswith(b"HTTP/1.1", 0, line_end)
            # a field line takes at least one CRLF: a short head cannot have too many
            or (end > 2 * limits.max_headers and data.count(b"\r\n", 0, end) > limits.max_headers)
        ):
            return None
        n = len(data)
        if end + 4 != n and self._body_in_reach(data, 0, end, n) != n:
            return None  # not wholly here, or followed by more (pipelined): general path
        head_only = end + 4 == n  # then llhttp has no byte to call on_body with
        self._fields = {}
        self._target = b""
        if not head_only:
            self._body = []
            self._body_len = 0
        self._done = False
        try:
            self._lib.feed_data(data)
        except Exception:
            self._lib = self._new_lib()  # the general path parses it again, from the start
            return None
        if not self._done:  # a body still to come (chunked, or one llhttp expects): general path
            self._lib = self._new_lib()
            return None
        raw = self._lib.get_method()
        method = _METHOD_NAMES.get(raw) or raw.decode("ascii")
        target = self._target.decode("latin-1")
        headers = self._fields
        path, query, keep_alive, chunked, length, _ = _judge(
            method, target, False, headers, self._max_body
        )
        if head_only:
            body = b""
        else:
            parts = self._body
            self._body = []
            body = b"" if not parts else parts[0] if len(parts) == 1 else b"".join(parts)
        if chunked or length != len(body):
            if head_only:  # llhttp saw no body where we see one: the general path decides
                self._lib = self._new_lib()
                return None
            raise _bad("The request's framing is inconsistent.")  # as _next_head says it
        self.keep_alive = keep_alive
        return Request(method, target, path, query, "HTTP/1.1", headers, body, self._peer)

    def _body_in_reach(self, buf: bytes | bytearray, pos: int, end: int, n: int) -> int:
        """Where to stop feeding llhttp: after the head, or after its Content-Length body when
        the whole body is buffered (then one llhttp call parses the request). The value is only
        read here; llhttp parses it (and refuses a repeated or conflicting one)."""
        stop = end + 4
        i = buf.find(b"\r\nContent-Length:", pos, end)
        if i < 0:
            i = buf.find(b"\r\ncontent-length:", pos, end)
            if i < 0:
                return stop
        j = buf.find(b"\r\n", i + 2, end)
        value = bytes(buf[i + 17 : end if j < 0 else j]).strip(b" \t")
        if value.isdigit() and len(value) < 10:
            length = int(value)
            if length <= self._max_body and stop + length <= n:
                self._body = []
                self._body_len = 0
                return stop + length
        return stop

    def _reparse(self, head: bytes, original: bytes) -> tuple[str, str, dict[str, str]]:
        """Parse a rewritten head with a fresh llhttp; refusals name the original head."""
        self._lib = self._new_lib()
        self._fields = {}
        self._target = b""
        self._done = False
        try:
            self._lib.feed_data(head + b"\r\n\r\n")
        except httptools.HttpParserUpgrade:
            self._lib = self._new_lib()
            self._done = self._upgraded = True
        except ParseError:
            raise
        except _LLHTTP_ERRORS as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ParseError):
                raise cause from None
            raise self._refusal(original, exc) from None
        return self._lib.get_method().decode("ascii"), self._target.decode("latin-1"), self._fields

    def _unknown_method(self, head: bytes) -> tuple[str, str, dict[str, str]]:
        """llhttp knows a fixed list of methods; any token is a method (RFC 9110 §9), which the
        handler answers (405 with ``Allow``). Parse the head with a method llhttp knows in its
        place (request framing does not depend on the method, CONNECT aside) and keep the
        method as sent."""
        space = head.find(b" ")
        method = head[:space].decode("latin-1") if space > 0 else ""
        if not _is_token(method):
            raise _bad("The request method is not a valid token.")
        _, target, fields = self._reparse(b"POST" + head[space:], head)
        return method, target, fields

    def _collapse_content_length(
        self, head: bytes, exc: Exception
    ) -> tuple[str, str, dict[str, str]] | None:
        """llhttp refuses ``Content-Length: 3, 3``; RFC 9110 §8.6 accepts identical values."""
        if "Content-Length" not in str(exc):
            return None
        lines = head.split(b"\r\n")
        values: set[bytes] = set()
        keep = [lines[0]]
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if colon and name.lower() == b"content-length":
                values.update(v.strip(b" \t") for v in value.split(b","))
            else:
                keep.append(line)
        if len(values) != 1 or not values.copy().pop().isdigit():
            raise _bad("Content-Length must be one decimal number.")
        keep.append(b"Content-Length: " + values.pop())
        return self._reparse(b"\r\n".join(keep), head)

    @staticmethod
    def _refusal(head: bytes, exc: Exception) -> ParseError:
        if isinstance(exc, httptools.HttpParserInvalidMethodError):
            return _bad("The request method is not valid.")
        if isinstance(exc, httptools.HttpParserInvalidURLError):
            return _bad("The request-target contains invalid characters.")
        text = str(exc)
        if "Transfer-Encoding" in text:
            te = _raw_field(head, b"transfer-encoding") or ""
            err = _transfer_coding_error(te, False, _raw_field(head, b"content-length") is not None)
            if err is not None:
                return err
        return _bad(_sentence("The request head is malformed", text))

    def _body_none(self) -> None:
        if not self._done:  # e.g. a method llhttp expects a body for: keep it in step
            self._lib = self._new_lib()

    def _body_start(self, chunked: bool, length: int) -> None:
        self._body = []
        self._body_len = 0
        self._fields = {}  # llhttp reports trailer fields through on_header: not the head's
        if self._upgraded:
            raise _bad("An Upgrade or CONNECT request with a body is not supported.")

    def _body_feed(self, data: memoryview) -> bool:
        try:
            self._lib.feed_data(data)
        except ParseError:
            raise
        except _LLHTTP_ERRORS as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ParseError):
                raise cause from None
            raise _bad(_sentence("The request body is malformed", str(exc))) from None
        return self._done

    def _body_take(self) -> bytes:
        parts = self._body
        self._body = []
        if not self._done:  # pragma: no cover - the framing above makes this unreachable
            raise _bad("The request body ended early.")
        return parts[0] if len(parts) == 1 else b"".join(parts)


# --- h11 --------------------------------------------------------------------------------------------


class H11Parser(RequestParser):
    """h11, pure Python; one ``h11.Connection`` per request (this server writes its own responses,
    and an h11 connection would wait for one before reading the next request)."""

    name = "h11"

    __slots__ = ("_body", "_conn")

    def __init__(self, limits: HttpLimits = HttpLimits(), peer: tuple[str, int] | None = None):
        super().__init__(limits, peer)
        self._conn: h11.Connection | None = None
        self._body: list[bytes] = []
        self._body_len = 0

    def _parse_head(
        self, buf: bytes | bytearray, pos: int, end: int
    ) -> tuple[str, str, dict[str, str]]:
        head = bytes(buf[pos:end])
        _check_field_bytes(head)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._limits.max_header_bytes + 4)
        conn.receive_data(head + b"\r\n\r\n")
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 501 or "Transfer-Encoding" in str(exc):
                te = _raw_field(head, b"transfer-encoding") or ""
                err = _transfer_coding_error(te, False, _raw_field(head, b"content-length") is not None)
                if err is not None:
                    raise err from None
            raise _bad(_sentence("The request head is malformed", str(exc))) from None
        assert isinstance(event, h11.Request)
        self._conn = conn
        fields: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            prev = fields.get(key)
            fields[key] = text if prev is None else prev + ", " + text
        return event.method.decode("ascii"), event.target.decode("ascii"), fields, None

    def _body_none(self) -> None:
        self._conn = None

    def _body_start(self, chunked: bool, length: int) -> None:
        self._body = []
        self._body_len = 0

    def _body_feed(self, data: memoryview) -> bool:
        conn = self._conn
        assert conn is not None
        conn.receive_data(bytes(data))
        try:
            while True:
                event = conn.next_event()
                if type(event) is h11.Data:
                    self._body.append(event.data)
                    self._body_len += len(event.data)
                    if self._body_len > self._max_body:
                        raise self._too_large()
                elif type(event) is h11.EndOfMessage:
                    self._conn = None
                    return True
                else:
                    return False
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:  # h11's own bound on a line it buffers
                raise ParseError(
                    431, "too_large", "The chunked framing or trailer section is too large."
                ) from None
            raise _bad(_sentence("The request body is malformed", str(exc))) from None

    def _body_take(self) -> bytes:
        parts = self._body
        self._body = []
        return bytes(parts[0]) if len(parts) == 1 else b"".join(parts)


PARSERS: dict[str, type[RequestParser]] = {"httptools": HttptoolsParser, "h11": H11Parser}
"""The implementations by name; the first is the default."""

DEFAULT_PARSER = "httptools"


def make_parser(
    name: str = DEFAULT_PARSER, limits: HttpLimits = HttpLimits(), peer: tuple[str, int] | None = None
) -> RequestParser:
    """A new parser of the named implementation (see :data:`PARSERS`)."""
    try:
        cls = PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown HTTP parser {name!r}; choose one of {', '.join(PARSERS)}") from None
    return cls(limits, peer)
