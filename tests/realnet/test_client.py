"""The client's retry rules against a scripted stdlib HTTP server (no node processes)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kvcore import errors
from realnet.client import RETRY_AFTER_SENT, Client, NodeUnreachable, error_from_response, kv_path
from tests.realnet.conftest import free_ports


class Script:
    """Answers for /kv/ requests, consumed in order (status None: the connection is closed without
    an answer, after the request was read); every request is recorded."""

    def __init__(self) -> None:
        self.answers: list[tuple[int | None, bytes]] = []
        self.seen: list[tuple[str, str]] = []
        self.slot_requests = 0
        self.addr = ""
        #: the owner address the slot map names for every slot (default: this server)
        self.owner = ""


@pytest.fixture
def server() -> Iterator[Script]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            if self.path == "/cluster/slots":
                script.slot_requests += 1
                status, body = 200, json.dumps(
                    {
                        "epoch": 1,
                        "slots": [{"start": 0, "end": 16383, "node": "x", "addr": script.owner or script.addr}],
                        "unassigned": "",
                    }
                ).encode()
            else:
                script.seen.append((self.command, self.path))
                answer, body = script.answers.pop(0)
                if answer is None:  # read, never answered: the request may have been applied
                    self.close_connection = True
                    return
                status = answer
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_DELETE = do_POST = _answer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    script.addr = f"127.0.0.1:{httpd.server_address[1]}"
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield script
    finally:
        httpd.shutdown()
        httpd.server_close()
        t.join(timeout=10)


def err(code: str) -> bytes:
    return json.dumps({"error": code, "message": f"{code} happened"}).encode()


def test_wrong_node_refreshes_the_map_and_retries_once(server: Script) -> None:
    server.answers = [(503, err("wrong_node")), (204, b"")]
    with Client(server.addr) as c:
        c.set("k", "v")
        assert server.seen == [("PUT", kv_path("k")), ("PUT", kv_path("k"))]
        assert server.slot_requests == 2


def test_a_second_wrong_node_is_raised(server: Script) -> None:
    server.answers = [(503, err("wrong_node")), (503, err("wrong_node"))]
    with Client(server.addr) as c, pytest.raises(errors.WrongNode):
        c.get("k")
    assert len(server.seen) == 2


def test_a_forward_timeout_is_never_retried(server: Script) -> None:
    server.answers = [(504, err("forward_timeout"))]
    with Client(server.addr) as c, pytest.raises(errors.ForwardTimeout) as info:
        c.set(b"k", b"v")
    assert not info.value.definite
    assert len(server.seen) == 1


def test_owner_down_is_raised_without_a_retry(server: Script) -> None:
    server.answers = [(503, err("owner_down"))]
    with Client(server.addr) as c, pytest.raises(errors.OwnerDown):
        c.delete("k")
    assert len(server.seen) == 1


def test_no_reachable_seed_is_node_unreachable() -> None:
    (port,) = free_ports(1)  # nothing listens there
    with Client(f"127.0.0.1:{port}", timeout=2) as c, pytest.raises(NodeUnreachable) as info:
        c.get("k")
    assert not info.value.definite


def dead_addr() -> str:
    """An address nothing listens on: a connect is refused."""
    return f"127.0.0.1:{free_ports(1)[0]}"


def test_an_owner_that_refuses_the_connection_is_bypassed_through_the_seed(server: Script) -> None:
    """The map names an owner that refuses connections (a dead or removed voter of a replicated
    group, whose slots any live node serves): nothing was sent to it, so the request goes to the
    seed, which serves it (or forwards); the map is fetched again once, not at every request."""
    server.owner = dead_addr()
    server.answers = [(200, b"v1"), (204, b""), (204, b""), (200, b"v2")]
    with Client(server.addr, timeout=2) as c:
        c.down_for = 600.0  # however slow the machine, the refused owner stays "down" in this test
        assert c.get("k") == b"v1"
        assert server.slot_requests == 2  # the first map, then once more after the refused connect
        c.set("k", "v2")
        assert c.delete("k") is True
        assert c.get("k") == b"v2"
        assert c.fallbacks == 4
    assert server.seen == [("GET", kv_path("k")), ("PUT", kv_path("k")), ("DELETE", kv_path("k")),
                           ("GET", kv_path("k"))]
    assert server.slot_requests == 2  # the refused owner is tried after the seed for a while


def test_the_node_that_answers_for_a_refused_owner_keeps_its_own_semantics(server: Script) -> None:
    """An unreplicated cluster: the other node answers as it would for a dead owner."""
    server.owner = dead_addr()
    server.answers = [(503, err("owner_down"))]
    with Client(server.addr, timeout=2) as c, pytest.raises(errors.OwnerDown):
        c.get("k")
    assert len(server.seen) == 1


def test_no_node_accepting_a_connection_is_node_unreachable(server: Script) -> None:
    dead = dead_addr()
    server.owner = dead
    with Client(server.addr, timeout=2) as c:
        c.refresh()
        c.seeds = [dead]  # the seed is gone too: only the map's (dead) owner is known
        with pytest.raises(NodeUnreachable) as info:
            c.get("k")
    assert f"cannot reach node {dead}" in str(info.value)
    assert server.seen == []


def test_a_request_that_may_have_been_sent_is_retried_once_and_only_if_idempotent(server: Script) -> None:
    """A connection closed after the request went out: the request may have been applied. An
    idempotent one is sent once more, then the error is raised; any other is never sent twice."""
    assert {"GET", "PUT", "DELETE"} == RETRY_AFTER_SENT
    server.answers = [(None, b""), (None, b"")]
    with Client(server.addr, timeout=2) as c, pytest.raises(NodeUnreachable):
        c.set("k", "v")
    assert server.seen == [("PUT", kv_path("k"))] * 2
    server.seen.clear()
    server.answers = [(None, b""), (200, b"")]
    with Client(server.addr, timeout=2) as c, pytest.raises(NodeUnreachable):
        c._call("POST", "k", b"1")  # not idempotent: never sent again, to this node or another
    assert server.seen == [("POST", kv_path("k"))]


def test_error_bodies_map_to_typed_errors() -> None:
    assert isinstance(error_from_response(404, err("not_found")), errors.NotFound)
    assert isinstance(error_from_response(413, b"not json"), errors.TooLarge)
    assert isinstance(error_from_response(502, b""), errors.Internal)
    assert isinstance(error_from_response(503, err("no_such_code")), errors.Internal)


def test_a_hung_seed_is_tried_after_the_others_once_it_timed_out(server: Script) -> None:
    """An audit's regression: a seed that accepts connections but never answers came first in
    every map refresh and fallback, so each call to a dead owner's key cost several timeouts and
    ended NodeUnreachable, hiding the owner_down a live node would have said. A node that timed
    out is now tried after the others for down_for, as one that refused is."""
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # accepts (the kernel does), never answers
    hung_addr = f"127.0.0.1:{hung.getsockname()[1]}"
    try:
        server.owner = dead_addr()
        server.answers = [(503, err("owner_down"))] * 3
        with Client(server.addr, timeout=0.5) as c:
            c.down_for = 600.0
            c.refresh()
            c.seeds.insert(0, hung_addr)
            used: list[str] = []
            conn = c._conn

            def recording(addr: str) -> Any:
                used.append(addr)
                return conn(addr)

            c._conn = recording  # type: ignore[method-assign]
            with pytest.raises(errors.OwnerDown):
                c.get("k")  # the hung seed costs one timeout, in the refresh
            assert used.count(hung_addr) == 1 and c._is_down(hung_addr), used
            del used[:]
            for _ in range(2):
                with pytest.raises(errors.OwnerDown):
                    c.get("k")
            assert hung_addr not in used and set(used) == {server.addr}, used
    finally:
        hung.close()
