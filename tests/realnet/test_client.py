"""The client's retry rules against a scripted stdlib HTTP server (no node processes)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kvcore import errors
from realnet.client import Client, NodeUnreachable, error_from_response, kv_path
from tests.realnet.conftest import free_ports


class Script:
    """Answers for /kv/ requests, consumed in order; every request is recorded."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, bytes]] = []
        self.seen: list[tuple[str, str]] = []
        self.slot_requests = 0
        self.addr = ""


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
                        "slots": [{"start": 0, "end": 16383, "node": "x", "addr": script.addr}],
                        "unassigned": "",
                    }
                ).encode()
            else:
                script.seen.append((self.command, self.path))
                status, body = script.answers.pop(0)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_DELETE = _answer

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


def test_error_bodies_map_to_typed_errors() -> None:
    assert isinstance(error_from_response(404, err("not_found")), errors.NotFound)
    assert isinstance(error_from_response(413, b"not json"), errors.TooLarge)
    assert isinstance(error_from_response(502, b""), errors.Internal)
    assert isinstance(error_from_response(503, err("no_such_code")), errors.Internal)
