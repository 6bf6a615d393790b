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

The rules both implementations share, and the interface itself, are in
:mod:`realnet.httpparse_rules` (:class:`RequestParser`, :class:`Request`, :class:`HttpLimits`,
:class:`ParseError`, :data:`CONTINUE`; re-exported here and by :mod:`realnet.http`). This module
names the implementations (:data:`PARSERS`) and builds one (:func:`make_parser`).

Two implementations:

:class:`HttptoolsParser` (the default, :mod:`realnet.httpparse_llhttp`)
    llhttp, Node.js's parser, through ``httptools`` (what uvicorn uses). Two heads it refuses are
    valid and parsed again, rewritten: a list of identical ``Content-Length`` values (RFC 9110
    §8.6), collapsed to one; a method outside llhttp's list (any token is a method, and the API
    answers it 405), replaced by ``POST`` while parsing and kept as sent in the request.
:class:`H11Parser` (:mod:`realnet.httpparse_h11`)
    ``h11``, pure Python.

The two differ in one corner the RFC allows (BWS around a chunk extension's ``;``, RFC 9112
§7.1.1): llhttp accepts ``5 ;ext`` (told to) and refuses ``5; ext``; h11 does the opposite.
Both are 400 when refused.
"""

from __future__ import annotations

from realnet.httpparse_h11 import H11Parser
from realnet.httpparse_llhttp import HttptoolsParser
from realnet.httpparse_rules import CONTINUE, HttpLimits, ParseError, Request, RequestParser

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
