"""The plain-request lane's recogniser: the commonest request, told apart without a parser.

Theory of operation
-------------------
Nearly every request a node serves has one shape: ``GET``, ``PUT`` or ``DELETE`` of a plain
path, ``HTTP/1.1``, a ``Host`` field, a ``Content-Length`` body or none, a few ordinary fields,
the whole request in one read to an idle connection. :class:`PlainRecogniser` recognises exactly
that shape and returns the parts a handler's lane reads (method, target, ``Host``,
``Authorization``, body) without a :class:`~realnet.httpparse.Request`, a field dictionary or a
library call with its callbacks, so that a plain request costs a few C calls:

1. the request line matches :data:`_REQUEST_LINE` (the C engine of :mod:`re` checks its every
   byte);
2. the field lines, as one bytes object, are looked up in a table of field blocks judged before.
   A client sends the same fields with every request (the same Host, the same Content-Length
   for values of one size, the same token), so after its first request the table answers at
   once; a block not in it is judged (:meth:`PlainRecogniser._judge`: :data:`_FIELD_LINES`
   checks its every byte, then each field's name is read) and kept, up to :data:`MAX_BLOCKS`
   blocks of :data:`MAX_BLOCK_BYTES` at most. The verdict depends on the block's bytes and the
   limits alone, so the table never answers differently from a judgement.

What it accepts is a strict subset of what the parsers accept, and for that subset it gives the
parts they would give, so a lane answering from it answers as the handler would (the tests send
the same bytes both ways and compare):

- the request line is ``METHOD SP target SP HTTP/1.1`` with single spaces, the method one of
  ``GET``, ``PUT``, ``DELETE``; the target is ``/`` and RFC 3986 ``pchar`` without ``%``: no
  query, no fragment, nothing to decode; characters llhttp and h11 accept alike;
- every field line is ``token ":" OWS value OWS`` with visible ASCII and inner spaces or tabs in
  the value (no obs-text, no control character, no folding); the head's size and number of
  fields are within :class:`~realnet.httpparse.HttpLimits`;
- exactly one ``Host``; at most one ``Authorization`` and one ``Content-Length`` (digits, within
  ``max_body``), and the read ends exactly where that body does;
- no field that changes framing, persistence or how the head is judged: ``Connection``,
  ``Proxy-Connection``, ``Transfer-Encoding``, ``Expect``, ``Upgrade`` (the parsers' rules for
  those stay theirs alone).

Field values are given as the parsers give them: latin-1 text without the whitespace around it.
"""

from __future__ import annotations

import re

from realnet.httpparse_rules import HttpLimits

__all__ = ["MAX_BLOCKS", "MAX_BLOCK_BYTES", "MAX_LANE_HEAD", "PlainRecogniser"]

_TCHAR = rb"-!#$%&'*+.^_`|~0-9A-Za-z"
_PATH_CHAR = rb"-A-Za-z0-9._~!$&'()*+,;=:@/"  # RFC 3986 pchar and "/", without "%"

_REQUEST_LINE = re.compile(rb"(GET|PUT|DELETE) (/[" + _PATH_CHAR + rb"]*) HTTP/1\.1\r\n")
# one way only to match each byte (no run of spaces that two quantifiers could share: an empty
# value's spaces are the leading OWS alone), so a hostile head cannot make the engine backtrack
# through every split of its whitespace (a review found 954 bytes that stalled a node 9.5 s)
_FIELD_LINES = re.compile(
    rb"(?:[" + _TCHAR + rb"]+:[ \t]*(?:[!-~]+(?:[ \t]+[!-~]+)*[ \t]*)?\r\n)+"
)

# What a field's (lower-cased) name means to the lane: 0 Host, 1 Content-Length,
# 2 Authorization, 3 a field whose rules stay the parsers' (not plain); any other is ignored.
_FIELDS = {
    b"host": 0, b"content-length": 1, b"authorization": 2,
    b"connection": 3, b"proxy-connection": 3, b"transfer-encoding": 3, b"expect": 3, b"upgrade": 3,
}

#: field blocks a recogniser keeps the verdict of, and the longest it keeps (a client's fields
#: are short; a longer block is judged every time): at most 256 KiB per server
MAX_BLOCKS = 256
#: the longest head the lane takes (a bound on its regular expressions' work, whatever comes)
MAX_LANE_HEAD = 8192
MAX_BLOCK_BYTES = 1024

_UNSEEN = object()

#: a field block's verdict: (Host, Authorization or None, Content-Length), or None (not plain)
Verdict = tuple[str, "str | None", int] | None


class PlainRecogniser:
    """Recognises plain requests (the module docstring) under one server's limits."""

    __slots__ = ("_blocks", "_max_body", "_max_head", "_max_headers")

    def __init__(self, limits: HttpLimits) -> None:
        self._max_head = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._max_body = limits.max_body
        #: field block -> its verdict (bounded: MAX_BLOCKS)
        self._blocks: dict[bytes, Verdict] = {}

    def __call__(self, data: bytes) -> tuple[bytes, bytes, str, str | None, bytes] | None:
        """``(method, target, host, authorization, body)`` when ``data`` is exactly one plain
        request, else None. ``body`` is b"" without Content-Length."""
        m = _REQUEST_LINE.match(data)
        if m is None:
            return None
        start = m.end()
        end = data.find(b"\r\n\r\n", start - 2)
        if end < 0 or end > self._max_head or end > MAX_LANE_HEAD:
            return None  # (a longer head is the parser's: a plain client's is short)
        fields = data[start : end + 2]  # the field lines, each with its CRLF
        blocks = self._blocks
        seen = blocks.get(fields, _UNSEEN)
        if seen is _UNSEEN:
            verdict = self._judge(fields)
            if len(fields) <= MAX_BLOCK_BYTES:
                if len(blocks) >= MAX_BLOCKS:
                    del blocks[next(iter(blocks))]  # the oldest verdict makes room: kept fresh
                blocks[fields] = verdict
        else:
            verdict = seen  # type: ignore[assignment]  # (a Verdict: typing.cast is a call)
        if verdict is None:
            return None
        length = verdict[2]
        if end + 4 + length != len(data):
            return None
        method, target = m.groups()
        return method, target, verdict[0], verdict[1], data[end + 4 :] if length else b""

    def _judge(self, fields: bytes) -> Verdict:
        """The verdict on a block of field lines (each ending in CRLF)."""
        if _FIELD_LINES.fullmatch(fields) is None or fields.count(b"\r\n") > self._max_headers:
            return None
        host = length = auth = None
        for line in fields[:-2].split(b"\r\n"):
            name, _, value = line.partition(b":")
            kind = _FIELDS.get(name.lower())
            if kind is None:
                continue
            text = value.strip(b" \t").decode("latin-1")
            if kind == 0 and host is None:
                host = text
            elif kind == 1 and length is None:
                length = text
            elif kind == 2 and auth is None:
                auth = text
            else:
                return None  # a repeated field, or one the parsers' rules decide
        if host is None:
            return None
        if length is None:
            return host, auth, 0
        if not (length.isascii() and length.isdigit()) or len(length) > 9 or int(length) > self._max_body:
            return None
        return host, auth, int(length)
