"""The default request parser: llhttp, Node.js's parser, through ``httptools``.

Theory of operation
-------------------
:class:`HttptoolsParser` is a :class:`realnet.httpparse_rules.RequestParser` (the interface and
the shared rules: :mod:`realnet.httpparse`) whose library is llhttp, through ``httptools`` (what
uvicorn uses). Two heads it refuses are valid and parsed again, rewritten: a list of identical
``Content-Length`` values (RFC 9110 §8.6), collapsed to one; a method outside llhttp's list (any
token is a method, and the API answers it 405), replaced by ``POST`` while parsing and kept as
sent in the request. It alone has the fast path :meth:`~HttptoolsParser.parse_whole`: one whole
plain request in one read, head and body in one library call.

It differs from h11 in one corner the RFC allows (BWS around a chunk extension's ``;``, RFC 9112
§7.1.1): llhttp accepts ``5 ;ext`` (told to) and refuses ``5; ext``; h11 does the opposite.
Both are 400 when refused.
"""

from __future__ import annotations

import httptools

from realnet.httpparse_rules import (
    HttpLimits,
    ParseError,
    Request,
    RequestParser,
    _bad,
    _is_token,
    _judge,
    _plain,
    _raw_field,
    _sentence,
    _transfer_coding_error,
)

__all__ = ["HttptoolsParser"]


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
            retry: tuple[str, str, dict[str, str]] | None
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
        after it, chunked framing, and any head llhttp refuses or stops at (Upgrade).

        The whole read goes to llhttp at once, without first finding where the request ends:
        llhttp finds it. When the read holds more (the start of a pipelined request), llhttp
        has parsed into it; that is seen afterwards and declined. Nothing of a next request can
        reach the first one's fields, body or flags before llhttp has reported the next one's
        target (``on_url``), which makes ``_target`` longer than the request line's; that, or a
        Content-Length that does not end the request exactly at the end of ``data``, declines."""
        if self._state or self._pos < len(self._buf):  # (_HEAD is 0)
            return None
        end = data.find(b"\r\n\r\n")
        limits = self._limits
        # data[0] == 13 (CR): the start of an empty line, or of something worse
        if end <= 0 or end > limits.max_header_bytes or data[0] == 13:
            return None
        # a field line takes at least one CRLF: a short head cannot have too many
        if end > 2 * limits.max_headers and data.count(b"\r\n", 0, end) > limits.max_headers:
            return None
        headers: dict[str, str] = {}
        self._fields = headers
        self._target = b""
        n = len(data)
        more = n != end + 4  # bytes after the head: a body, or a next request
        if more:
            self._body_len = 0
            if self._body:
                self._body = []
        self._done = False
        lib = self._lib
        try:
            lib.feed_data(data)
        except Exception:
            self._lib = self._new_lib()  # the general path parses it again, from the start
            return None
        raw_target = self._target
        raw = lib.get_method()
        # The request line is exactly "METHOD SP target SP HTTP/1.1" (llhttp accepts runs of
        # spaces; we do not): its length says so, once llhttp found those three parts. A target
        # longer than the line's is a next request's too, which llhttp began to parse.
        line_end = data.find(b"\r\n")
        if (
            not self._done  # a body still to come (chunked, or one llhttp expects)
            or len(raw) + len(raw_target) + 10 != line_end
            or not data.endswith(b"HTTP/1.1", 0, line_end)  # (get_http_version formats a str)
        ):
            self._lib = self._new_lib()
            return None
        method = _METHOD_NAMES.get(raw) or raw.decode("ascii")
        target = raw_target.decode("latin-1")
        plain = _plain(target, headers, self._max_body)  # _judge's commonest case, in one test
        if plain is not None:
            path, query, length = plain
            keep_alive, chunked = True, False
        else:
            path, query, keep_alive, chunked, length, _ = _judge(
                method, target, False, headers, self._max_body
            )
        if chunked or end + 4 + length != n:
            self._lib = self._new_lib()  # chunked, or bytes of a next request: general path
            return None
        if length:
            parts = self._body
            self._body = []
            body = b"" if not parts else parts[0] if len(parts) == 1 else b"".join(parts)
            if len(body) != length:  # pragma: no cover - llhttp ends the body at Content-Length
                raise _bad("The request's framing is inconsistent.")  # as _next_head says it
        else:
            body = b""
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
