"""Real processes with a cluster secret: a 3-node cluster works, a wrong or missing secret is
kept out, the issue's forged Alive changes nothing, and keys rotate under load with SIGHUP.

Secrets are generated per run into ``tmp_path``; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import kvwire
from kvcore.messages import Alive, Gossip, Hello
from kvwire.auth import key_id
from realnet.client import kv_path
from tests.realnet.conftest import (
    FAST_SETTINGS,
    HOST,
    REPO,
    STEADY_SWIM,
    Launcher,
    NodeProc,
    eventually_ok,
    poll,
)

pytestmark = pytest.mark.realnet  # starts real node processes

CONVERGE = 30.0
SWIM = {**STEADY_SWIM, "suspicion_mult": 10}


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def write_secret(path: Path, *keys: str) -> Path:
    path.write_text("".join(f"{k}\n" for k in keys))
    return path


def start_secret_cluster(
    launcher: Launcher, files: dict[str, Path], ids: tuple[str, ...] = ("n1", "n2", "n3")
) -> list[NodeProc]:
    """``ids[0]`` standalone (owns every slot), the others join through it; all with secrets."""
    first = launcher.node(ids[0], settings=FAST_SETTINGS, swim=SWIM,
                          extra=["--secret-file", str(files[ids[0]])])
    rest = [
        launcher.node(nid, seeds=[first.peer_addr], settings=FAST_SETTINGS, swim=SWIM,
                      extra=["--secret-file", str(files[nid])])
        for nid in ids[1:]
    ]
    nodes = [first, *rest]
    want = dict.fromkeys(ids, "alive")
    poll(lambda: all(n.states() == want for n in nodes), timeout=CONVERGE, what="3 members")
    return nodes


def malformed(node: NodeProc) -> dict[str, int]:
    return node.info()["transport"]["frames_malformed"]  # type: ignore[no-any-return]


def test_a_cluster_with_a_secret_gossips_and_forwards_and_keeps_other_secrets_out(
    launcher: Launcher, tmp_path: Path
) -> None:
    secret = write_secret(tmp_path / "cluster.key", new_key())
    nodes = start_secret_cluster(launcher, {n: secret for n in ("n1", "n2", "n3")})
    n1, n2, n3 = nodes
    assert "the cluster bus is authenticated" in n1.log_text()
    info = n2.info()["transport"]["bus"]
    assert info == {"authenticated": True, "key_ids": [key_id(secret.read_text().strip().encode()).hex()]}
    # forwarding: n1 owns every slot, n2 and n3 forward to it over the authenticated bus
    for i in range(20):
        assert eventually_ok(n2, "PUT", f"sec-{i}".encode(), b"v%d" % i) == b""
    for i in range(20):
        assert eventually_ok(n3, "GET", f"sec-{i}".encode()) == b"v%d" % i

    wrong = write_secret(tmp_path / "wrong.key", new_key())
    evil = launcher.node("evil", seeds=[n1.peer_addr], settings=FAST_SETTINGS, swim=SWIM,
                         extra=["--secret-file", str(wrong)])
    opened = launcher.node("open", seeds=[n2.peer_addr], settings=FAST_SETTINGS, swim=SWIM)
    poll(lambda: malformed(n1).get("unknown_key", 0) >= 1, timeout=CONVERGE,
         what="n1 to refuse the wrong key")
    poll(lambda: malformed(n2).get("no_secret", 0) >= 1, timeout=CONVERGE,
         what="n2 to refuse the open node")
    poll(lambda: "cluster secret differs" in evil.log_text(), timeout=CONVERGE,
         what="the node with the wrong secret to say why it is refused")
    poll(lambda: "requires a cluster secret" in opened.log_text(), timeout=CONVERGE,
         what="the open node to say why it is refused")
    assert "cluster secret differs" in n1.log_text()
    assert "has no cluster secret" in n2.log_text()
    for n in nodes:
        assert set(n.members()) == {"n1", "n2", "n3"}, n.members()
    # the outsiders learned nothing: they are alone in their views, owning nothing of ours
    assert set(evil.members()) == {"evil"} and set(opened.members()) == {"open"}
    assert eventually_ok(n3, "GET", b"sec-0") == b"v0"


def test_the_issues_forged_alive_changes_nothing_on_a_node_with_a_secret(
    launcher: Launcher, tmp_path: Path
) -> None:
    secret = write_secret(tmp_path / "cluster.key", new_key())
    nodes = start_secret_cluster(launcher, {n: secret for n in ("n1", "n2", "n3")})
    before = nodes[0].get_json("/cluster/slots")
    evil = Alive(node="evil", incarnation=1, addr="127.0.0.1:1", peer_addr="127.0.0.1:2",
                 slots="0-16383", epoch=1000)
    for n in nodes:
        with socket.create_connection((HOST, n.peer_port), timeout=10) as s:
            s.sendall(kvwire.frame(Hello(node_id="evil")) + kvwire.frame(Gossip(updates=(evil,))))
            s.settimeout(10)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            assert b"requires a cluster secret" in answer
    poll(lambda: all(malformed(n).get("no_secret", 0) >= 1 for n in nodes), timeout=CONVERGE,
         what="every node to count the refusal")
    for n in nodes:
        assert n.get_json("/cluster/slots") == before
        assert "evil" not in n.members()
    assert eventually_ok(nodes[1], "PUT", b"still-ours", b"1") == b""


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "Cannot read the secret file"),
        ("", "holds no key"),
        ("  \n  \n", "holds no key"),
        ("tooshort", "at least 16"),
    ],
)
def test_an_unusable_secret_file_stops_the_start_with_a_sentence(
    tmp_path: Path, content: str | None, words: str
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "realnet.node", "--port", "0", "--secret-file", str(path)],
        cwd=REPO, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr.decode(), proc.stderr


def test_the_security_table_names_the_secret_file(launcher: Launcher, tmp_path: Path) -> None:
    secret = write_secret(tmp_path / "cluster.key", new_key())
    config = tmp_path / "sec.toml"
    config.write_text(f'[security]\nsecret_file = "{secret}"\n')
    n = launcher.standalone(extra=["--config", str(config), "--log-level", "info"])
    assert n.info()["transport"]["bus"]["authenticated"] is True
    bad = tmp_path / "bad.toml"
    bad.write_text('[security]\nsecret_fiel = "x"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "realnet.node", "--port", "0", "--config", str(bad)],
        cwd=REPO, capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and "secret_fiel" in proc.stderr.decode(), proc.stderr


class Load:
    """Clients writing then reading keys through every node until stopped; every answer kept."""

    def __init__(self, nodes: list[NodeProc]) -> None:
        self.nodes = nodes
        self.stop = threading.Event()
        self.failures: list[Any] = []
        self.done = 0
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(len(nodes))]

    def _run(self, i: int) -> None:
        from realnet.client import NodeConnection

        conn = NodeConnection(self.nodes[i].addr, timeout=20.0)
        j = 0
        try:
            while not self.stop.is_set():
                key = f"rot-{i}-{j}".encode()
                status, _, body = conn.request("PUT", kv_path(key), key)
                if status != 204:
                    self.failures.append(("PUT", key, status, body))
                status, _, body = conn.request("GET", kv_path(key))
                if status != 200 or body != key:
                    self.failures.append(("GET", key, status, body))
                j += 1
                self.done += 1
        except Exception as e:  # a dropped connection is a lost request too
            self.failures.append(("exception", repr(e)))
        finally:
            conn.close()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_a_key_rotation_under_load_with_sighup_loses_no_request(
    launcher: Launcher, tmp_path: Path
) -> None:
    old, new = new_key(), new_key()
    ids = ("n1", "n2", "n3")
    files = {n: write_secret(tmp_path / f"{n}.key", old) for n in ids}
    nodes = start_secret_cluster(launcher, files, ids)
    # every node forwards to n1 (it owns every slot) and serves what it owns
    steps = [(old, new), (new, old), (new,)]
    reloads = 0
    with Load(nodes) as load:
        poll(lambda: load.done >= 30, timeout=CONVERGE, what="the load to run")
        for keys in steps:
            reloads += 1
            for n in nodes:
                write_secret(files[n.id], *keys)  # type: ignore[index]
                n.signal(signal.SIGHUP)
                poll(lambda n=n, r=reloads: n.info()["transport"]["keyring_reloads"] == r,
                     timeout=CONVERGE, what=f"{n.id} to reload")
                mark = load.done
                poll(lambda mark=mark: load.done >= mark + 10, timeout=CONVERGE,
                     what="requests to go on between reloads")
        mark = load.done
        poll(lambda: load.done >= mark + 30, timeout=CONVERGE, what="requests after the rotation")
    assert load.failures == [], load.failures[:5]
    new_id = key_id(new.encode()).hex()
    for n in nodes:
        t = n.info()["transport"]
        assert t["bus"]["key_ids"] == [new_id]
        assert t["keyring_reload_failures"] == 0
        assert "reloaded the cluster secret" in n.log_text()
    # the links were dialled again with the new key and still carry forwards
    assert eventually_ok(nodes[2], "PUT", b"after", b"1") == b""
    assert json.loads(nodes[0].request("GET", "/cluster/info")[2])["transport"]["bus"]["authenticated"]


def test_a_bad_secret_file_on_sighup_keeps_the_old_keys(launcher: Launcher, tmp_path: Path) -> None:
    key = new_key()
    secret = write_secret(tmp_path / "k", key)
    n = launcher.node("solo", settings=FAST_SETTINGS, swim=SWIM,
                      extra=["--secret-file", str(secret)])
    secret.write_text("")
    n.signal(signal.SIGHUP)
    poll(lambda: n.info()["transport"]["keyring_reload_failures"] == 1, timeout=CONVERGE,
         what="the failed reload to be counted")
    assert n.info()["transport"]["bus"]["key_ids"] == [key_id(key.encode()).hex()]
    assert "cannot reload the cluster secret" in n.log_text()
    assert n.proc is not None and n.proc.poll() is None
    assert eventually_ok(n, "PUT", b"x", b"1") == b""


def test_a_node_answers_a_forward_from_a_member_it_has_not_heard_of_yet(
    launcher: Launcher, tmp_path: Path
) -> None:
    """The owner answers a Forward from a node it has no address for (one that joined a moment
    ago, before gossip reached the owner) on the connection the Forward came in on, sealed for
    the id the handshake proved: the reply used to be dropped and the client got 504
    forward_timeout. The forwarding node here is an in-process transport holding the secret,
    which no membership of the owner ever names."""
    import asyncio

    from kvcore.messages import Forward, ForwardReply, Get, Put, Reply
    from kvwire.auth import read_keyring
    from tests.realnet.test_transport import Peer, until

    secret = write_secret(tmp_path / "cluster.key", new_key())
    owner = launcher.node("owner", settings=FAST_SETTINGS, swim=SWIM, extra=["--secret-file", str(secret)])

    async def body() -> None:
        a = Peer("newcomer", {"owner": (HOST, owner.peer_port)})
        a.t.keyring = read_keyring(str(secret))
        try:
            a.t.send("owner", Forward(request_id=1, op=Put(key=b"k", value=b"v")))
            a.t.send("owner", Forward(request_id=2, op=Get(key=b"k")))
            await until(lambda: len(a.received) == 2, "the owner's replies")
            assert sorted(a.received, key=lambda r: r[1].request_id) == [
                ("owner", ForwardReply(request_id=1, reply=Reply())),
                ("owner", ForwardReply(request_id=2, reply=Reply(value=b"v"))),
            ]
        finally:
            await a.t.close()

    asyncio.run(body())
    assert "newcomer" not in owner.members()
    info = owner.info()
    transport = info.get("transport", {})
    assert transport.get("sent_back") == 2 and "unknown_peer" not in transport.get("dropped", {}), info
