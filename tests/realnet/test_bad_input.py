"""Bad input on both ports: each gets its error, and the node then serves the next request."""

from __future__ import annotations

import json
import random
import socket
import struct
import time

import pytest

import kvwire
from kvcore.messages import Hello, SwimPing
from realnet.client import kv_path
from tests.realnet.conftest import Cluster, NodeProc, poll

pytestmark = pytest.mark.realnet  # starts real node processes


def raw_http(node: NodeProc, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to the HTTP port and read until the server closes (or times out)."""
    with socket.create_connection((node.addr.split(":")[0], node.port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may refuse before reading everything
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def json_body(raw: bytes) -> dict[str, str]:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


def assert_still_serving(node: NodeProc) -> None:
    node.close_conn()
    assert node.request("GET", "/health")[0] == 200
    assert node.request("PUT", kv_path(b"after-bad-input"), b"ok")[0] == 204
    assert node.request("GET", kv_path(b"after-bad-input"))[2] == b"ok"


def test_a_malformed_request_line_is_400(cluster3: Cluster) -> None:
    a = cluster3["a"]
    raw = raw_http(a, b"THIS IS NOT HTTP\r\n\r\n")
    assert status_of(raw) == 400
    assert json_body(raw)["error"] == "bad_request"
    assert_still_serving(a)


def test_a_10mb_body_is_413_without_being_read(cluster3: Cluster) -> None:
    a = cluster3["a"]
    head = (
        f"PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: {10 * 1024 * 1024}\r\n\r\n"
    ).encode()
    raw = raw_http(a, head + b"x" * 65536)
    assert status_of(raw) == 413
    assert json_body(raw)["error"] == "too_large"
    assert a.request("GET", kv_path(b"big"))[0] == 404
    assert_still_serving(a)


def test_a_key_over_the_limit_is_413(cluster3: Cluster) -> None:
    a = cluster3["a"]
    status, _, body = a.request("PUT", kv_path(b"k" * 1025), b"v")
    assert status == 413
    assert json.loads(body)["error"] == "too_large"
    assert a.request("PUT", kv_path(b"k" * 1024), b"v")[0] == 204
    assert_still_serving(a)


def malformed_total(node: NodeProc) -> int:
    return sum(node.info()["transport"]["frames_malformed"].values())


def malformed_by_reason(node: NodeProc) -> dict[str, int]:
    return node.info()["transport"]["frames_malformed"]  # type: ignore[no-any-return]


def peer_send_expect_close(node: NodeProc, data: bytes, timeout: float = 10.0) -> None:
    """Send bytes to the peer port; assert the node closes the connection."""
    with socket.create_connection(("127.0.0.1", node.peer_port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return  # closed already
        try:
            assert s.recv(1024) == b"", "the node wrote to a peer connection"
        except ConnectionResetError:
            pass  # abort() sends RST: closed too


@pytest.mark.parametrize(
    "name, payload, reason",
    [
        (
            "random bytes",
            # a length prefix over max_frame_bytes (4 MiB), then noise
            b"\x7f" + random.Random(7).randbytes(255),
            "oversized",
        ),
        ("huge length prefix", b"\xff\xff\xff\xff", "oversized"),
        (
            "first frame not Hello",
            lambda: kvwire.frame(SwimPing(seq=1, target="a", gossip=())),
            "not_hello",
        ),
        # an unknown id is welcome (gossip brings new members); our own id and no id are not
        ("Hello with this node's own id", lambda: kvwire.frame(Hello(node_id="a")), "self_hello"),
        ("Hello with an empty id", lambda: kvwire.frame(Hello(node_id="")), "bad_hello"),
        (
            "garbage msgpack after Hello",
            lambda: kvwire.frame(Hello(node_id="b")) + struct.pack(">I", 3) + b"\xc1\xc1\xc1",
            None,
        ),
        (
            "a valid msgpack value that is no message",
            lambda: kvwire.frame(Hello(node_id="b")) + struct.pack(">I", 1) + b"\x07",
            None,
        ),
    ],
)
def test_bad_peer_input_closes_the_connection_and_is_counted(
    cluster3: Cluster, name: str, payload: object, reason: str | None
) -> None:
    a = cluster3["a"]
    data = payload() if callable(payload) else payload
    assert isinstance(data, bytes)
    before = malformed_by_reason(a)
    peer_send_expect_close(a, data)

    def counted() -> bool:
        after = malformed_by_reason(a)
        if reason is not None:
            return after.get(reason, 0) > before.get(reason, 0)
        return sum(after.values()) > sum(before.values())

    poll(counted, what=f"a malformed-frame counter after {name}")
    assert_still_serving(a)
    # the real peers are still connected and routing still works
    assert cluster3["b"].request("PUT", kv_path(b"via-b-after-" + name.encode()), b"1")[0] == 204


def test_the_counter_is_exported_in_metrics(cluster3: Cluster) -> None:
    a = cluster3["a"]
    peer_send_expect_close(a, b"\xff\xff\xff\xff")
    poll(lambda: malformed_by_reason(a).get("oversized", 0) > 0, what="oversized counted")
    body = a.request("GET", "/metrics")[2].decode()
    assert 'storelab_frames_malformed_total{reason="oversized"}' in body
