"""Ports mixed up: a seed that is an HTTP port is reported, and a peer port answers HTTP with
the address of the HTTP API (issue 9, "The CLI and the node, as a user meets them")."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import pytest

from realnet.client import Client, WrongPort
from realnet.transport import (
    HTTP_METHODS,
    _http_request_start,
    http_answer_warning,
    wrong_port_response,
)
from tests.realnet.conftest import FAST_SWIM, HOST, REPO, Launcher, NodeProc, poll

pytestmark = pytest.mark.realnet  # starts real node processes


# --- the sentences and the sniffing, without processes ----------------------------------------


def test_the_warning_names_the_seed_and_guesses_its_peer_port() -> None:
    assert http_answer_warning("@127.0.0.1:7001", "127.0.0.1", 7001) == (
        "Seed 127.0.0.1:7001 answered in HTTP: it is a node's HTTP port, not its peer port; its "
        "peer port is probably 17001 (HTTP port + 10000). Give peer addresses to --seeds."
    )
    # no guess where HTTP port + 10000 is not a port
    text = http_answer_warning("@127.0.0.1:60001", "127.0.0.1", 60001)
    assert "probably" not in text and text.startswith("Seed 127.0.0.1:60001 answered in HTTP")
    # a member whose advertised or configured peer address is an HTTP port
    text = http_answer_warning("b", "10.0.0.2", 7002)
    assert text.startswith("Peer b at 10.0.0.2:7002 answered in HTTP") and "17002" in text


def test_http_request_lines_are_told_from_peer_frames() -> None:
    for m in HTTP_METHODS:
        assert _http_request_start(m + b"/ HTTP/1.1\r\n") is True
    assert _http_request_start(b"\x00\x00\x00\x1a\x83") is False  # a Hello's length prefix
    assert _http_request_start(b"\xff\xff\xff\xff") is False
    assert _http_request_start(b"GE") is None  # too short to tell: wait for more
    assert _http_request_start(b"GETX") is False
    assert _http_request_start(b"DEL") is None


def test_the_wrong_port_answer_is_one_closing_http_response() -> None:
    raw = wrong_port_response("a", "127.0.0.1:7001")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {
        "error": "wrong_port",
        "message": "This is node a's peer port; its HTTP API is on 127.0.0.1:7001.",
    }
    assert wrong_port_response("a", "127.0.0.1:7001", head_only=True) == head + b"\r\n\r\n"


# --- real nodes -------------------------------------------------------------------------------


def raw_exchange(port: int, chunks: list[bytes], timeout: float = 10.0) -> bytes:
    """Send ``chunks`` (a short pause between them) and read until the server closes."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(0.05)
            s.sendall(chunk)
        out = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            out.append(data)
    return b"".join(out)


@pytest.fixture(scope="module")
def node_a(module_launcher: Launcher) -> NodeProc:
    return module_launcher.node("a", swim=FAST_SWIM)


def warnings_in(node: NodeProc, text: str) -> list[str]:
    return [ln for ln in node.log_text().splitlines() if " WARNING " in ln and text in ln]


def test_a_seed_that_is_an_http_port_is_reported_within_seconds(
    launcher: Launcher, node_a: NodeProc
) -> None:
    # --seeds given a's HTTP address; the default log level (warning) must show it
    b = launcher.node("b", seeds=[node_a.addr], swim=FAST_SWIM, extra=["--log-level", "warning"])
    said = f"Seed {node_a.addr} answered in HTTP: it is a node's HTTP port, not its peer port"
    poll(lambda: warnings_in(b, said), timeout=10.0, what="the warning about the HTTP seed")
    line = warnings_in(b, said)[0]
    if node_a.port + 10000 <= 65535:
        assert f"its peer port is probably {node_a.port + 10000}" in line
    assert line.rstrip().endswith("Give peer addresses to --seeds.")
    # the join keeps retrying; the warning is not repeated each time
    poll(lambda: b.info()["transport"]["http_answers"] >= 3, timeout=20.0,
         what="b to dial the HTTP seed again")
    assert len(warnings_in(b, "answered in HTTP")) == 1
    # and the HTTP side, which saw peer frames, was not stuck waiting for a request head
    assert b.info()["joined"] is False


def test_an_http_request_to_a_peer_port_is_told_the_http_port(node_a: NodeProc) -> None:
    before = node_a.info()["transport"]["frames_malformed"].get("http_request", 0)
    raw = raw_exchange(node_a.peer_port, [b"GET /kv/x HTTP/1.1\r\nHost: h\r\n\r\n"])
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {
        "error": "wrong_port",
        "message": f"This is node a's peer port; its HTTP API is on {node_a.addr}.",
    }
    # a request line arriving in pieces, and a PUT with a body, are answered the same way
    raw = raw_exchange(node_a.peer_port, [b"PU", b"T /kv/x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"])
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"] == "wrong_port"
    # HEAD: the same head, no body
    raw = raw_exchange(node_a.peer_port, [b"HEAD / HTTP/1.1\r\n\r\n"])
    assert raw.startswith(b"HTTP/1.1 400 ") and raw.endswith(b"\r\n\r\n")
    after = node_a.info()["transport"]["frames_malformed"].get("http_request", 0)
    assert after == before + 3
    # no frame-size warning: 'GET ' read as a frame length is 1195725856 bytes
    assert "1195725856" not in node_a.log_text()
    assert not warnings_in(node_a, "peer connection")


def test_storelab_given_a_peer_port_says_which_port_to_use(node_a: NodeProc) -> None:
    for args in (["get", "k"], ["set", "k", "v"], ["cluster", "info"]):
        if args[0] == "cluster":
            argv = [*args, node_a.peer_addr]
        else:
            argv = [*args, "--node", node_a.peer_addr]
        r = subprocess.run(
            [sys.executable, "-m", "realnet.cli", *argv],
            capture_output=True, cwd=REPO, timeout=60, check=False,
        )
        err = r.stderr.decode()
        assert r.returncode == 2, (argv, err)
        assert f"This is node a's peer port; its HTTP API is on {node_a.addr}" in err, err
        assert "Traceback" not in err and re.fullmatch(r"storelab: .*\.\n", err), err


def test_the_client_raises_wrong_port(node_a: NodeProc) -> None:
    with Client(node_a.peer_addr) as c, pytest.raises(WrongPort) as info:
        c.get("k")
    assert info.value.message == f"This is node a's peer port; its HTTP API is on {node_a.addr}."
