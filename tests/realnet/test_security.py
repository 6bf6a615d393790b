"""The HTTP side's doors on a live node (issue 10): the admin token on every admin route, the
client token on /kv/, the Host check (DNS rebinding), bounded admin integers, strict percent
decoding, and the settings' errors. Tokens are generated per run."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kvcore.bounds import MAX_ACCEPTED
from realnet.client import Client, Unauthorized
from tests.realnet.conftest import REPO, Launcher, NodeProc, free_ports

pytestmark = pytest.mark.realnet  # starts real node processes


def token_file(tmp_path: Path, name: str) -> tuple[str, Path]:
    token = secrets.token_urlsafe(32)
    path = tmp_path / name
    path.write_text(f"\n  {token}\n")  # surrounding whitespace is ignored
    return token, path


def call(n: NodeProc, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         host: str | None = None) -> tuple[int, dict[str, str], Any]:
    raw = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", n.port, timeout=30)
    h = dict(headers or {})
    if raw is not None and not isinstance(body, bytes):
        h.setdefault("Content-Type", "application/json")
    try:
        conn.putrequest(method, path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        for k, v in h.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(raw or b"")))
        conn.endheaders(raw)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        decoded: Any = json.loads(data) if data else None
    except ValueError:
        decoded = data
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, decoded


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One standalone node with an admin token, a client token and one extra allowed host."""
    tmp = tmp_path_factory.mktemp("guarded")
    admin, admin_path = token_file(tmp, "admin.token")
    client, client_path = token_file(tmp, "client.token")
    lx = Launcher(tmp)
    try:
        n = lx.standalone(["--admin-token-file", str(admin_path), "--client-token-file", str(client_path),
                           "--allowed-host", "kv.test"])
        yield n, admin, client
    finally:
        lx.stop_all()


# Every admin route, with a body that the route refuses (400) once the token passes: so "the
# token passed" is told apart from "refused for the token", and nothing changes on the node.
ADMIN_ROUTES = [
    ("/cluster/meet", {"seeds": 7}),
    ("/cluster/assign", {"slots": "0-1", "epoch": "x"}),
    ("/cluster/claim", {"slots": "0-1", "epoch": "x"}),
    ("/cluster/import", {"slot": 1}),
    ("/cluster/migrate", {"slot": 1}),
    ("/cluster/move-keys", {"slot": 1, "count": 0}),
    ("/cluster/finish", {}),
    ("/cluster/abort", {}),
    ("/cluster/rollback", {}),
    ("/cluster/leave", {"force": "yes"}),
    ("/cluster/check-token", []),  # it reads no field: only a body that is not an object is 400
]


@pytest.mark.parametrize(("path", "body"), ADMIN_ROUTES)
def test_every_admin_route_needs_the_admin_token(guarded: Any, path: str, body: Any) -> None:
    n, admin, client = guarded
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {client}"},
                    {"Authorization": f"Basic {admin}"}, {"Authorization": f"Bearer {admin}x"}):
        status, h, obj = call(n, "POST", path, body, headers)
        assert status == 401, (path, headers, status, obj)
        assert obj["error"] == "unauthorized" and obj["message"].endswith(".")
        assert "admin token" in obj["message"] and h["www-authenticate"] == "Bearer"
    status, _, obj = call(n, "POST", path, body, {"Authorization": f"Bearer {admin}"})
    assert status == 400 and obj["error"] == "bad_request", (path, obj)
    status, _, obj = call(n, "POST", path, body, {"Authorization": f"bearer  {admin}"})
    assert status == 400, (path, obj)  # the scheme is case-insensitive (RFC 9110 §11.1)


def test_views_stay_open_and_kv_needs_the_client_token(guarded: Any) -> None:
    n, admin, client = guarded
    for path in ("/health", "/cluster/info", "/cluster/slots", "/cluster/members", "/metrics"):
        assert call(n, "GET", path)[0] == 200, path
    status, h, obj = call(n, "PUT", "/kv/k", b"v")
    assert status == 401 and "client token" in obj["message"] and h["www-authenticate"] == "Bearer"
    assert call(n, "PUT", "/kv/k", b"v", {"Authorization": f"Bearer {admin}"})[0] == 401
    assert call(n, "PUT", "/kv/k", b"v", {"Authorization": f"Bearer {client}"})[0] == 204
    assert call(n, "GET", "/kv/k", None, {"Authorization": f"Bearer {client}"})[2] == b"v"
    with Client(n.addr) as c:
        with pytest.raises(Unauthorized):
            c.get("k")
    with Client(n.addr, token=client) as c:
        assert c.get("k") == b"v"
        c.set("k2", b"w")
    metrics = call(n, "GET", "/metrics")[2].decode()
    assert 'storelab_http_refused_total{reason="unauthorized"}' in metrics


def test_the_kv_cli_sends_the_client_token_from_the_environment_or_a_file(guarded: Any, tmp_path: Path) -> None:
    n, _, client = guarded

    def storelab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "realnet.cli", *args, "--node", n.addr],
                              capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
                              env={**os.environ, **(env or {})})

    r = storelab("set", "cli-key", "v1")
    assert r.returncode == 2 and "requires the client token (401 unauthorized)" in r.stderr
    assert "Traceback" not in r.stderr
    assert storelab("set", "cli-key", "v1", env={"STORELAB_CLIENT_TOKEN": client}).returncode == 0
    path = tmp_path / "t"
    path.write_text(client + "\n")
    r = storelab("get", "cli-key", "--token-file", str(path))
    assert r.returncode == 0 and r.stdout == "v1"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:{port}", "localhost", "LOCALHOST:{port}",
                                  "[::1]", "[::1]:{port}", "kv.test", "kv.test:8080"])
def test_the_node_answers_for_its_own_names(guarded: Any, host: str) -> None:
    n, _, _ = guarded
    status, _, obj = call(n, "GET", "/health", host=host.format(port=n.port))
    assert status == 200, obj


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example",
                                  "localhost.", "10.1.2.3", "[::1", "localhost:x", ""])
def test_a_host_not_its_own_is_421_with_a_sentence(guarded: Any, host: str) -> None:
    n, admin, client = guarded
    h = host.format(port=n.port)
    for method, path, body, headers in (("GET", "/health", None, {}),
                                        ("GET", "/kv/k", None, {"Authorization": f"Bearer {client}"}),
                                        ("POST", "/cluster/leave", {}, {"Authorization": f"Bearer {admin}"})):
        status, _, obj = call(n, method, path, body, headers, host=h)
        if host == "":
            assert status in (400, 421), obj
            continue
        assert status == 421, (host, path, obj)
        assert obj["error"] == "misdirected_request" and "--allowed-host" in obj["message"]
    assert call(n, "GET", "/health")[0] == 200  # still up: the leave never happened


def test_http_1_0_without_host_still_works(guarded: Any) -> None:
    n, _, _ = guarded
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data


# 2**63 - 1 and MAX_ACCEPTED + 1 fit in an int64 but leave no room for the node's increments:
# refused by the node's own bound (kvcore.node.guards.check_epoch), the one check of the upper end
@pytest.mark.parametrize("epoch", [2**64, 2**64 - 1, 2**63, 2**63 - 1, MAX_ACCEPTED + 1, -1, 0])
def test_admin_epochs_outside_int64_are_refused(guarded: Any, epoch: int) -> None:
    n, admin, _ = guarded
    for path in ("/cluster/claim", "/cluster/assign"):
        status, _, obj = call(n, "POST", path, {"slots": "0-9", "epoch": epoch},
                              {"Authorization": f"Bearer {admin}"})
        assert status == 400 and obj["error"] == "bad_request" and obj["message"].endswith("."), obj
        assert "epoch" in obj["message"]
    assert n.info()["epoch"] < 2**63


def test_percent_decoding_is_strict(guarded: Any) -> None:
    n, _, client = guarded
    auth = {"Authorization": f"Bearer {client}"}
    for bad in ("/kv/%zz", "/kv/a%2", "/kv/%", "/kv/%G0", "/kv/ok%2x"):
        status, _, obj = call(n, "PUT", bad, b"v", auth)
        assert status == 400 and "percent-escape" in obj["message"], (bad, obj)
    assert call(n, "PUT", "/kv/%25zz", b"literal", auth)[0] == 204
    assert call(n, "GET", "/kv/%25zz", None, auth)[2] == b"literal"
    with Client(n.addr, token=client) as c:
        assert c.get("%zz") == b"literal"  # /kv/%25zz is the key "%zz"
    assert call(n, "GET", "/kv/%zz", None, auth)[0] == 400


@pytest.mark.parametrize(("content", "said"), [
    ("", "is empty"), ("   \n", "is empty"), ("two words", "printable ASCII without spaces"),
    (None, "Cannot read the admin token file"),
])
def test_an_unusable_token_file_is_a_startup_error(tmp_path: Path, content: str | None, said: str) -> None:
    path = tmp_path / "admin.token"
    if content is not None:
        path.write_text(content)
    port, peer = free_ports(2)
    r = subprocess.run([sys.executable, "-m", "realnet.node", "--port", str(port), "--peer-port", str(peer),
                        "--admin-token-file", str(path)], capture_output=True, text=True, cwd=REPO,
                       timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert said in r.stderr and "Traceback" not in r.stderr


def test_security_settings_come_from_toml_too(tmp_path: Path) -> None:
    from realnet.node import build_parser, load_settings

    admin, path = token_file(tmp_path, "a.token")
    cfg = tmp_path / "n.toml"
    cfg.write_text(f'[security]\nadmin_token_file = "{path}"\nallowed_hosts = ["x.test"]\n'
                   'max_clients = 50\nhead_timeout = 2.5\nsecret_file = "left to the bus"\n')
    s = load_settings(build_parser().parse_args(["--config", str(cfg), "--allowed-host", "y.test"]))
    assert s.admin_token == admin and s.client_token is None
    assert s.http_security.allowed_hosts == ("x.test", "y.test")
    assert s.http_security.max_clients == 50 and s.http_security.head_timeout == 2.5
    assert admin not in repr(s)  # never shown
    cfg.write_text("[security]\nadmin_tokn_file = 'x'\nmax_clients = -1\n")
    from kvcore.tables import ConfigError

    with pytest.raises(ConfigError) as e:
        load_settings(build_parser().parse_args(["--config", str(cfg)]))
    text = " ".join(e.value.problems)
    assert "admin_tokn_file" in text and "max_clients" in text


def raw(n: NodeProc, data: bytes) -> bytes:
    """Send ``data``, read until the node closes (bounded by the socket timeout)."""
    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_a_request_without_the_token_is_refused_on_its_head_before_its_body(guarded: Any) -> None:
    """A client without the token cannot park a body in the node's buffers or get a 100
    Continue: the head alone is answered 401 (kv and admin alike)."""
    n, _, client = guarded
    for path in ("/kv/big", "/cluster/leave"):
        for extra in (b"", b"Expect: 100-continue\r\n"):
            head = (b"PUT " if path.startswith("/kv/") else b"POST ") + path.encode() + (
                b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + extra
                + b"Content-Length: 1000000\r\n\r\n")
            out = raw(n, head + b"x" * 1000)  # a thousandth of the body, then we wait
            assert out.startswith(b"HTTP/1.1 401"), out[:300]
            assert b"100 Continue" not in out
    # with the token the same head gets its 100 Continue and the write goes through
    status, _, _ = call(n, "PUT", "/kv/big", b"v" * 100_000, {"Authorization": f"Bearer {client}",
                                                              "Expect": "100-continue"})
    assert status == 204


def test_an_absolute_form_target_is_judged_by_its_own_authority(guarded: Any) -> None:
    """RFC 9112 §3.2.2: the target's authority takes precedence over Host."""
    n, _, client = guarded
    auth = f"Authorization: Bearer {client}\r\n".encode()
    out = raw(n, b"GET http://evil.example/kv/k HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth
              + b"Connection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 421") and b"evil.example" in out, out[:300]
    out = raw(n, b"GET http://user@evil.example:80/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 421"), out[:300]
    out = raw(n, f"GET http://127.0.0.1:{n.port}/health HTTP/1.1\r\nHost: evil.example\r\n"
                 "Connection: close\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 200"), out[:300]


def test_secret_files_other_users_can_read_or_one_file_in_two_roles_are_warned_of(tmp_path: Path) -> None:
    from realnet.security import secret_file_warnings

    _, admin = token_file(tmp_path, "admin.token")
    _, client = token_file(tmp_path, "client.token")
    admin.chmod(0o600)
    client.chmod(0o644)
    warnings = secret_file_warnings((("admin token", str(admin)), ("client token", str(client)),
                                     ("cluster secret", None), ("cluster secret", str(tmp_path / "none"))))
    assert warnings == [f"The client token file {str(client)!r} can be read by other users (mode 0644); "
                        f"make it private: chmod 600 {client}."]
    client.chmod(0o600)
    link = tmp_path / "same"
    link.symlink_to(admin)
    warnings = secret_file_warnings((("admin token", str(admin)), ("client token", str(link))))
    assert warnings == [f"The admin token and the client token are the same file ({str(admin)!r}): whoever "
                        "holds one holds both; give each its own secret."]
    assert secret_file_warnings((("admin token", str(admin)), ("client token", str(client)))) == []


def test_a_secret_file_written_with_a_byte_order_mark_holds_the_same_key(tmp_path: Path) -> None:
    from kvwire.auth import read_keyring

    key = secrets.token_urlsafe(32)
    plain, bom = tmp_path / "plain", tmp_path / "bom"
    plain.write_text(key + "\n")
    bom.write_bytes(b"\xef\xbb\xbf" + key.encode() + b"\r\n")
    assert read_keyring(str(bom)).keys == read_keyring(str(plain)).keys == (key.encode(),)


def _trickle_put(n: NodeProc, key: str, size: int, every: float) -> bytes:
    """PUT a ``size``-byte body one byte every ``every`` seconds until the node answers; its
    answer (read until the node closes or a whole response came; b"" if the node said nothing)."""
    import select

    with socket.create_connection(("127.0.0.1", n.port), timeout=10) as s:
        s.sendall(f"PUT /kv/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                  f"Content-Length: {size}\r\n\r\n".encode())
        for _ in range(size):
            s.sendall(b"v")
            if select.select([s], [], [], every)[0]:
                break
        out = b""
        while chunk := s.recv(65536):  # bounded by the socket timeout
            out += chunk
    return out


def test_the_request_timeout_flag_bounds_a_whole_request_body_included(launcher: Launcher) -> None:
    """``--request-timeout``: a body trickled past it is answered 408 and closed (it was the
    keep-alive timeout, 75 s, with no setting of its own); one trickled within it is stored."""
    n = launcher.standalone(["--request-timeout", "1"])
    # bounded: 400 bytes at 20 ms, 8 s; the cut is due at 1 s
    answer = _trickle_put(n, "slow", 400, 0.02)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within 1 seconds" in answer
    answer = _trickle_put(n, "quick", 5, 0.02)  # 0.1 s: within it
    assert answer.startswith(b"HTTP/1.1 204"), answer
    status, _, _ = call(n, "GET", "/kv/quick")
    assert status == 200 and call(n, "GET", "/kv/slow")[0] == 404
