"""The bytes of a response: what :mod:`realnet.http` writes for a :class:`Response`.

Theory of operation
-------------------
A handler answers with a :class:`Response` (or a :class:`Pending` one); :func:`_serialize` turns
it into the one bytes object the connection writes, adding ``Content-Length`` (except on 204 and
304), a ``Date`` field and, where the request calls for it, ``Connection``. Most of that work is
done once and kept: the status line and Content-Type line per (status, type), checked once
(``_PREFIX_CACHE``); the ``Date`` line, formatted at most once per second; and the whole head of
a plain keep-alive response (status line, Content-Type, Date) per status and type for the rest of
that second (``_HEADS``, emptied with every new Date line), so the next such response is that
head, its Content-Length line and its body (:func:`_known_head_bytes`,
:func:`keepalive_response`). It is apart from :mod:`realnet.http` because it needs no connection:
only the response, the request's framing and the clock; its caches are the process's, shared by
every server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol

__all__ = [
    "Pending",
    "Response",
    "error_response",
    "json_response",
    "keepalive_response",
]


@dataclass(slots=True)
class Response:
    """What a handler answers. The server adds Content-Length, Date and Connection itself."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


class Pending(Protocol):
    """What a handler may return for a response it gives later: an :class:`asyncio.Future`, or
    anything with the part of its interface the server reads (the node's reply slot is one).
    Something that also has ``add_response_callback(fn)``, calling ``fn(response)`` with a
    :class:`Response` once it has one and never failing, is asked that instead (one call where
    a future's outcome takes three: the node's reply slot, on every forwarded request)."""

    def add_done_callback(self, fn: Callable[[Any], None], /) -> None: ...
    def cancelled(self) -> bool: ...
    def exception(self) -> BaseException | None: ...
    def result(self) -> Response: ...


def json_response(status: int, obj: object) -> Response:
    """A compact JSON response."""
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status, body, "application/json")


def error_response(status: int, code: str, message: str) -> Response:
    """The one error form of the API: ``{"error": code, "message": message}``."""
    return json_response(status, {"error": code, "message": message})


# --- response bytes --------------------------------------------------------------------------

_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_PREFIX_CACHE: dict[tuple[int, str | None], bytes] = {}

_STATUS_LINES: dict[int, bytes] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus
}
_FRAMING_FIELDS = frozenset({"content-length", "transfer-encoding", "connection"})

_time = time.time
_date_valid_until = 0.0  # wall-clock second at which _date_line goes stale
_date_line = b""


#: (status, content type) -> status line, Content-Type and Date field lines of this second's
#: keep-alive responses without extra fields: what :func:`_serialize` checked and built once
#: (emptied with every new Date line)
_HEADS: dict[tuple[int, str | None], bytes] = {}
#: the Content-Length field line and blank line of the commonest body lengths
_LENGTHS = [b"Content-Length: %d\r\n\r\n" % n for n in range(1024)]


def _date() -> bytes:
    """The ``Date`` field line, formatted at most once per second."""
    global _date_valid_until, _date_line
    now = _time()
    if now >= _date_valid_until:
        second = int(now)
        _date_line = b"Date: " + formatdate(second, usegmt=True).encode() + b"\r\n"
        _date_valid_until = second + 1.0
        _HEADS.clear()
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


def _known_head_bytes(status: int, content_type: str | None, body: bytes) -> bytes | None:
    """The commonest response's bytes (keep-alive HTTP/1.1, not HEAD, no extra field: the
    caller's to check): a head built before in this second, then the body; None when there is
    no such head (or for a 204 or 304 with a body, which :func:`_serialize` refuses)."""
    head = _HEADS.get((status, content_type))
    if head is None or _time() >= _date_valid_until:
        return None
    if status != 204 and status != 304:
        n = len(body)
        return head + (_LENGTHS[n] if n < 1024 else b"Content-Length: %d\r\n\r\n" % n) + body
    return None if body else head + b"\r\n"


def _serialize(resp: Response, keep_alive: bool, http10: bool, head_only: bool) -> bytes:
    """The response as one bytes object. Raises ValueError on a response the server cannot send."""
    status = resp.status
    body = resp.body
    if keep_alive and not http10 and not head_only and not resp.headers:
        data = _known_head_bytes(status, resp.content_type, body)
        if data is not None:
            return data
    prefix = _PREFIX_CACHE.get((status, resp.content_type))
    if prefix is None:
        prefix = _prefix(status, resp.content_type)
    no_body = status == 204 or status == 304
    if no_body and body:
        raise ValueError(f"a {status} response must not have a body")
    if keep_alive and not http10 and not resp.headers:
        # The common case: one formatting operation.
        date = _date_line if _time() < _date_valid_until else _date()
        if len(_HEADS) < 64:
            _HEADS[(status, resp.content_type)] = prefix + date
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


def keepalive_response(status: int, content_type: str | None, body: bytes) -> bytes:
    """The bytes :func:`_serialize` gives ``Response(status, body, content_type)`` sent keep-alive
    to an HTTP/1.1 request (not HEAD): a lane's answer (:data:`realnet.http.Lane`), built without
    a Response when its head was built before in this second."""
    data = _known_head_bytes(status, content_type, body)
    return data if data is not None else _serialize(Response(status, body, content_type), True, False, False)


def _is_token(s: str) -> bool:
    """RFC 9110 §5.6.2 token: one or more tchar."""
    return bool(s) and s.isascii() and not s.encode("ascii").translate(None, _TCHAR)
