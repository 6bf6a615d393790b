"""Restarts in the sim: a node that joined through seeds, crashed and restarted *without* seeds
rejoins through the members its storage kept (as ``realnet.node --data-dir`` without
``--seeds``), and serves its slots again; before it has synced it answers ``try_again``, never a
stale answer."""

from __future__ import annotations

from kvcore.config import NodeConfig
from kvcore.membership import MEMBER_PREFIX, SwimConfig
from kvcore.messages import Get, Put, Reply
from kvcore.slots import key_slot
from sim.cluster import SimCluster

SWIM = SwimConfig.lan(probe_interval=0.5, probe_timeout=0.2, suspicion_mult=3)


def _call(c: SimCluster, node_id: str, op: object, wait: float = 1.5) -> Reply:
    out: list[Reply] = []
    assert c.submit(node_id, op, out.append)
    c.run(until=c.now + wait)
    assert out, f"no reply from {node_id} to {op}"
    return out[0]


def _keys_of(slots: range, n: int) -> list[bytes]:
    out, i = [], 0
    while len(out) < n:
        k = f"k{i}".encode()
        if key_slot(k) in slots:
            out.append(k)
        i += 1
    return out


def test_a_joined_node_restarted_without_seeds_rejoins_from_its_storage() -> None:
    # n1 forms the cluster and owns every slot; n2 and n3 join through it (seeds)
    c = SimCluster(7, 3, NodeConfig(forward_timeout=1.0, durable=True), swim=SWIM, join="seeds", seeds=1)
    c.run(until=3.0)
    moved = range(0, 2000)
    c.reshard(moved, "n3")
    c.run(until=12.0)
    assert c.node("n1").slot_map.owner(5) == "n3"
    theirs, mine = _keys_of(moved, 20), _keys_of(range(9000, 16384), 20)
    for k in theirs + mine:
        assert _call(c, "n2", Put(key=k, value=k)).error == ""
    # what n3 keeps to rejoin: every other member, with its peer address
    kept = dict(c._slots["n3"].storage.items(MEMBER_PREFIX))
    assert sorted(kept) == [MEMBER_PREFIX + "n1", MEMBER_PREFIX + "n2"]

    c.crash("n3")
    c.run(until=c.now + 1.0)
    c.restart("n3", seeds=False)
    n3 = c.node("n3")
    assert n3.info()["mode"] == "cluster" and n3.info()["syncing"]
    assert n3.slot_map.owner(5) == "n3" and n3.slot_map.owner(9000) == "n1"
    # never a stale answer: until it synced, try_again; then every key reads back, both ways
    for k in theirs + mine:
        for node_id in ("n3", "n1", "n2"):
            r = _call(c, node_id, Get(key=k), wait=0.5)
            assert r.error in ("", "try_again", "forward_timeout", "owner_down"), (node_id, k, r)
            assert r.error or r.value == k
    c.run(until=c.now + 5.0)
    assert not n3.info()["syncing"]
    for node_id in ("n1", "n2", "n3"):
        assert c.node(node_id).peer_states() == {x: "alive" for x in ("n1", "n2", "n3") if x != node_id}
        for k in theirs + mine:
            r = _call(c, node_id, Get(key=k))
            assert (r.error, r.value) == ("", k), (node_id, k, r)


def test_a_node_that_left_does_not_rejoin_when_restarted() -> None:
    c = SimCluster(8, 3, NodeConfig(), swim=SWIM, join="seeds", seeds=1)
    c.run(until=3.0)
    assert c._slots["n3"].storage.items(MEMBER_PREFIX)
    c.leave("n3")
    c.run(until=6.0)
    assert c._slots["n3"].storage.items(MEMBER_PREFIX) == []
