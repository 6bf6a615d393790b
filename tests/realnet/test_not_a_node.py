"""The CLI pointed at something that speaks HTTP but is not a storelab node (the audit of the
resolved issues: "no command ever prints a traceback" broke there). ``storelab cluster`` ended in
an AssertionError, a KeyError or a TypeError deep in its checks, and ``storelab get`` printed the
other server's page as the value, exit 0. Each now says the address does not look like a node's
and exits 2."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from realnet.cli import main


class _Other(http.server.BaseHTTPRequestHandler):
    """Another service: a page for every request, or (``json_body``) JSON of another shape."""

    json_body: bytes | None = None
    status = 200

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = self.json_body if self.json_body is not None else b"<html><body>hello</body></html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json" if self.json_body is not None else "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


def _serve(json_body: bytes | None, status: int = 200) -> Iterator[str]:
    handler = type("Handler", (_Other,), {"json_body": json_body, "status": status})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=10)


@pytest.fixture
def page() -> Iterator[str]:
    yield from _serve(None)


@pytest.fixture
def missing_page() -> Iterator[str]:
    """A web server's 404 page for every path (``python -m http.server``'s answer to /kv/k)."""
    yield from _serve(None, 404)


@pytest.fixture
def odd_json() -> Iterator[str]:
    yield from _serve(b'{"slots": 5}')


@pytest.mark.parametrize("argv", [
    ["cluster", "info", "{a}"], ["cluster", "verify", "{a}"], ["cluster", "members", "{a}"],
    ["cluster", "create", "{a}", "--yes"], ["cluster", "fix", "{a}", "--yes"],
    ["cluster", "rebalance", "{a}", "--yes"], ["cluster", "remove-node", "{a}", "x", "--yes"],
])
@pytest.mark.parametrize("server", ["page", "missing_page", "odd_json"])
def test_storelab_cluster_says_an_address_is_not_a_nodes(
        argv: list[str], server: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    addr = request.getfixturevalue(server)
    status = main([a.format(a=addr) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert status == 2, (out, err)
    assert addr in err and ("not JSON" in err or "not a storelab node's" in err), err


@pytest.mark.parametrize("argv", [["get", "k"], ["set", "k", "v"], ["del", "k"]])
@pytest.mark.parametrize("server", ["page", "missing_page"])
def test_storelab_get_set_del_say_an_address_is_not_a_nodes(
        argv: list[str], server: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    page = request.getfixturevalue(server)
    status = main([*argv, "--node", page])
    out, err = capsys.readouterr()
    assert status == 2 and out == "", (out, err)
    assert f"Node {page} answered" in err and "it does not look like a storelab node's HTTP address" in err, err


def test_the_value_type_the_cli_expects_is_the_nodes() -> None:
    from realnet import api, cli

    assert cli.OCTETS == api.OCTETS
