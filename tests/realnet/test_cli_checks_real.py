"""``storelab cluster`` against real node processes: what a node says of itself in
``/cluster/info`` (``data_dir``, ``cluster_name``) lets ``create --replicas`` and ``add-node``
refuse before anything changes; a new node whose advertised peer address the cluster cannot
reach stops ``add-node`` early with the cause; a member that left without slots may come back
under its id. Secrets per run; every wait polls with a deadline."""

from __future__ import annotations

import base64
import secrets
import time
from pathlib import Path

import pytest

from tests.realnet.conftest import STEADY_SETTINGS, STEADY_SWIM, Launcher, NodeProc, poll
from tests.realnet.test_cluster_cli import ok, storelab

pytestmark = pytest.mark.realnet  # starts real node processes


def _node(launcher: Launcher, nid: str, *extra: str) -> NodeProc:
    return launcher.node(nid, settings=STEADY_SETTINGS, swim=STEADY_SWIM, extra=list(extra))


def test_create_replicas_refuses_a_node_without_a_data_dir_and_add_node_a_differing_secret(
        launcher: Launcher, tmp_path: Path) -> None:
    a = _node(launcher, "a", "--data-dir", str(tmp_path / "a"))
    b = _node(launcher, "b", "--data-dir", str(tmp_path / "b"))
    n = _node(launcher, "n")  # no --data-dir
    assert (a.info()["data_dir"], n.info()["data_dir"], n.info()["cluster_name"]) == (True, False, "")
    r = storelab("create", a.addr, b.addr, n.addr, "--replicas", "3", "--yes")
    assert r.returncode == 1, r
    assert f"Node n ({n.addr}) has no data directory" in r.stderr and "nothing was changed" in r.stderr
    for x in (a, b, n):  # nothing changed: still standalone, in no group
        info = x.info()
        assert (info["mode"], info["raft"], info["members"]["alive"]) == ("standalone", None, 1), info
    # another cluster secret: refused before the meet, at once (it took 30 s and a generic timeout)
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    for s in (s1, s2):
        s.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    c = _node(launcher, "c", "--secret-file", str(s1))
    d = _node(launcher, "d", "--secret-file", str(s2))
    e = _node(launcher, "e", "--secret-file", str(s1))
    ok("create", c.addr, e.addr, "--yes")
    t0 = time.monotonic()
    r = storelab("add-node", d.addr, c.addr, "--yes")
    assert r.returncode == 1, r
    assert time.monotonic() - t0 < 10
    assert f"The cluster secret of node d ({d.addr}) differs from that of node c ({c.addr})" in r.stderr, r.stderr
    assert d.info()["joined"] and d.info()["members"]["alive"] == 1  # never asked to meet


def test_add_node_stops_early_when_the_cluster_cannot_reach_the_new_node_and_a_left_id_comes_back(
        launcher: Launcher, tmp_path: Path) -> None:
    a, b = _node(launcher, "a"), _node(launcher, "b")
    ok("create", a.addr, b.addr, "--yes")
    # a member that left without slots: a fresh node may take its id again
    c = _node(launcher, "c")
    ok("add-node", c.addr, a.addr, "--yes")
    ok("remove-node", a.addr, "c", "--yes")
    assert c.wait(30) == 0
    r = ok("remove-node", a.addr, "c", "--yes")  # again: nothing to do, exit 0
    assert "has left the cluster already. Nothing to do." in r.stdout
    again = _node(launcher, "c")
    ok("add-node", again.addr, a.addr, "--yes")
    poll(lambda: storelab("verify", a.addr).returncode == 0, timeout=30, what="a clean verify")
    assert a.states()["c"] == "alive"
    # f advertises a peer address nobody listens at (its process binds 127.0.0.1 only)
    f = _node(launcher, "f", "--advertise-host", "127.0.0.2")
    t0 = time.monotonic()
    r = storelab("add-node", f.addr, a.addr, "--yes")
    assert r.returncode == 2, r
    assert time.monotonic() - t0 < 20  # the wait's own deadline is 30 s
    assert f"Node f cannot join the cluster: a cannot connect to f's peer address 127.0.0.2:{f.peer_port}" in (
        r.stderr), r.stderr


def test_create_stops_early_when_a_node_advertises_a_peer_address_nobody_listens_at(launcher: Launcher) -> None:
    """``create`` watches the transport counters in its wait, as ``add-node`` does: a node whose
    advertised peer address the others cannot reach stops it with the cause, well before its own
    30 s deadline."""
    a = _node(launcher, "a")
    f = _node(launcher, "f", "--advertise-host", "127.0.0.2")  # it binds 127.0.0.1 only
    t0 = time.monotonic()
    r = storelab("create", a.addr, f.addr, "--yes")
    assert r.returncode == 2, r
    assert time.monotonic() - t0 < 20
    assert (f"The nodes cannot become one cluster: a cannot connect to f's peer address 127.0.0.2:{f.peer_port}"
            in r.stderr), r.stderr
