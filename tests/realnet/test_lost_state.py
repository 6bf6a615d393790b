"""A replicated member whose data directory is wiped, in real processes (an audit's repro).

``kill -9`` of c, ``rm -rf`` of its data directory, the same command again: c came back a
standalone node, and once its peers reached it, it served its own empty store (a read of an
acknowledged key answered 404, a write was acknowledged outside the group). After
``remove-node c`` its gossip record (the fresh node's standalone claim at epoch 1) no longer
matched the map the others had built (c at epoch 4), so ``add-node d`` waited forever for d to
learn the map. Now c serves no key once the group's traffic reaches it (503 ``lost_state``),
``verify`` names it, ``remove-node`` takes it out, and a node added afterwards learns the map
every other node holds. (kvcore's rules: ``tests/kvcore/test_lost_state.py``.)
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

import kvwire
from kvcore.messages import Hello
from kvcore.raft.messages import RaftHeartbeat
from realnet.client import Client, kv_path

from .conftest import HOST, STEADY_SETTINGS, Launcher, poll
from .test_cluster_cli import post
from .test_cluster_finish import two_with_a_key
from .test_replicated import leader, start_group


def test_a_wiped_voter_serves_no_key_verify_names_it_and_remove_node_then_add_node_converge(
        launcher: Launcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from realnet.cli import main

    nodes = start_group(launcher, tmp_path)
    a, b, c = nodes
    poll(lambda: leader(nodes), timeout=30, what="a leader")
    with Client(a.addr) as client:
        for k in ("k1", "k2", "k3"):
            client.set(k, f"v-{k}")
    c.kill()
    shutil.rmtree(tmp_path / "data-c")
    (tmp_path / "data-c").mkdir()
    c.restart()

    def refused() -> str | None:
        status, _, body = c.request("GET", kv_path("k1"))
        if status == 503 and json.loads(body)["error"] == "lost_state":
            return body.decode()
        assert status != 200 or body == b"v-k1", "c served its own empty store after the group reached it"
        return None

    said = poll(refused, timeout=30, what="c to learn that it lost its state")
    assert "remove-node" in said and "fresh --data-dir" in said
    status, _, body = c.request("PUT", kv_path("k1"), b"outside")
    assert status == 503 and json.loads(body)["error"] == "lost_state"
    lost = c.info()["lost_state"]
    assert lost is not None and lost["from"] in ("a", "b")
    # asked through c, which runs no group, the CLI takes the cluster as the group sees it
    poll(lambda: {m["id"]: m["state"] for m in c.get_json("/cluster/members")}.get("a") == "alive",
         timeout=30, what="c to learn a")
    capsys.readouterr()
    assert main(["cluster", "verify", c.addr]) == 1
    out, err = capsys.readouterr()
    assert "Verifying the replicated cluster of" in out, (out, err)
    assert f"Node c ({c.addr}) lost its state: the group counts it a" in out, out
    assert f"Node c ({c.addr}) runs no replicated group but" in err and "asking through" in err, err
    assert "ERROR" in c.log_text() and "lost its Raft log" in c.log_text()
    # the smart client asks another node when the map names c (k2 is slot 12563: c's third)
    with Client(a.addr) as client:
        assert client.get("k2") == b"v-k2" and client.get("k1") == b"v-k1"
    assert main(["cluster", "verify", a.addr]) == 1
    out = capsys.readouterr().out
    assert f"Node c ({c.addr}) lost its state: the group counts it a" in out, out
    assert "Node c answers but runs no replicated group." not in out, out  # said once, with what to do
    assert f"`storelab cluster remove-node {a.addr} c` takes it out" in out, out
    assert main(["cluster", "remove-node", a.addr, "c", "--yes"]) == 0, capsys.readouterr()
    assert c.wait(timeout=30) == 0
    # every record of c is the one the maps were built from: a node added now agrees
    d = launcher.node("d", extra=["--data-dir", str(tmp_path / "data-d")])
    assert main(["cluster", "add-node", d.addr, a.addr, "--yes", "--timeout", "10"]) == 0, capsys.readouterr()
    capsys.readouterr()

    def same_maps() -> bool:
        maps = [n.get_json("/cluster/slots")["slots"] for n in (a, b, d)]
        return maps[0] == maps[1] == maps[2]

    poll(same_maps, timeout=30, what="a, b and d to hold the same slot map")
    assert {m["id"]: m["state"] for m in d.get_json("/cluster/members")}["c"] == "left"
    poll(lambda: main(["cluster", "verify", a.addr]) == 0, timeout=30, interval=0.5,
         what="verify to be clean")
    assert d.request("GET", kv_path("k2"))[2] == b"v-k2"


def test_a_stray_heartbeat_in_an_unreplicated_cluster_is_named_by_verify_and_fix_takes_it_back(
        launcher: Launcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One forged heartbeat on an open bus (a Hello naming a live member, then "its group's"
    heartbeat vouching for entries) makes a node of an unreplicated cluster refuse every key.
    verify said the cluster was fine meanwhile, and the only remedy was a restart, which loses an
    in-memory node's keys. verify now names the node; fix, seeing that the sender answers and
    runs no group, takes the mark back, and the key is served again, nothing lost."""
    from realnet.cli import main

    m1, m2, key, _ = two_with_a_key(launcher, tmp_path, STEADY_SETTINGS, "stray")  # key in m2's half
    with socket.create_connection((HOST, m2.peer_port), timeout=10) as s:
        s.sendall(kvwire.frame(Hello(node_id="m1"))
                  + kvwire.frame(RaftHeartbeat(term=3, src="m1", dst="m2", commit=5)))
        poll(lambda: m2.info().get("lost_state"), timeout=30, what="m2 to take the heartbeat")
    status, _, body = m2.request("GET", kv_path(key))
    assert status == 503 and json.loads(body)["error"] == "lost_state", body
    assert main(["cluster", "verify", m1.addr]) == 1
    out = capsys.readouterr().out
    assert (f"Node m2 ({m2.addr}) refuses every key (503 lost_state): it took Raft traffic from m1 at "
            "term 3 for a replicated group's, but this cluster runs no group and m1 runs none either") in out, out
    assert f"`storelab cluster fix {m1.addr}` takes the mark back" in out, out
    # the node's guard: a mark is taken back only for the sender that set it
    assert post(m2, "/cluster/clear-lost-state", {"from": "m3"})[0] == 409
    assert main(["cluster", "fix", m1.addr, "--yes"]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "  - node m2: marked by m1, which runs no group" in out and "Node m2 serves its keys again." in out, out
    assert m2.info()["lost_state"] is None
    with Client(m1.addr) as client:
        assert client.get(key) == b"acknowledged"
    assert main(["cluster", "verify", m1.addr]) == 0, capsys.readouterr()
    assert post(m2, "/cluster/clear-lost-state", {"from": "m1"}) == (200, {"id": "m2", "from": "m1", "cleared": False})
