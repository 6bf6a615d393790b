"""Gossip membership between real processes: joining through seeds, ``kill -9`` detected by
everyone, restarts that rejoin, one slot map everywhere, and a seed that is not up yet.

Every wait is a poll against a generous deadline (a loaded two-core machine runs these next to
other node processes); the SWIM timings (``FAST_SWIM``) make a failure detection take about a
second on loopback.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest

import kvwire
from kvcore.messages import Hello, MemberState, PushPull
from realnet.client import kv_path
from tests.realnet.conftest import (
    FAST_SETTINGS,
    FAST_SWIM,
    HOST,
    START_DEADLINE,
    Launcher,
    NodeProc,
    eventually_ok,
    free_ports,
    keys_in,
    poll,
)

pytestmark = pytest.mark.realnet  # starts real node processes

#: how long every node may take to notice a kill -9 (about 1 s on an idle machine)
DETECT_DEADLINE = 30.0
#: how long convergence may take after a join or a restart
CONVERGE_DEADLINE = 30.0


def start_joiners(launcher: Launcher, ids: list[str], seed: NodeProc, **kw: Any) -> list[NodeProc]:
    """Start nodes that join through ``seed``'s peer address, all at once, then wait for each."""
    nodes = [
        launcher.node(nid, seeds=[seed.peer_addr], settings=FAST_SETTINGS, swim=FAST_SWIM,
                      wait=False, **kw)
        for nid in ids
    ]
    deadline = time.monotonic() + START_DEADLINE
    for n in nodes:
        assert n.wait_healthy(deadline), n.log_text()
    return nodes


def views(nodes: list[NodeProc]) -> dict[str, dict[str, dict[str, Any]]]:
    """Each node's /cluster/members, by observer id then member id."""
    return {n.id: n.members() for n in nodes}  # type: ignore[misc]


def everyone_sees(nodes: list[NodeProc], expected: dict[str, str]) -> bool:
    return all(n.states() == expected for n in nodes)


def slot_maps(nodes: list[NodeProc]) -> list[Any]:
    return [n.get_json("/cluster/slots") for n in nodes]


def assert_one_slot_map(nodes: list[NodeProc]) -> dict[str, Any]:
    maps = slot_maps(nodes)
    for n, m in zip(nodes, maps, strict=True):
        assert m == maps[0], f"{n.id}'s slot map differs from {nodes[0].id}'s:\n{m}\n{maps[0]}"
    return maps[0]  # type: ignore[no-any-return]


def test_five_nodes_joined_through_a_seed_detect_a_kill_and_a_restart(launcher: Launcher) -> None:
    n1 = launcher.node("n1", settings=FAST_SETTINGS, swim=FAST_SWIM)  # standalone: every slot
    joiners = start_joiners(launcher, ["n2", "n3", "n4", "n5"], n1)
    nodes = [n1, *joiners]
    ids = [n.id for n in nodes]
    all_alive = dict.fromkeys(ids, "alive")
    poll(lambda: everyone_sees(nodes, all_alive), timeout=CONVERGE_DEADLINE,
         what="every node to list all 5 alive")

    # every node knows every other's addresses and advertised slots
    for observer, view in views(nodes).items():
        for n in nodes:
            m = view[n.id]  # type: ignore[index]
            assert (m["addr"], m["peer_addr"], m["self"]) == (n.addr, n.peer_addr, n.id == observer)
            assert m["slots"] == ("0-16383" if n is n1 else "")
        assert nodes[ids.index(observer)].info()["joined"] is True
    one_map = assert_one_slot_map(nodes)
    assert [(r["start"], r["end"], r["node"], r["addr"]) for r in one_map["slots"]] == [
        (0, 16383, "n1", n1.addr)
    ]
    # any node serves any key (forwarded to n1)
    for i, n in enumerate(nodes):
        assert eventually_ok(n, "PUT", f"five-{i}".encode(), b"v") == b""
    for i in range(len(nodes)):
        assert eventually_ok(nodes[(i + 2) % 5], "GET", f"five-{i}".encode()) == b"v"

    # kill -9 of one: every other node holds it dead
    n4 = nodes[3]
    before = n1.members()["n4"]["incarnation"]
    t0 = time.monotonic()
    n4.kill()
    others = [n for n in nodes if n is not n4]
    dead = {**all_alive, "n4": "dead"}
    poll(lambda: everyone_sees(others, dead), timeout=DETECT_DEADLINE, interval=0.1,
         what="every other node to hold n4 dead")
    detected = time.monotonic() - t0
    print(f"kill -9 of n4 detected by all 4 others in {detected:.2f}s")
    assert_one_slot_map(others)
    assert one_map == slot_maps(others)[0]
    for i, n in enumerate(others):
        assert eventually_ok(n, "GET", f"five-{i}".encode()) == b"v"

    # restart with the same id and ports: everyone holds it alive again, at a higher incarnation
    n4.restart()
    poll(lambda: everyone_sees(nodes, all_alive), timeout=CONVERGE_DEADLINE,
         what="every node to list n4 alive again")
    for observer, view in views(nodes).items():
        assert view["n4"]["incarnation"] > before, (observer, view["n4"])
    assert_one_slot_map(nodes)
    assert one_map == slot_maps(nodes)[0]
    assert eventually_ok(n4, "GET", b"five-0") == b"v"


def test_a_dead_owners_slots_answer_owner_down_until_it_rejoins(launcher: Launcher) -> None:
    """A static core (a: 0-8191, b: 8192-16383) and two nodes joined through one seed each."""
    core = launcher.cluster(("a", "b"), settings=FAST_SETTINGS, swim=FAST_SWIM, wired=False)
    a, b = core["a"], core["b"]
    (c,) = start_joiners(launcher, ["c"], a)
    (d,) = start_joiners(launcher, ["d"], b)
    nodes = [a, b, c, d]
    all_alive = dict.fromkeys("abcd", "alive")
    poll(lambda: everyone_sees(nodes, all_alive), timeout=CONVERGE_DEADLINE,
         what="every node to list a, b, c, d alive")
    one_map = assert_one_slot_map(nodes)
    assert [(r["start"], r["end"], r["node"], r["addr"]) for r in one_map["slots"]] == [
        (0, 8191, "a", a.addr), (8192, 16383, "b", b.addr)
    ]
    keys_a = keys_in(0, 8191, 3, "on-a")
    keys_b = keys_in(8192, 16383, 3, "on-b")
    for k in keys_a + keys_b:
        assert eventually_ok(c, "PUT", k, k) == b""

    b.kill()
    dead = {**all_alive, "b": "dead"}
    survivors = [a, c, d]
    poll(lambda: everyone_sees(survivors, dead), timeout=DETECT_DEADLINE, interval=0.1,
         what="a, c and d to hold b dead")
    assert_one_slot_map(survivors)
    assert slot_maps(survivors)[0] == one_map  # b still owns its slots; it is just down

    def owner_down_everywhere() -> bool:
        for n in survivors:
            status, _, body = n.request("GET", kv_path(keys_b[0]))
            if status != 503 or json.loads(body)["error"] != "owner_down":
                return False
        return True

    poll(owner_down_everywhere, timeout=DETECT_DEADLINE, what="503 owner_down for b's slots")
    for n in survivors:
        status, _, body = n.request("PUT", kv_path(keys_b[1]), b"x")
        assert (status, json.loads(body)["error"]) == (503, "owner_down")
        assert "which is dead" in json.loads(body)["message"]
        for k in keys_a:  # the rest works, locally and forwarded
            assert eventually_ok(n, "GET", k) == k

    # b comes back (memory storage: incarnation 0 again; it learns it was declared dead from a
    # push-pull and refutes with a higher incarnation)
    b.restart()
    poll(lambda: everyone_sees(nodes, all_alive), timeout=CONVERGE_DEADLINE,
         what="every node to list b alive again")
    assert all(n.members()["b"]["incarnation"] >= 1 for n in nodes)
    assert_one_slot_map(nodes)
    assert slot_maps(nodes)[0] == one_map
    for n in nodes:
        assert eventually_ok(n, "PUT", keys_b[2], b"again") == b""
        assert eventually_ok(n, "GET", keys_b[2]) == b"again"


def test_a_node_whose_seed_is_down_keeps_trying_and_joins_once_it_starts(
    launcher: Launcher,
) -> None:
    http_port, peer_port = free_ports(2)
    j = launcher.node("j", seeds=[f"{HOST}:{peer_port}"], settings=FAST_SETTINGS, swim=FAST_SWIM)

    def failed_rounds() -> int:
        info = j.info()
        assert info["joined"] is False
        return int(info["swim"]["counters"].get("join_rounds_failed", 0))

    poll(lambda: failed_rounds() >= 3, timeout=CONVERGE_DEADLINE, what="j to retry its seed")
    assert j.states() == {"j": "alive"}
    # no slot is anyone's yet: j owns none, and knows no owner
    status, _, body = j.request("GET", kv_path(b"early"))
    assert (status, json.loads(body)["error"]) == (503, "slot_unassigned")

    s = launcher.node("s", settings=FAST_SETTINGS, swim=FAST_SWIM, ports=(http_port, peer_port))
    both = {"j": "alive", "s": "alive"}
    poll(lambda: everyone_sees([j, s], both), timeout=CONVERGE_DEADLINE, what="j to join s")
    assert j.info()["joined"] is True
    assert_one_slot_map([j, s])
    assert eventually_ok(j, "PUT", b"late", b"1") == b""
    assert eventually_ok(s, "GET", b"late") == b"1"


def test_a_member_restarted_on_other_ports_is_found_at_its_new_address(
    launcher: Launcher, tmp_path: Any
) -> None:
    """With a data dir the restart comes back at a higher incarnation, whose Alive carries the
    new addresses; the seed's transport then dials the new peer port."""
    s = launcher.node("s", settings=FAST_SETTINGS, swim=FAST_SWIM)
    data = ["--data-dir", str(tmp_path / "m-data")]
    (m,) = start_joiners(launcher, ["m"], s, extra=data)
    poll(lambda: everyone_sees([s, m], {"s": "alive", "m": "alive"}),
         timeout=CONVERGE_DEADLINE, what="m to join")
    inc = s.members()["m"]["incarnation"]
    m.kill()
    poll(lambda: s.states()["m"] == "dead", timeout=DETECT_DEADLINE, what="s to hold m dead")
    new_ports = [p for p in free_ports(4) if p not in (m.port, m.peer_port)][:2]
    moved = launcher.node("m", seeds=[s.peer_addr], settings=FAST_SETTINGS, swim=FAST_SWIM,
                          ports=(new_ports[0], new_ports[1]), extra=data)

    def at_new_address() -> bool:
        v = s.members()["m"]
        return bool(v["state"] == "alive" and v["peer_addr"] == moved.peer_addr)

    poll(at_new_address, timeout=CONVERGE_DEADLINE, what="s to see m alive at its new address")
    assert s.members()["m"]["incarnation"] > inc and s.members()["m"]["addr"] == moved.addr
    poll(lambda: s.members()["m"]["link"] == "connected", timeout=CONVERGE_DEADLINE,
         what="s's link to m at the new address")
    assert s.info()["transport"]["links"]["m"]["addr"] == moved.peer_addr
    assert eventually_ok(moved, "PUT", b"moved", b"1") == b""


def read_frames(conn: socket.socket, want: int, timeout: float) -> list[Any]:
    dec = kvwire.FrameDecoder()
    out: list[Any] = []
    conn.settimeout(timeout)
    while len(out) < want:
        chunk = conn.recv(65536)
        if not chunk:
            break
        out += dec.feed(chunk)
    return out


def test_a_stranger_that_speaks_the_protocol_is_admitted_then_found_dead(
    launcher: Launcher,
) -> None:
    """A node id no configuration named is welcome; it is watched like any other member."""
    node = launcher.node("solo", settings=FAST_SETTINGS, swim=FAST_SWIM)
    with socket.create_server((HOST, 0)) as listener:
        listen_addr = f"{HOST}:{listener.getsockname()[1]}"
        me = MemberState(node="stranger", incarnation=0, state="alive", addr=f"{HOST}:1",
                         peer_addr=listen_addr, slots="", epoch=0)
        with socket.create_connection((HOST, node.peer_port), timeout=10) as out:
            out.sendall(kvwire.frame(Hello(node_id="stranger"))
                        + kvwire.frame(PushPull(join=True, reply=False, members=(me,))))
            listener.settimeout(15)
            conn, _ = listener.accept()  # the node dials our advertised peer address
            with conn:
                hello, reply = read_frames(conn, 2, timeout=15)[:2]
            assert hello == Hello(node_id="solo")
            assert type(reply) is PushPull and reply.reply and not reply.join
            assert {(s.node, s.state, s.slots) for s in reply.members} == {("solo", "alive", "0-16383")}
            assert node.states() == {"solo": "alive", "stranger": "alive"}
        # it never answers a probe: suspected, then dead
        poll(lambda: node.states()["stranger"] == "dead", timeout=DETECT_DEADLINE,
             what="the silent stranger to be declared dead")
    assert node.request("GET", "/health")[0] == 200
    assert node.info()["transport"]["handler_errors"] == 0
