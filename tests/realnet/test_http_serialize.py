"""The response bytes the server writes: the cached heads give what building them anew gives.

:func:`realnet.httpresponse._serialize` keeps, for the current second, the head (status line,
Content-Type, Date) of every keep-alive response it built, and answers the next such response from
it. These tests serialize a corpus twice (the second time from the cache) and against a serializer
whose cache is emptied before every call, across a change of second, and check that what a
response may not carry (a body on 204, a bad status or type) is refused from the cache as without
it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import realnet.httpresponse as httpresponse
from realnet.httpresponse import Response

CORPUS = [
    Response(200, b"v" * 64, "application/octet-stream"),
    Response(200, b"", "application/octet-stream"),
    Response(200, b"x" * 1023, "application/octet-stream"),
    Response(200, b"x" * 1024, "application/octet-stream"),
    Response(200, b"x" * 70000, "application/octet-stream"),
    Response(204),
    Response(304),
    Response(404, b'{"error":"not_found"}', "application/json"),
    Response(200, b"ok"),
    Response(201, bytearray(b"ba"), "text/plain"),
    Response(503, b"{}", "application/json", (("Retry-After", "1"),)),
    Response(599, b"odd", "text/plain"),
]
FLAGS = [(True, False, False), (False, False, False), (True, True, False), (True, False, True)]


def _fresh(resp: Response, flags: tuple[bool, bool, bool]) -> bytes:
    httpresponse._HEADS.clear()
    return httpresponse._serialize(resp, *flags)


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "keep{:d}-http10{:d}-head{:d}".format(*f))
@pytest.mark.parametrize("resp", CORPUS, ids=lambda r: f"{r.status}-{len(r.body)}-{r.content_type}")
def test_a_cached_head_gives_the_bytes_a_fresh_one_gives(resp: Response, flags: tuple[bool, bool, bool]) -> None:
    fresh = _fresh(resp, flags)
    first = httpresponse._serialize(resp, *flags)  # fills the cache
    keep_alive, http10, _head = flags
    cacheable = keep_alive and not http10 and not resp.headers
    # the second call is answered from a cached head exactly when the response may be
    assert ((resp.status, resp.content_type) in httpresponse._HEADS) == cacheable
    again = httpresponse._serialize(resp, *flags)  # from the cache
    assert first == again == fresh
    assert fresh.startswith(b"HTTP/1.1 %d " % resp.status)


@pytest.fixture(autouse=True)
def _no_stale_heads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # the tests below move the clock: put the Date line back and empty the cache afterwards,
    # so that no other test is answered with a head of another second
    monkeypatch.setattr(httpresponse, "_date_line", httpresponse._date_line)
    monkeypatch.setattr(httpresponse, "_date_valid_until", httpresponse._date_valid_until)
    yield
    httpresponse._HEADS.clear()


def test_the_cache_follows_the_date(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.2]
    monkeypatch.setattr(httpresponse, "_time", lambda: now[0])
    monkeypatch.setattr(httpresponse, "_date_valid_until", 0.0)
    resp = Response(200, b"v", "application/octet-stream")
    one = httpresponse._serialize(resp, True, False, False)
    assert httpresponse._serialize(resp, True, False, False) == one
    assert b"Date: Tue, 14 Nov 2023 22:13:20 GMT\r\n" in one
    now[0] += 1.0  # the next second: a new Date, never the cached one
    two = httpresponse._serialize(resp, True, False, False)
    assert b"Date: Tue, 14 Nov 2023 22:13:21 GMT\r\n" in two
    assert httpresponse._serialize(resp, True, False, False) == two


@pytest.mark.parametrize(
    "resp",
    [Response(204, b"body"), Response(304, b"body"), Response(200, "text", "text/plain")],  # type: ignore[arg-type]
)
def test_what_cannot_be_sent_is_refused_from_the_cache_too(resp: Response) -> None:
    ok = Response(resp.status, b"", resp.content_type)
    httpresponse._serialize(ok, True, False, False)  # the head of this status is cached now
    with pytest.raises((ValueError, TypeError)):
        httpresponse._serialize(resp, True, False, False)
