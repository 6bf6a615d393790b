"""Live resharding in the sim: slots move under concurrent traffic and faults, nothing is lost.

Every history is checked by the linearizability checker (package checker): no acknowledged write
lost, no stale read, while keys move batch by batch and requests are sent on with ASK.
"""

from __future__ import annotations

import pytest

from checker import check
from kvcore.config import NodeConfig
from kvcore.membership import SwimConfig
from kvcore.slots import key_slot
from sim.clients import OK, UNKNOWN, Workload
from sim.cluster import SimCluster
from sim.latency import Constant

CFG = NodeConfig(forward_timeout=0.5)
SWIM = SwimConfig.lan(probe_interval=0.5, probe_timeout=0.2, suspicion_mult=3)


def slots_of_keys(n: int, prefix: str = "k") -> list[int]:
    return sorted({key_slot(f"{prefix}{i}") for i in range(n)})


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_reshard_under_concurrent_writes_and_loss_is_linearizable(seed: int) -> None:
    c = SimCluster(seed, 3, CFG, swim=SWIM)
    c.set_loss(0.05)
    # the clients' keys live in these slots; move the ones n1 owns to n3 while clients write
    slots = [s for s in slots_of_keys(30) if c.node("n1").slot_map.owner(s) == "n1"]
    assert slots
    c.add_clients(3, Workload(ops=400, keys=30, think=0.01, timeout=2.0))
    c.reshard(slots, "n3", at=1.0, batch=3)
    c.run()
    c.run(until=c.now + 5.0)  # let the final claims spread
    assert not [f for f in c.faults if f.verb == "reshard_aborted"], c.faults
    for node in c.nodes():
        for s in slots:
            assert node.slot_map.owner(s) == "n3", (seed, node.id, s)
        assert not node.migrating and not node.importing
    result = check(c.history.events(), model="kv", timeout=30)
    assert result.verdict == "linearizable", (seed, result.witness)
    oc = c.history.outcomes()
    assert oc[OK] > 0.8 * sum(oc.values())
    # the keys really moved, and live on exactly one node
    holders: dict[bytes, list[str]] = {}
    for node in c.nodes():
        for s in slots:
            for k in node.store.keys_in_slot(s):
                holders.setdefault(k, []).append(node.id)
    assert holders and all(v == ["n3"] for v in holders.values()), holders


def test_requests_during_a_move_are_answered_by_the_holder_of_the_key() -> None:
    c = SimCluster(9, 2, CFG, swim=SWIM)
    n1, n2 = c.node("n1"), c.node("n2")
    slot = key_slot("a{x}")
    owner = n1 if n1.slot_map.owner(slot) == "n1" else n2
    other = n2 if owner is n1 else n1
    from kvcore.messages import Get, Put

    got = []
    owner.on_client_request(Put(key=b"a{x}", value=b"1"), got.append)
    owner.on_client_request(Put(key=b"b{x}", value=b"2"), got.append)
    other.begin_import(slot, owner.id)
    owner.begin_migrate(slot, other.id)
    moved = []
    owner.migrate_keys(slot, 1, lambda n, e: moved.append((n, e)))
    # one key is in flight: requests for it get try_again, the other is served by the owner
    owner.on_client_request(Get(key=b"a{x}"), got.append)
    owner.on_client_request(Get(key=b"b{x}"), got.append)
    assert [r.error for r in got[2:]] == ["try_again", ""]
    c.run(until=1.0)
    assert moved == [(1, "")]
    # the moved key is now asked of the importer, via the owner
    read, write = [], []
    owner.on_client_request(Get(key=b"a{x}"), read.append)
    owner.on_client_request(Put(key=b"new{x}", value=b"3"), write.append)
    c.run(until=2.0)
    assert [(r.error, r.value) for r in read] == [("", b"1")]
    assert [r.error for r in write] == [""]
    assert other.store.get(b"new{x}") == b"3" and owner.store.get(b"new{x}") is None


def test_a_crash_of_the_source_aborts_the_reshard_and_is_reported() -> None:
    c = SimCluster(5, 3, CFG, swim=SWIM)
    slots = [s for s in slots_of_keys(30) if c.node("n1").slot_map.owner(s) == "n1"]
    c.add_clients(1, Workload(ops=200, keys=30, think=0.01, timeout=2.0))
    c.reshard(slots, "n3", at=1.0, batch=1)
    # every slot of a chunk moves at once (one batch each, as the CLI's move-keys call): the first
    # batches are acknowledged about 2 ms in; crash the source while they are in flight
    c.crash("n1", at=1.001)
    c.run()
    assert [f.verb for f in c.faults if f.verb == "reshard_aborted"] == ["reshard_aborted"]


def test_rebalance_onto_an_added_node_moves_its_share() -> None:
    c = SimCluster(4, 3, CFG, swim=SWIM, observe=False)
    c.add_node("n4", at=0.5)
    c.rebalance(at=3.0, batch=50)
    c.run(until=200.0)
    counts = c.node("n1").slot_map.slot_counts()
    assert counts == {"n1": 4096, "n2": 4096, "n3": 4096, "n4": 4096}, counts
    assert all(n.slot_map == c.node("n1").slot_map for n in c.nodes())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reshard_with_a_crash_of_the_source_in_the_middle_loses_no_acknowledged_write(seed: int) -> None:
    # durable nodes (every write reaches storage before it is acknowledged), 5% loss, the
    # source crashes mid-reshard and restarts; `fix` finishes the open migration
    c = SimCluster(seed, 3, NodeConfig(forward_timeout=0.5, durable=True), swim=SWIM)
    c.set_loss(0.05)
    # all 40 keys share one slot of n1's (a hash tag), so the move takes a while
    tag = next(t for t in "abcdefghijklmnopqrstuvwxyz" if c.node("n1").slot_map.owner(key_slot(t)) == "n1")
    slots = [key_slot(tag)]
    c.add_clients(3, Workload(ops=800, keys=40, think=0.01, timeout=2.0, prefix=f"{{{tag}}}k"))
    c.slow_node("n1", Constant(0.01))  # 10 ms more per hop: moving the 40 keys takes ~1 s
    c.reshard(slots, "n3", at=2.0, batch=1)
    c.crash("n1", at=2.3)
    c.restart("n1", at=4.0)
    c.fix(at=4.5)
    c.run()
    c.run(until=c.now + 5.0)
    assert [f.verb for f in c.faults if f.verb == "reshard_aborted"] == ["reshard_aborted"]
    result = check(c.history.events(), model="kv", timeout=30)
    assert result.verdict == "linearizable", (seed, result.witness)
    for node in c.nodes():
        assert all(node.slot_map.owner(s) == "n3" for s in slots), node.id
        assert not node.migrating and not node.importing
    # every key acknowledged as written is readable at the end, from any node
    last: dict[str, str | None] = {}
    for op in sorted((o for o in c.history if o.outcome == OK and o.f != "get"), key=lambda o: o.complete or 0):
        last[op.key] = op.value if op.f == "put" else None
    uncertain = {o.key for o in c.history if o.outcome == UNKNOWN and o.f != "get"}
    holders = {k: [n.id for n in c.nodes() if n.store.get(k.encode()) is not None] for k in last}
    checked = 0
    for k, v in last.items():
        if v is not None and k not in uncertain:  # an unknown write may have removed it
            assert len(holders[k]) == 1, (k, holders[k])
            checked += 1
    assert checked > 0


def test_remove_node_drains_its_slots_then_leaves() -> None:
    c = SimCluster(6, 3, CFG, swim=SWIM, observe=False)
    c.add_clients(1, Workload(ops=300, keys=30, think=0.01, timeout=2.0))
    c.remove_node("n2", at=1.0, batch=50)
    c.run(until=120.0)
    survivors = [n for n in c.nodes() if n.id != "n2"]
    assert c.node("n2") is None and c.truth["n2"] == "left"
    for n in survivors:
        assert set(n.slot_map.slot_counts()) == {"n1", "n3"}
        assert n.slot_map.covers_all()
        assert n.peer_states()["n2"] == "left"
    result = check(c.history.events(), model="kv", timeout=30)
    assert result.verdict == "linearizable", result.witness


# --- the one slot-move procedure (kvcore.slotmove) as the sim drives it ---------------------------


def test_a_move_waits_until_every_live_node_names_the_target() -> None:
    c = SimCluster(11, 3, CFG, swim=SWIM, observe=False)
    slots = [s for s in slots_of_keys(20) if c.node("n1").slot_map.owner(s) == "n1"]
    c.add_clients(1, Workload(ops=50, keys=20, think=0.01, timeout=2.0))
    c.partition(["n2"], at=0.9)  # n2 cannot hear the claim until the heal
    c.heal(at=6.0)
    done: list[tuple[float, bool, list[str | None]]] = []

    def run() -> object:
        ok = yield from c._reshard(slots, "n3", 20, 0.2, 50)
        done.append((c.now, ok, [c.node("n2").slot_map.owner(s) for s in slots]))

    c.run(until=1.0)
    c.env.process(run())
    c.run(until=40.0)
    assert len(done) == 1
    t, ok, n2_owners = done[0]
    assert ok and t >= 6.0, done  # not over when n3 claimed (about 1.0): n2 had to learn it
    assert n2_owners == ["n3"] * len(slots)


def test_a_refused_migrate_takes_back_the_import_marks_it_set() -> None:
    c = SimCluster(12, 3, CFG, swim=SWIM, observe=False)
    n1, n3 = c.node("n1"), c.node("n3")
    slot = next(s for s in range(16384) if n1.slot_map.owner(s) == "n1")
    n1.begin_migrate(slot, "n2")  # another orchestrator's move of this slot is open on n1
    c.reshard([slot], "n3", at=1.0)
    c.run(until=3.0)
    aborted = [f for f in c.faults if f.verb == "reshard_aborted"]
    assert len(aborted) == 1 and "already migrating" in aborted[0].args, c.faults
    assert n3.importing == {}  # taken back: no key moved under it
    assert n1.migrating == {slot: "n2"}  # the other move is not ours to touch


def test_fix_rolls_back_a_migration_whose_target_left() -> None:
    c = SimCluster(13, 3, CFG, swim=SWIM, observe=False)
    c.add_node("n4")  # joins owning no slot
    c.run(until=3.0)
    n1, n4 = c.node("n1"), c.node("n4")
    slot = next(s for s in range(16384) if n1.slot_map.owner(s) == "n1")
    n4.begin_import(slot, "n1")
    n1.begin_migrate(slot, "n4")
    c.leave("n4", at=3.5)
    c.fix(at=10.0)
    c.run(until=14.0)
    assert n1.migrating == {} and n1.slot_map.owner(slot) == "n1"
    assert [f.verb for f in c.faults if f.verb in ("reshard_aborted", "fix_unfixed")] == []


def test_fix_waits_for_the_target_to_learn_that_the_source_left_then_finishes() -> None:
    """A source that left mid-move never comes back: fix lets the target finish, keeping the
    keys it took. A target that has not heard of the leave yet refuses to finish (its guard):
    fix waits until gossip tells it, instead of ending on the refusal."""
    c = SimCluster(16, 3, CFG, swim=SWIM, observe=False)
    c.run(until=2.0)
    n1, n2 = c.node("n1"), c.node("n2")
    slot = next(s for s in range(16384) if n1.slot_map.owner(s) == "n1")
    n2.begin_import(slot, "n1")
    n1.begin_migrate(slot, "n2")
    c.leave("n1", at=3.0)  # (its other slots are left without an owner: fix assigns them)
    c.fix(at=3.0, assign_unowned=True)  # the same instant: n2 has not heard of the leave yet
    c.run(until=8.0)
    assert [f.args for f in c.faults if f.verb == "fix_unfixed"] == []
    assert n2.slot_map.owner(slot) == "n2" and not n2.importing
    assert c.node("n3").slot_map == n2.slot_map and n2.slot_map.covers_all()


def test_fix_resumes_then_finishes_a_move_both_ends_of_which_are_up() -> None:
    c = SimCluster(14, 3, CFG, swim=SWIM, observe=False)
    n1, n3 = c.node("n1"), c.node("n3")
    slot = key_slot("{r}0")
    owner = c.node(n1.slot_map.owner(slot))
    target = n3 if owner is not n3 else n1
    for i in range(5):
        owner.on_client_request(__import__("kvcore.messages").messages.Put(key=b"{r}%d" % i, value=b"v"),
                                lambda r: None)
    target.begin_import(slot, owner.id)
    owner.begin_migrate(slot, target.id)
    c.fix(at=1.0)
    c.run(until=10.0)
    assert all(n.slot_map.owner(slot) == target.id and not n.migrating and not n.importing for n in c.nodes())
    assert target.store.count_in_slot(slot) == 5 and owner.store.count_in_slot(slot) == 0


def _partial_cluster(seed: int) -> SimCluster:
    from kvcore.config import ClusterConfig
    from sim.cluster import sim_spec

    specs = (sim_spec("n1", ((0, 5000),)), sim_spec("n2", ((5001, 10000),)), sim_spec("n3", ((10001, 16000),)))
    return SimCluster(seed, 3, CFG, swim=SWIM, observe=False, cluster=ClusterConfig(specs, 1))


def test_fix_gives_unowned_slots_an_owner_only_when_asked() -> None:
    c = _partial_cluster(15)
    c.fix(at=1.0)
    c.run(until=3.0)
    (unfixed,) = [f for f in c.faults if f.verb == "fix_unfixed"]
    assert "383 slots (16001-16383) have no live owner" in unfixed.args and "--assign-unowned" in unfixed.args
    assert not c.node("n1").slot_map.covers_all()

    c = _partial_cluster(15)
    key = next(f"k{i}" for i in range(10_000) if key_slot(f"k{i}") > 16000)
    c.node("n3").store.set(key.encode(), b"kept")  # a key of an unowned slot, held by n3
    c.fix(at=1.0, assign_unowned=True)
    c.run(until=10.0)
    assert [f.verb for f in c.faults if f.verb == "fix_unfixed"] == []
    for n in c.nodes():
        assert n.slot_map.covers_all() and n.slot_map == c.node("n1").slot_map
    # the holder of the key gets its slot; the rest go to the nodes with the fewest slots, evenly
    assert c.node("n1").slot_map.owner(key_slot(key)) == "n3"
    counts = c.node("n1").slot_map.slot_counts()
    assert counts["n3"] == 6001 and abs(counts["n1"] - counts["n2"]) <= 1, counts


def test_fix_readopts_a_slot_two_nodes_claim_at_the_same_epoch() -> None:
    c = SimCluster(16, 3, CFG, swim=SWIM, observe=False)
    n1, n2 = c.node("n1"), c.node("n2")
    n1.claim_slots("100", 5, accept_loss=True)
    n2.claim_slots("100", 5, accept_loss=True)  # the same epoch: whoever a node heard first, it keeps
    c.run(until=5.0)
    assert n1.slot_map.owner(100) == "n1" and n2.slot_map.owner(100) == "n2"
    c.fix(at=5.0)
    c.run(until=12.0)
    assert all(n.slot_map.owner(100) == "n1" and n.slot_map.epoch(100) > 5 for n in c.nodes())
    assert all(n.slot_map == n1.slot_map for n in c.nodes())


def test_fix_settles_two_crossing_moves_that_finished_at_the_same_epoch() -> None:
    """An audit's stuck cluster: moves n1 -> n2 (slot S) and n2 -> n1 (slot T) finished at the
    same instant, both at max epoch + 1; each target's claim re-advertised the slot it was giving
    away, so the maps disagree at one epoch, each source keeps its mark, and fix waited for maps
    that never change. Fix now lets each source claim its slot again first, then resumes."""
    c = SimCluster(17, 3, CFG, swim=SWIM, observe=False)
    n1, n2 = c.node("n1"), c.node("n2")
    s_key = next(k for k in (f"s{i}".encode() for i in range(10_000)) if n1.slot_map.owner(key_slot(k)) == "n1")
    t_key = next(k for k in (f"t{i}".encode() for i in range(10_000)) if n1.slot_map.owner(key_slot(k)) == "n2")
    S, T = key_slot(s_key), key_slot(t_key)
    n1.store.set(s_key, b"s-value")
    n2.store.set(t_key, b"t-value")
    c.run(until=3.0)
    n2.begin_import(S, "n1")
    n1.begin_migrate(S, "n2")
    n1.begin_import(T, "n2")
    n2.begin_migrate(T, "n1")
    results: list[tuple[int, str | None]] = []
    for _ in range(2):  # the key, then the end batch ("none left")
        n1.migrate_keys(S, 100, lambda moved, err: results.append((moved, err)))
        n2.migrate_keys(T, 100, lambda moved, err: results.append((moved, err)))
        c.run(until=c.now + 1.0)
    assert sorted(results) == [(0, ""), (0, ""), (1, ""), (1, "")], results
    e2 = n2.finish_import([S])  # the same instant, each above the same epochs
    e1 = n1.finish_import([T])
    assert e1 == e2
    c.run(until=c.now + 5.0)
    maps = {n.id: (n.slot_map.owner(S), n.slot_map.owner(T)) for n in c.nodes()}
    assert len(set(maps.values())) > 1 or n1.migrating or n2.migrating, maps  # stuck without fix
    c.fix(at=c.now)
    c.run(until=c.now + 15.0)
    assert [f.verb for f in c.faults if f.verb == "fix_unfixed"] == []
    for n in c.nodes():
        assert n.slot_map == n1.slot_map and not n.migrating and not n.migration.importing, n.id
    assert n1.slot_map.owner(S) == "n2" and n1.slot_map.owner(T) == "n1"
    assert c.node("n2").store.get(s_key) == b"s-value" and n1.store.get(t_key) == b"t-value"
