"""Restore from storage (kvcore.node.restore): what a node's earlier life left, read back in order."""

from __future__ import annotations

from kvcore.config import ClusterConfig, NodeConfig, NodeSpec
from kvcore.messages import Get, MigrateKeys, Put, Reply
from kvcore.node import Node
from kvcore.node.restore import read_saved
from kvcore.runtime import FakeRuntime, MemoryStorage
from kvcore.slots import SlotMap, even_split, key_slot

SPLIT = even_split(["n1", "n2"])
CLUSTER = ClusterConfig(
    tuple(NodeSpec(n, f"127.0.0.1:{7001 + i}", f"127.0.0.1:{17001 + i}", tuple(SPLIT[n]))
          for i, n in enumerate(["n1", "n2"])), 1)
SLOT = key_slot(b"{a}x")  # owned by n2


def build(nid: str, disk: MemoryStorage, durable: bool = True) -> tuple[Node, FakeRuntime]:
    rt = FakeRuntime(nid, seed=1)
    rt.storage = disk
    return Node(rt, NodeConfig(durable=durable), CLUSTER), rt


def test_empty_storage_holds_nothing_to_restore() -> None:
    saved = read_saved(MemoryStorage(), durable=True)
    assert saved.slot_map is None and not saved.malformed and saved.marks == [] and saved.batches == []


def test_read_saved_parses_the_map_the_marks_and_the_batches() -> None:
    disk = MemoryStorage()
    m = SlotMap.from_assignment({"a": [(0, 99)], "b": [(100, 16383)]}, 4)
    disk.put("slotmap", m.to_text().encode())
    disk.put("mark:migrating:7", b"b")
    disk.put("mark:importing:200", b"b")
    disk.put("batch:42", f"7 b {b'k1'.hex()},{b'k2'.hex()}".encode())
    saved = read_saved(disk, durable=True)
    assert saved.slot_map == m
    assert sorted(saved.marks) == [("importing", 200, "b"), ("migrating", 7, "b")]
    assert saved.batches == [(42, 7, "b", [b"k1", b"k2"])]
    # a memory-only node keeps no marks or batches (it never wrote them): only the map counts
    light = read_saved(disk, durable=False)
    assert light.slot_map == m and light.marks == [] and light.batches == []


def test_an_unreadable_saved_map_is_counted_as_malformed_and_the_node_still_builds() -> None:
    disk = MemoryStorage()
    disk.put("slotmap", b"0-99999=a@1")
    assert read_saved(disk, durable=False).malformed
    n, _ = build("n1", disk, durable=False)
    assert n.stats.malformed == 1
    assert n.slot_map == CLUSTER.slot_map(), "the configured map stands"


def test_the_saved_map_wins_where_its_epoch_is_newer() -> None:
    disk = MemoryStorage()
    m = CLUSTER.slot_map()
    m.claim([(0, 9)], "n2", 5)  # n2 took 0-9 from n1 while n1 was down
    disk.put("slotmap", m.to_text().encode())
    n1, _ = build("n1", disk, durable=False)
    assert n1.slot_map.owner(0) == "n2" and n1.slot_map.epoch(0) == 5
    assert n1.slot_map.owner(10) == "n1"


def test_its_own_newer_claim_is_advertised_again() -> None:
    disk = MemoryStorage()
    first, _ = build("n1", disk)
    first.claim_slots("15000-15009", 6)  # took ten slots of n2's, then crashed
    again, _ = build("n1", disk)
    assert again.membership.me.epoch == 6 and "15000-15009" in again.membership.me.slots
    assert again.slot_map.owner(15005) == "n1" and again.slot_map.epoch(15005) == 6


def test_open_marks_come_back_even_for_a_slot_the_saved_map_gives_away() -> None:
    # marks are restored after the map: rebuilding the map is not hearing that the slot moved,
    # so the mark stays for the operator's finish or fix to close
    disk = MemoryStorage()
    n2, _ = build("n2", disk)
    n2.begin_migrate(SLOT, "n1")
    m = n2.slot_map.copy()
    m.claim([(SLOT, SLOT)], "n1", 9)
    disk.put("slotmap", m.to_text().encode())
    again, _ = build("n2", disk)
    assert again.slot_map.owner(SLOT) == "n1"
    assert again.migrating == {SLOT: "n1"}


def test_an_unacknowledged_batch_is_frozen_again_and_resent_on_start() -> None:
    disk = MemoryStorage()
    n2, rt = build("n2", disk)
    n2.start()
    for i in range(3):
        n2.on_client_request(Put(key=b"{a}%d" % i, value=b"v%d" % i), lambda r: None)
    n2.begin_migrate(SLOT, "n1")
    n2.migrate_keys(SLOT, 2, lambda moved, err: None)
    (first,) = [m for _, m in rt.take_sent() if isinstance(m, MigrateKeys)]
    again, rt2 = build("n2", disk)  # crash before the ack
    assert sorted(again.migration.in_flight) == sorted(first.keys)
    got: list[Reply] = []
    again.on_client_request(Get(key=first.keys[0]), got.append)
    again.on_client_request(Get(key=b"{a}2"), got.append)
    assert [r.error for r in got] == ["try_again", ""]
    rt2.take_sent()
    again.start()
    (resent,) = [m for _, m in rt2.take_sent() if isinstance(m, MigrateKeys)]
    assert (resent.batch, resent.keys, resent.values) == (first.batch, first.keys, first.values)
