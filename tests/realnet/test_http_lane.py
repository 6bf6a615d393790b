"""The plain-request lane answers exactly as the parser's path does.

:mod:`realnet.httpplain` recognises plain requests without a parser, and the node's lane
(:meth:`realnet.api.Api.lane`) answers them without a :class:`~realnet.httpparse.Request`.
Both are shortcuts, and a shortcut may only decline or agree:

- the recogniser: every request it takes, both parsers parse to the same method, target, Host,
  Authorization and body, keep-alive, nothing left over (a corpus, then generated heads);
- the lane: the same bytes sent to a node's connection with the lane and to one without give
  the same responses (the Date field aside) and the same counters (HTTP, API, node, latency).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import realnet.http as http
from kvcore.config import NodeConfig
from kvcore.messages import Reply
from kvcore.node import Node
from realnet.api import Api
from realnet.httpparse import PARSERS, HttpLimits, ParseError, Request
from realnet.httpplain import MAX_BLOCK_BYTES, MAX_BLOCKS, MAX_LANE_HEAD, PlainRecogniser
from realnet.security import HostCheck
from tests.realnet.inprocess import started_node
from tests.realnet.test_http_parser import WHOLE, events

LIMITS = HttpLimits(max_body=100, max_header_bytes=300, max_headers=6)

CORPUS = [
    *WHOLE,
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\nAuthorization: Bearer u\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nhOsT:   h:80 \t\r\nX-Empty:\r\nX-Sp: a b\tc\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost : h\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nX: \x80\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nX: \x7f\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nProxy-Connection: close\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\nUpgrade: x\r\n\r\n",
    b"GET /kv/a%20b HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/a?x HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/ HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/a:b@c!$&'()*+,;=-._~/d HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/a{b} HTTP/1.1\r\nHost: h\r\n\r\n",
    b"get /kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/a HTTP/1.10\r\nHost: h\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nContent-Length: 3\r\nHost: h\r\n\r\nabc",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n" + b"x" * 101,
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"x" * 100,
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    b"PUT /kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"DELETE /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X%d: v\r\n" % i for i in range(5)) + b"\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X%d: v\r\n" % i for i in range(6)) + b"\r\n",
    b"GET /kv/" + b"k" * 250 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /kv/" + b"k" * 300 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
]


def _parsed(parser: str, data: bytes, fast: bool) -> tuple[Any, ...] | None:
    """What a parser makes of ``data``: (method, target, host, authorization, body) of its one
    whole keep-alive HTTP/1.1 request, or None for anything else (a refusal, more bytes)."""
    p = PARSERS[parser](LIMITS)
    try:
        req = p.parse_whole(data) if fast else None
        got = [req] if req is not None else events(p, data)
    except ParseError:
        return None
    if len(got) != 1 or type(got[0]) is not Request or p.buffered or not p.keep_alive:
        return None
    r = got[0]
    if r.version != "HTTP/1.1" or r.query or r.path != r.target:
        return None
    return (r.method.encode(), r.target.encode(), r.headers.get("host"),
            r.headers.get("authorization"), r.body)


def _agrees(data: bytes) -> None:
    got = PlainRecogniser(LIMITS)(data)
    if got is None:
        return
    for parser in PARSERS:
        for fast in (True, False):
            assert _parsed(parser, data, fast) == got, (parser, fast, data)


def test_every_request_the_recogniser_takes_is_parsed_alike() -> None:
    taken = 0
    for data in CORPUS:
        _agrees(data)
        taken += PlainRecogniser(LIMITS)(data) is not None
    assert taken >= 10  # (the corpus does exercise the recogniser)


def test_the_recogniser_declines_what_the_parsers_decide() -> None:
    declined = [
        b"GET /kv/a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n",
        b"GET /kv/a HTTP/1.1\r\nHost: h\r\nhost: i\r\n\r\n",
        b"GET /kv/a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhel",
        b"GET /kv/a HTTP/1.1\r\nHost: h\r\n\r\nGET /kv/b HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HEAD /kv/a HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /kv/a HTTP/1.0\r\nHost: h\r\n\r\n",
    ]
    for data in declined:
        assert PlainRecogniser(LIMITS)(data) is None, data


def test_a_block_judged_before_is_answered_the_same_and_the_table_is_bounded() -> None:
    rec = PlainRecogniser(LIMITS)
    put = b"PUT /kv/a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    first = rec(put)
    assert first == (b"PUT", b"/kv/a", "h", None, b"abc")
    assert rec(put) == first
    assert rec(put[:-1]) is None  # the same fields, a body one byte short
    assert rec(b"GET /kv/a HTTP/1.1\r\nConnection: x\r\n\r\n") is None
    assert rec(b"GET /kv/a HTTP/1.1\r\nConnection: x\r\n\r\n") is None
    for i in range(MAX_BLOCKS + 10):
        assert rec(b"GET /kv/a HTTP/1.1\r\nHost: h%d\r\n\r\n" % i) == (b"GET", b"/kv/a", f"h{i}", None, b"")
    assert len(rec._blocks) == MAX_BLOCKS
    assert b"Host: h%d\r\n" % (MAX_BLOCKS + 9) in rec._blocks and b"Host: h0\r\n" not in rec._blocks  # freshest kept
    rec = PlainRecogniser(HttpLimits())
    long = b"GET /kv/a HTTP/1.1\r\nHost: h\r\nX: " + b"x" * MAX_BLOCK_BYTES + b"\r\n\r\n"
    assert rec(long) == rec(long) == (b"GET", b"/kv/a", "h", None, b"")
    assert not rec._blocks  # judged every time, never kept
    longer = b"GET /kv/a HTTP/1.1\r\nHost: h\r\nX: " + b"x" * MAX_LANE_HEAD + b"\r\n\r\n"
    assert rec(longer) is None  # a head over MAX_LANE_HEAD is the parser's


_NAMES = st.sampled_from([b"Host", b"host", b"HOST", b"Content-Length", b"content-length",
                          b"Authorization", b"Connection", b"Expect", b"Transfer-Encoding",
                          b"Upgrade", b"X-A", b"Accept", b"Bad Name", b"", b"X\x80"])
_VALUES = st.sampled_from([b"h", b" h ", b"\th:1", b"", b"3", b"03", b" 3\t", b"3, 3", b"-1",
                           b"a b", b"Bearer t", b"close", b"chunked", b"100-continue", b"\x80",
                           b"a\rb", b"a\nb", b"x" * 40])


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"PUT", b"DELETE", b"HEAD", b"POST"]),
    target=st.sampled_from([b"/kv/a", b"/kv/a%41", b"/kv/a?b", b"/kv/", b"/x", b"*", b"/kv/a b"]),
    fields=st.lists(st.tuples(_NAMES, _VALUES), max_size=5),
    body=st.sampled_from([b"", b"abc", b"abcd"]),
)
def test_generated_requests_are_declined_or_parsed_alike(
    method: bytes, target: bytes, fields: list[tuple[bytes, bytes]], body: bytes
) -> None:
    head = b"%s %s HTTP/1.1\r\n" % (method, target) + b"".join(b"%s:%s\r\n" % f for f in fields)
    _agrees(head + b"\r\n" + body)


# --- the node's lane -------------------------------------------------------------------------


class NullTransport(asyncio.Transport):
    """Keeps what was written."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes] = []

    def write(self, data: Any) -> None:
        self.out.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def write_eof(self) -> None:
        self.out.append(b"<eof>")

    def close(self) -> None:
        self.out.append(b"<close>")


_DATE = re.compile(rb"Date: [^\r]*\r\n")

TOKEN = "s3cret"
REQUESTS = [
    b"PUT /kv/a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /kv/a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"GET /kv/missing HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
    b"PUT /kv/b HTTP/1.1\r\nContent-Length: 0\r\nHost: localhost\r\n\r\n",
    b"GET /kv/b HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
    b"DELETE /kv/b HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"DELETE /kv/b HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /kv/ HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /kv/a%62 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /kv/a HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /kv/" + b"k" * 300 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"PUT /kv/big HTTP/1.1\r\nHost: localhost\r\nContent-Length: 20\r\n\r\n" + b"v" * 20,
    b"HEAD /kv/a HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"PUT /kv/c HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nxy",
    b"GET /kv/c HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\n\r\n",
    b"GET /kv/c HTTP/1.1\r\nHost: localhost\r\nAuthorization: bearer  s3cret\r\n\r\n",
    b"GET /kv/c HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer nope\r\n\r\n",
    b"GET /kv/c HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",


    b"GET /kv/remote1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"PUT /kv/remote2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nx",
]


def _with_token(data: bytes) -> bytes:
    line = data.index(b"\r\n") + 2
    return data[:line] + b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" + data[line:]


class AnswersRemoteKeysLater(Node):
    """Test only: requests for keys starting with ``remote`` are answered on a later loop turn,
    as a forwarded request is (the lane hands the server a future for them)."""

    def on_client_request(self, op: Any, reply: Any) -> None:
        if op.key.startswith(b"remote"):
            asyncio.get_running_loop().call_soon(reply, Reply(value=b"from afar"))
        else:
            super().on_client_request(op, reply)


async def _serve(
    requests: list[bytes], lane: bool, token: str | None, node_class: type[Node]
) -> tuple[list[bytes], dict[str, Any]]:
    """Each request on a connection of its own to a fresh node (with or without the lane):
    the responses (Date fields blanked) and every counter the requests moved."""
    loop = asyncio.get_running_loop()
    node, transport = started_node(node_class, NodeConfig(max_value_bytes=10))
    try:
        api = Api(node, transport, loop=loop, hosts=HostCheck("127.0.0.1", None), client_token=token)
        limits = HttpLimits(max_body=10, max_header_bytes=200)
        state = http._ServerState(api, limits, loop, PARSERS["httptools"], api.head_refusal,
                                  api.lane if lane else None)
        out = []
        for data in requests:
            conn = state.make_protocol()
            t = NullTransport()
            conn.connection_made(t)
            conn.data_received(data)
            for _ in range(4):  # a later reply, then the held response leave on later turns
                await asyncio.sleep(0)
            out.append(_DATE.sub(b"Date: -\r\n", b"".join(t.out)))
        counters = {
            "http": state.stats.snapshot(),
            "statuses": dict(api.statuses),
            "ops": dict(node.stats.ops),
            "latency": {k: (sum(h.counts), h.counts[-1]) for k, h in api.op_latency.hists.items()},
        }
        return out, counters
    finally:
        node.stop()
        await transport.close()


def test_the_lane_answers_and_counts_as_the_parsers_path() -> None:
    """A plain node (its synchronous answers: the lane's bytes), then one whose door is wrapped
    and answers some keys later (the lane's Responses and futures)."""
    for node_class in (Node, AnswersRemoteKeysLater):
        for token, requests in ((None, REQUESTS), (TOKEN, [*map(_with_token, REQUESTS), *REQUESTS])):
            with_lane = asyncio.run(_serve(requests, True, token, node_class))
            without = asyncio.run(_serve(requests, False, token, node_class))
            for sent, a, b in zip(requests, with_lane[0], without[0], strict=True):
                assert a == b, (node_class, token, sent)
            assert with_lane[1] == without[1], (node_class, token)
            statuses = with_lane[1]["statuses"]
            assert statuses[200] >= 3 and statuses[204] >= 3 and statuses[404] >= 2, statuses


def test_the_lane_answers_a_plain_node_with_bytes() -> None:
    """(so that the comparison above does compare the lane's own answers with the parser's)"""
    answers: list[object] = []
    lane = Api.lane

    def recording(self: Api, *parts: Any) -> Any:
        answers.append(result := lane(self, *parts))
        return result

    Api.lane = recording  # type: ignore[method-assign]
    try:
        asyncio.run(_serve(REQUESTS, True, None, Node))
    finally:
        Api.lane = lane  # type: ignore[method-assign]
    assert sum(type(a) is bytes for a in answers) >= 6, answers


def test_the_lane_takes_the_plain_requests() -> None:
    """(so that the comparison above does compare the lane with the parser's path)"""

    async def body() -> int:
        loop = asyncio.get_running_loop()
        node, transport = started_node()
        try:
            api = Api(node, transport, loop=loop, hosts=HostCheck("127.0.0.1", None))
            taken = 0
            for data in REQUESTS[:7]:
                parts = PlainRecogniser(HttpLimits())(data)
                assert parts is not None
                taken += api.lane(*parts) is not None
            return taken
        finally:
            node.stop()
            await transport.close()

    assert asyncio.run(body()) == 7


def test_whitespace_cannot_make_the_recogniser_backtrack() -> None:
    """A review's repro: field lines of nothing but spaces, then one bad byte. The field pattern
    let two quantifiers share each run of spaces, so the regex engine tried every split of every
    line before refusing: 954 bytes stalled a node 9.5 s, 306 bytes took the recogniser 31 s, and
    each line more multiplied it. Now each byte matches one way. Forty such lines of 300 spaces
    (which the old pattern would not finish this century) are refused at once; the recogniser
    runs in a child process killed after a minute (the regex engine holds the GIL), so a
    regression fails, not hangs."""
    script = (
        "from realnet.httpplain import PlainRecogniser\n"
        "from realnet.httpparse import HttpLimits\n"
        "lines = b''.join(b'A%d:%s\\r\\n' % (i, b' ' * 300) for i in range(40))\n"
        "rec = PlainRecogniser(HttpLimits(max_header_bytes=64 * 1024, max_headers=200))\n"
        "for bad in (b'\\x01', b'\\n', b'\\t\\x7f'):\n"
        "    head = b'GET /kv/a HTTP/1.1\\r\\nHost: h\\r\\n' + lines + b'B:' + b' ' * 300 + bad + b'\\r\\n\\r\\n'\n"
        "    assert rec(head) is None\n"
        "print('refused')\n"
    )
    try:
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                           cwd=Path(__file__).resolve().parents[2])
    except subprocess.TimeoutExpired:
        pytest.fail("the recogniser did not refuse the hostile heads within a minute")
    assert r.returncode == 0 and r.stdout.strip() == "refused", r.stderr
    fine = b"GET /kv/a HTTP/1.1\r\nHost: h\r\n" + b"".join(b"A%d:%s\r\n" % (i, b" " * 30) for i in range(4)) + b"\r\n"
    assert PlainRecogniser(LIMITS)(fine) == (b"GET", b"/kv/a", "h", None, b"")  # empty values: plain
    _agrees(fine)  # as both parsers say
