"""Nodes on libuv's event loop (``--event-loop uvloop``): the HTTP door, the authenticated bus and
a clean stop behave as on asyncio's, in a cluster that mixes the two loops; a node told to use
uvloop where it is not installed says what to install and exits 2 before binding."""

from __future__ import annotations

import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from realnet import node as realnet_node
from realnet.client import kv_path
from tests.realnet.conftest import FAST_SETTINGS, STEADY_SWIM, Launcher, eventually_ok, poll
from tests.realnet.test_bus_secret import CONVERGE, new_key, write_secret

pytest.importorskip("uvloop")
pytestmark = pytest.mark.realnet  # starts real node processes

UV = ["--event-loop", "uvloop"]


def test_a_uvloop_node_speaks_http_as_an_asyncio_one(launcher: Launcher) -> None:
    node = launcher.standalone(UV)
    assert node.info()["event_loop"] == "uvloop"
    assert node.request("PUT", kv_path(b"a"), b"1")[0] == 204
    assert node.request("GET", kv_path(b"a"))[2] == b"1"
    assert node.request("DELETE", kv_path(b"a"))[0] == 204
    assert node.request("GET", kv_path(b"a"))[0] == 404
    host, port = node.addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        # pipelined, one of them chunked, then a malformed one: answered in order, then closed
        s.sendall(
            f"PUT {kv_path(b'p')} HTTP/1.1\r\nHost: {node.addr}\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\nabc\r\n0\r\n\r\n".encode()
            + f"GET {kv_path(b'p')} HTTP/1.1\r\nHost: {node.addr}\r\n\r\n".encode()
            + b"BROKEN\r\n\r\n")
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got) == [b"204", b"200", b"400"], got
    assert b"\r\n\r\nabc" in got
    _, _, metrics = node.request("GET", "/metrics")
    assert b"\nstorelab_http_rejected_total 1.0\n" in metrics  # the server's own counters
    assert node.info()["http"]["bad_requests"] == 1
    node.signal(signal.SIGTERM)
    assert node.wait(10) == 0


def test_uvloop_and_asyncio_nodes_share_an_authenticated_bus(launcher: Launcher, tmp_path: Path) -> None:
    secret = write_secret(tmp_path / "cluster.key", new_key())
    first = launcher.node("u1", settings=FAST_SETTINGS, swim=STEADY_SWIM,
                          extra=[*UV, "--secret-file", str(secret)])
    second = launcher.node("a2", seeds=[first.peer_addr], settings=FAST_SETTINGS, swim=STEADY_SWIM,
                           extra=["--secret-file", str(secret)])
    third = launcher.node("u3", seeds=[second.peer_addr], settings=FAST_SETTINGS, swim=STEADY_SWIM,
                          extra=[*UV, "--secret-file", str(secret)])
    nodes = [first, second, third]
    assert [n.info()["event_loop"] for n in nodes] == ["uvloop", "asyncio", "uvloop"]
    want = {"u1": "alive", "a2": "alive", "u3": "alive"}
    poll(lambda: all(n.states() == want for n in nodes), timeout=CONVERGE, what="3 members")
    # u1 owns every slot: u3 and a2 forward to it over the authenticated bus
    for i in range(10):
        assert eventually_ok(third, "PUT", f"uv-{i}".encode(), b"v%d" % i) == b""
    for i in range(10):
        assert eventually_ok(second, "GET", f"uv-{i}".encode()) == b"v%d" % i
    assert third.info()["transport"]["bus"]["authenticated"] is True


def test_uvloop_asked_for_but_missing_is_a_sentence_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert realnet_node.main(["--port", "1", "--peer-port", "2", *UV]) == 2
    err = capsys.readouterr().err
    assert "--event-loop uvloop needs uvloop: pip install 'storelab[fast]'" in err
    assert "Traceback" not in err
