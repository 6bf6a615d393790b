"""realnet.httpparse without sockets: both request parsers fed bytes, events checked.

Every test runs against each implementation (:data:`realnet.httpparse.PARSERS`); where the two
differ on purpose the test says so.
"""

from __future__ import annotations

import pytest

from realnet.httpparse import (
    CONTINUE,
    PARSERS,
    HttpLimits,
    ParseError,
    Request,
    RequestParser,
    make_parser,
)


@pytest.fixture(params=list(PARSERS))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def parser(name: str, **limits: int) -> RequestParser:
    return make_parser(name, HttpLimits(**limits), ("127.0.0.1", 5))


def events(p: RequestParser, data: bytes = b"") -> list[Request | object]:
    """Feed ``data``, then take events until the parser needs more bytes."""
    if data:
        p.feed(data)
    out: list[Request | object] = []
    while (ev := p.next_event()) is not None:
        out.append(ev)
    return out


def one(name: str, data: bytes, **limits: int) -> Request:
    got = events(parser(name, **limits), data)
    assert len(got) == 1 and isinstance(got[0], Request), got
    assert type(got[0].body) is bytes
    return got[0]


def refusal(name: str, data: bytes, **limits: int) -> ParseError:
    p = parser(name, **limits)
    with pytest.raises(ParseError) as info:
        events(p, data)
    err = info.value
    assert err.message.endswith("."), err.message
    return err


# --- requests -------------------------------------------------------------------------------------


def test_a_get_is_parsed_into_a_request(name: str) -> None:
    req = one(name, b"GET /kv/a%2Fb?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a:  2 \t\r\n\r\n")
    assert (req.method, req.target, req.path, req.query) == ("GET", "/kv/a%2Fb?x=1", "/kv/a%2Fb", "x=1")
    assert req.version == "HTTP/1.1"
    assert req.headers == {"host": "h", "x-a": "1, 2"}
    assert (req.body, req.peer) == (b"", ("127.0.0.1", 5))


def test_a_request_fed_byte_by_byte_completes_on_its_last_byte(name: str) -> None:
    data = b"PUT /kv/k HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    p = parser(name)
    for i in range(len(data) - 1):
        assert events(p, data[i : i + 1]) == []
        assert p.in_message
    (req,) = events(p, data[-1:])
    assert isinstance(req, Request) and req.body == b"hello"
    assert not p.in_message


def test_pipelined_requests_come_out_one_at_a_time_in_order(name: str) -> None:
    p = parser(name)
    p.feed(
        b"PUT /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\na"
        b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"PUT /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nc\r\n0\r\n\r\n"
        b"GET /4 HTTP/1.1\r\nHost: h\r\n\r\nGET /5 HT"
    )
    first = p.next_event()
    assert isinstance(first, Request) and (first.path, first.body) == ("/1", b"a")
    assert p.buffered > 0  # the rest waits until asked for
    rest = events(p)
    assert [(r.path, r.body) for r in rest if isinstance(r, Request)] == [
        ("/2", b""), ("/3", b"c"), ("/4", b""),
    ]
    assert p.in_message  # "GET /5 HT" is waiting for the rest of its head
    (last,) = events(p, b"TP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(last, Request) and last.path == "/5"


def test_leading_empty_lines_are_skipped(name: str) -> None:
    p = parser(name)
    assert events(p, b"\r") == []
    assert events(p, b"\n\r\n") == []
    (req,) = events(p, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert isinstance(req, Request) and req.path == "/"


@pytest.mark.parametrize("data", [b"\x00\x00\x00\x1a\x83", b"\x16\x03\x01", b" GET"])
def test_bytes_that_cannot_start_a_request_are_refused_at_once(name: str, data: bytes) -> None:
    # a peer node's frames (a length prefix), a TLS hello, a leading space: 400 before any
    # head ends, so a node dialling this port as a peer hears "HTTP/" within milliseconds
    err = refusal(name, data)
    assert (err.status, err.code) == (400, "bad_request")
    assert "not HTTP" in err.message


def test_absolute_form_and_asterisk(name: str) -> None:
    req = one(name, b"GET http://h:80/echo?q=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert (req.path, req.query) == ("/echo", "q=1")
    assert one(name, b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").path == "*"


@pytest.mark.parametrize("method", ["FOO", "get", "PROPFIND", "M-SEARCH"])
def test_any_token_is_a_method(name: str, method: str) -> None:
    data = f"{method} /k HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi".encode()
    req = one(name, data)
    assert (req.method, req.path, req.body) == (method, "/k", b"hi")


def test_keep_alive_follows_version_and_connection(name: str) -> None:
    cases = [
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
    ]
    for data, keep_alive in cases:
        p = parser(name)
        (req,) = events(p, data)
        assert p.keep_alive is keep_alive, data
        assert isinstance(req, Request)


def test_an_upgrade_request_is_served_as_it_is(name: str) -> None:
    p = parser(name)
    got = events(
        p,
        b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
    )
    assert [r.path for r in got if isinstance(r, Request)] == ["/a", "/b"]


# --- bodies -------------------------------------------------------------------------------------


def test_content_length_body_split_across_feeds(name: str) -> None:
    p = parser(name)
    assert events(p, b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n01234") == []
    (req,) = events(p, b"56789GET")
    assert isinstance(req, Request) and req.body == b"0123456789"
    assert p.buffered == 3


def test_identical_content_length_values_are_one(name: str) -> None:
    req = one(name, b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc")
    assert req.body == b"abc"


def test_chunked_body_with_extensions_and_trailer(name: str) -> None:
    req = one(
        name,
        b"PUT /k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=val\r\n \r\n6;a;b=\"q\"\r\nworld!\r\n0\r\nX-Trailer: t\r\nHost: x\r\n\r\n",
    )
    assert req.body == b"hello world!"
    assert "x-trailer" not in req.headers and req.headers["host"] == "h"


def test_chunk_data_holding_blank_lines_ends_where_the_message_ends(name: str) -> None:
    # The parser hands chunked bytes to the library up to each blank line; data that contains
    # blank lines (and a CRLF just before the last chunk) must not confuse the boundary.
    value = b"\r\n\r\n\r\nx\r\n\r\n"
    data = (
        b"PUT /k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(value), value)
        + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    for step in (len(data), 7, 1):
        p = parser(name)
        got: list[Request | object] = []
        for i in range(0, len(data), step):
            got += events(p, data[i : i + step])
        assert [(r.path, r.body) for r in got if isinstance(r, Request)] == [
            ("/k", value), ("/next", b""),
        ], step


def test_whitespace_in_chunk_extensions(name: str) -> None:
    head = b"PUT /k HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    # Before ";" is BWS (RFC 9112 §7.1.1): llhttp is told to accept it, h11 refuses it.
    if name == "h11":
        assert refusal(name, head + b"5 ;e\r\nhello\r\n0\r\n\r\n").status == 400
    else:
        assert one(name, head + b"5 ;e\r\nhello\r\n0\r\n\r\n").body == b"hello"
    # After ";" (also BWS in RFC 9112): llhttp refuses it, h11 accepts it.
    if name == "h11":
        assert one(name, head + b"5; e\r\nhello\r\n0\r\n\r\n").body == b"hello"
    else:
        assert refusal(name, head + b"5; e\r\nhello\r\n0\r\n\r\n").status == 400


# --- Expect: 100-continue --------------------------------------------------------------------------


def test_continue_when_the_body_has_not_started(name: str) -> None:
    p = parser(name)
    head = b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    assert events(p, head) == [CONTINUE]
    (req,) = events(p, b"hello")
    assert isinstance(req, Request) and req.body == b"hello"


def test_no_continue_when_the_body_came_with_the_head_or_there_is_none(name: str) -> None:
    head = b"PUT /k HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
    got = events(parser(name), head + b"hello")
    assert len(got) == 1 and isinstance(got[0], Request)
    got = events(parser(name), b"GET /k HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n")
    assert len(got) == 1 and isinstance(got[0], Request)
    # HTTP/1.0 ignores Expect (RFC 9110 §10.1.1).
    got = events(parser(name), b"PUT /k HTTP/1.0\r\nContent-Length: 1\r\nExpect: x\r\n\r\n")
    assert got == []


# --- refusals --------------------------------------------------------------------------------------

MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET /\r\n\r\n",
    b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n",
    b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.x\r\nHost: h\r\n\r\n",
    b"GET noslash HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nName : x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nY: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\nabcde",
    b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nabcde",
    b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\nabcde",
    b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nbad\r\n\r\n",
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_requests_are_400(name: str, data: bytes) -> None:
    err = refusal(name, data)
    assert (err.status, err.code) == (400, "bad_request")


#: header fields a PUT's head is refused for, with the status and code (the server test sends them
#: through a socket too, so both layers are held to one table)
FRAMING_REFUSALS = [
    ("Transfer-Encoding: chunked\r\nContent-Length: 5", 400, "bad_request"),
    ("Transfer-Encoding: gzip", 400, "bad_request"),
    ("Transfer-Encoding: chunked, gzip", 400, "bad_request"),
    ("Transfer-Encoding: chunked, chunked", 400, "bad_request"),
    ("Transfer-Encoding: gzip, chunked", 501, "not_implemented"),
    ("Expect: something-else", 417, "expectation_failed"),
]


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [*FRAMING_REFUSALS, ("Content-Length: 10485760", 413, "too_large")],
)
def test_framing_refusals_come_with_the_head(name: str, fields: str, status: int, code: str) -> None:
    # Only the head is fed: each refusal is decided before a body byte arrives.
    err = refusal(name, f"PUT /k HTTP/1.1\r\nHost: h\r\n{fields}\r\n\r\n".encode())
    assert (err.status, err.code) == (status, code)


@pytest.mark.parametrize(
    "data", [b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]
)
def test_other_versions_are_505(name: str, data: bytes) -> None:
    assert refusal(name, data).status == 505


def test_body_limits(name: str) -> None:
    assert one(name, b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd", max_body=4)
    err = refusal(name, b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n", max_body=4)
    assert (err.status, "5 bytes" in err.message) == (413, True)
    chunked = b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert one(name, chunked + b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n", max_body=4).body == b"abcd"
    err = refusal(name, chunked + b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n", max_body=4)
    assert (err.status, err.code) == (413, "too_large")


def test_head_limits_are_431(name: str) -> None:
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 200 + b"\r\n\r\n"
    assert refusal(name, big, max_header_bytes=100).status == 431
    endless = b"GET / HTTP/1.1\r\nX: " + b"a" * 200
    assert refusal(name, endless, max_header_bytes=100).status == 431
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(5))
    many = b"GET / HTTP/1.1\r\nHost: h\r\n" + fields + b"\r\n"
    assert refusal(name, many, max_headers=5).status == 431
    assert one(name, many, max_headers=6).headers["x-4"] == "v"


def test_an_endless_trailer_or_chunk_extension_is_431(name: str) -> None:
    head = b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    for tail in (b"2\r\nab\r\n0\r\nX-T: " + b"t" * 400, b"2;" + b"e" * 400):
        p = parser(name, max_header_bytes=100)
        p.feed(head)
        with pytest.raises(ParseError) as info:
            for i in range(0, len(tail), 50):  # never a blank line: more keeps coming
                events(p, tail[i : i + 50])
        assert info.value.status == 431


def test_unknown_parser_name() -> None:
    with pytest.raises(ValueError, match="unknown HTTP parser"):
        make_parser("nope")


# --- the fast path (parse_whole) gives what feed + next_event give ----------------------------------

WHOLE = [
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/a?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /kv/a HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    b"DELETE /kv/a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"HEAD /kv/a HTTP/1.1\r\nHost: h\r\nX: a\r\nX: b\r\n\r\n",
    b"GET http://h/kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    b"FOO /kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"\r\nGET /kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/a HTTP/1.0\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\nGET /kv/b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 10485760\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n",
    # the fast path gives llhttp the whole read: whatever follows the first request, parsed
    # into by llhttp, must not reach the first request's fields, body or framing
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\nPUT /kv/b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\nPUT /kv/b HTTP/1.1\r\nContent-Length: 3\r\nX: y\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\nGET /kv/b HTTP/1.1\r\nHost: h\r\nBad field\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcG",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcPUT /kv/b HTTP/1.1\r\nHost: h\r\n"
    b"Content-Length: 2\r\n\r\nde",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\nPUT /kv/b HTTP/1.1\r\nHost: h\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\nPUT /kv/b HTTP/1.1\r\nHost: h\r\nContent-Length: 9999999\r\n\r\n",
    # ... even when the next head's Content-Length is exactly the bytes that follow the first
    # request (38: the length of that partial head; llhttp reports a field once the next begins)
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\nPUT /b HTTP/1.1\r\nContent-Length: 38\r\nX",
    b"GET  /kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/a  HTTP/1.1\r\nHost: h\r\n\r\n",
    # the fast path decides the commonest heads itself (httpparse_llhttp.parse_whole): every
    # field that changes the judgement, and every shape of the request line, must decline or
    # agree with the general path
    b"GET /kv/a HTTP/1.1 \r\nHost: h\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nUser-Agent: t\r\n\r\n",
    b"GET /kv/a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/a?b=c?d HTTP/1.1\r\nHost: h\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 0005\r\n\r\nhello",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 00000000005\r\n\r\nhello",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length:  5 \r\n\r\nhello",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nhello",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nhello",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST /kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nhost: i\r\n\r\n",
]


def _outcome(p: RequestParser, data: bytes, fast: bool) -> tuple[object, ...]:
    """What a parser makes of ``data``: its events (requests as their fields), or the refusal."""
    got: list[object] = []
    try:
        req = p.parse_whole(data) if fast else None
        if req is not None:
            got.append(req)
        else:
            got.extend(events(p, data))
    except ParseError as err:
        return ("refused", err.status, err.code, err.message)
    return (
        "ok", p.keep_alive, p.buffered,
        [(e.method, e.target, e.path, e.query, e.version, e.headers, e.body, e.peer)
         if isinstance(e, Request) else e for e in got],
    )


@pytest.mark.parametrize("data", WHOLE + MALFORMED)
def test_the_fast_path_answers_as_the_general_path(name: str, data: bytes) -> None:
    # After a first request (a keep-alive connection's parser), and on a fresh parser.
    first = b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n"
    for warm in (False, True):
        fast, general = parser(name), parser(name)
        if warm:
            assert _outcome(fast, first, True) == _outcome(general, first, False)
        assert _outcome(fast, data, True) == _outcome(general, data, False)


def test_the_fast_path_takes_the_common_requests() -> None:
    p = parser("httptools")
    get = b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\n"
    put = b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    for data in (get, put, get):
        assert p.parse_whole(data) is not None
    part = b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel"
    assert p.parse_whole(part) is None  # nothing consumed: the caller feeds it to the general path
    assert events(p, part) == []
    assert p.parse_whole(b"lo") is None  # a body is due: the fast path stays out of the way
    (req,) = events(p, b"lo")
    assert isinstance(req, Request) and req.body == b"hello" and p.buffered == 0
    assert p.parse_whole(get) is not None
    assert parser("h11").parse_whole(get) is None  # h11 has no fast path


@pytest.mark.parametrize("limits", [{"max_headers": 2}, {"max_header_bytes": 40}, {"max_body": 4}])
@pytest.mark.parametrize("data", WHOLE)
def test_the_fast_path_keeps_the_limits(name: str, data: bytes, limits: dict[str, int]) -> None:
    fast, general = parser(name, **limits), parser(name, **limits)
    assert _outcome(fast, data, True) == _outcome(general, data, False)
