"""The pure-Python request parser: ``h11``.

Theory of operation
-------------------
:class:`H11Parser` is a :class:`realnet.httpparse_rules.RequestParser` (the interface and the
shared rules: :mod:`realnet.httpparse`) whose library is ``h11``, pure Python, chosen with
``python -m realnet.node --http-parser h11``. It uses one ``h11.Connection`` per request: this
server writes its own responses, and an h11 connection would wait for one before reading the
next request.
"""

from __future__ import annotations

import h11

from realnet.httpparse_rules import (
    HttpLimits,
    ParseError,
    RequestParser,
    _bad,
    _check_field_bytes,
    _raw_field,
    _sentence,
    _transfer_coding_error,
)

__all__ = ["H11Parser"]


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
    ) -> tuple[str, str, dict[str, str], bytes | None]:
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
