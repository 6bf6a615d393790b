"""Restore from storage (kvcore.node.restore): what a node's earlier life left, read back in order."""

from __future__ import annotations

from typing import Any

import pytest

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
    disk.put("drained:200", b"b")
    saved = read_saved(disk, durable=True)
    assert saved.slot_map == m and saved.drained == [(200, "b")]
    assert sorted(saved.marks) == [("importing", 200, "b"), ("migrating", 7, "b")]
    assert saved.batches == [(42, 7, "b", [b"k1", b"k2"])]
    # a memory-only node keeps no marks or batches (it never wrote them): only the map counts
    light = read_saved(disk, durable=False)
    assert light.slot_map == m and light.marks == [] and light.batches == [] and light.drained == []


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
    first.claim_slots("15000-15009", 6, accept_loss=True)  # took ten slots of n2's, then crashed
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


# --- members: what a node keeps to rejoin without seeds ------------------------------------------


def _joined_node(disk: MemoryStorage) -> tuple[Node, FakeRuntime]:
    """n3 joins n1 and n2 through a seed and learns their claims (what gossip would bring)."""
    from kvcore.messages import Alive

    rt = FakeRuntime("n3", seed=1)
    rt.storage = disk
    n = Node(rt, NodeConfig(), None, seeds=["@127.0.0.1:17001"], addr="127.0.0.1:7003",
             peer_addr="127.0.0.1:17003")
    n.start()
    for i, nid in enumerate(["n1", "n2"]):
        n.membership.apply(Alive(node=nid, incarnation=2, addr=f"127.0.0.1:{7001 + i}",
                                 peer_addr=f"127.0.0.1:{17001 + i}",
                                 slots="0-8191" if nid == "n1" else "8192-16383", epoch=3 + i))
    n.claim_slots("100-199", 9, accept_loss=True)
    return n, rt


def test_every_member_heard_of_is_kept_with_its_address_incarnation_and_claim() -> None:
    from kvcore.membership import MEMBER_PREFIX
    from kvcore.membership.member import decode_member

    disk = MemoryStorage()
    _joined_node(disk)
    kept = dict(disk.items(MEMBER_PREFIX))
    assert sorted(kept) == ["member:n1", "member:n2"]  # never itself: its own keys say that
    m = decode_member("n2", kept["member:n2"])
    assert m is not None
    assert (m.addr, m.peer_addr, m.incarnation, m.slots, m.epoch) == (
        "127.0.0.1:7002", "127.0.0.1:17002", 2, "8192-16383", 4)
    saved = read_saved(disk, durable=False)
    assert [s.node for s in saved.members] == ["n1", "n2"] and saved.malformed_members == 0


def test_a_restart_without_seeds_rejoins_through_the_kept_members_and_waits_for_a_sync() -> None:
    from kvcore.messages import PushPull

    disk = MemoryStorage()
    old, _ = _joined_node(disk)
    old.stop()
    rt = FakeRuntime("n3", seed=2)
    rt.storage = disk
    n = Node(rt, NodeConfig(), None, addr="127.0.0.1:7003", peer_addr="127.0.0.1:17003")
    assert n.info()["mode"] == "cluster", "it remembers a cluster: it is not standalone"
    assert sorted(n.peer_states()) == ["n1", "n2"]
    assert n.membership.address_of("n2") == "127.0.0.1:17002"
    # its own claim and the others' claims: the map as it was
    assert n.slot_map.owner(150) == "n3" and n.slot_map.owner(50) == "n1" and n.slot_map.owner(9000) == "n2"
    assert n.membership.me.incarnation > old.membership.me.incarnation
    n.start()
    joins = [dst for dst, msg in rt.take_sent() if isinstance(msg, PushPull) and msg.join]
    assert joins and joins[0] in ("n1", "n2"), "it joins through a member it kept, by id"
    replies: list[Reply] = []
    n.on_client_request(Put(key=b"k", value=b"v"), replies.append)
    assert replies[-1].error == "try_again" and n.info()["syncing"]
    # a member's full state ends the wait
    n.on_message("n1", PushPull(join=False, reply=True, members=old.membership._local_state()))
    n.on_client_request(Put(key=b"k90", value=b"v"), replies.append)  # slot 100-199: its own
    assert replies[-1].error == "" and not n.info()["syncing"]


def test_a_node_with_no_kept_members_and_no_seeds_is_standalone_as_before() -> None:
    rt = FakeRuntime("solo", seed=1)
    n = Node(rt, NodeConfig())
    n.start()
    assert n.info()["mode"] == "standalone" and not n.info()["syncing"]
    assert n.slot_map.slot_counts() == {"solo": 16384}
    replies: list[Reply] = []
    n.on_client_request(Put(key=b"k", value=b"v"), replies.append)
    assert replies[-1].error == ""


def test_a_static_member_built_with_sync_first_waits_for_a_member_before_serving() -> None:
    from kvcore.messages import PushPull

    rt = FakeRuntime("n2", seed=1)
    n = Node(rt, NodeConfig(), CLUSTER, sync_first=True)
    n.start()
    assert [dst for dst, msg in rt.take_sent() if isinstance(msg, PushPull) and msg.join] == ["n1"]
    replies: list[Reply] = []
    n.on_client_request(Put(key=b"{a}x", value=b"v"), replies.append)  # its own slot
    assert replies[-1].error == "try_again"
    # a push-pull from a member ends it, not a stranger's join (it teaches nothing of the cluster)
    n.on_message("n9", PushPull(join=True, reply=False, members=()))
    n.on_client_request(Put(key=b"{a}x", value=b"v"), replies.append)
    assert replies[-1].error == "try_again"
    # a member it knows joining through it (a static peer starting) sends its whole view
    n.on_message("n1", PushPull(join=True, reply=False, members=()))
    n.on_client_request(Put(key=b"{a}x", value=b"v"), replies.append)
    assert replies[-1].error == ""
    # without sync_first (the sim, whose storage survives every restart) it serves at once
    m = Node(FakeRuntime("n2", seed=1), NodeConfig(), CLUSTER)
    m.start()
    m.on_client_request(Put(key=b"{a}x", value=b"v"), replies.append)
    assert replies[-1].error == ""


def test_unreadable_member_entries_are_counted_and_skipped() -> None:
    disk = MemoryStorage()
    disk.put("member:n7", b"not a member")
    saved = read_saved(disk, durable=False)
    assert saved.members == [] and saved.malformed_members == 1
    rt = FakeRuntime("n1", seed=1)
    rt.storage = disk
    n = Node(rt, NodeConfig(), CLUSTER)
    assert n.stats.malformed == 1 and "n7" not in n.peer_states()


def test_a_member_that_left_forgets_the_members_it_kept() -> None:
    disk = MemoryStorage()
    n, _ = _joined_node(disk)
    assert disk.items("member:")
    n.membership.leave()
    assert disk.items("member:") == []


def test_a_members_periodic_push_pull_also_ends_the_wait() -> None:
    from kvcore.messages import PushPull

    n = Node(FakeRuntime("n2", seed=1), NodeConfig(), CLUSTER, sync_first=True)
    n.start()
    assert n.info()["syncing"]
    n.on_message("n1", PushPull(join=False, reply=False, members=()))
    assert not n.info()["syncing"]


# --- a member of a replicated group that cannot open it does not start -----------------------------


@pytest.mark.parametrize("record", [b"{not json", b'{"voters": ["n1"]}', b"[1, 2]", b'{"voters": 5, "learners": []}'])
def test_an_unreadable_record_of_the_group_refuses_the_node(record: bytes) -> None:
    """Before, the node counted it malformed and started as an unreplicated node: it then
    acknowledged writes outside its group (an audit's split brain)."""
    from kvcore.node import GroupUnusable
    from kvcore.node.node import GROUP_KEY

    rt = FakeRuntime("n1")
    rt.storage.put(GROUP_KEY, record)
    with pytest.raises(GroupUnusable, match="record of the group is unreadable"):
        Node(rt, NodeConfig())


def test_a_log_that_does_not_load_refuses_the_node() -> None:
    from kvcore.node import GroupUnusable
    from kvcore.node.node import GROUP_KEY

    def opener(voters: object, learners: object) -> Any:
        raise ValueError("a snapshot file of the wrong shape")

    rt = FakeRuntime("n1")
    rt.storage.put(GROUP_KEY, b'{"voters": ["n1", "n2", "n3"], "learners": []}')
    with pytest.raises(GroupUnusable, match=r"cannot open its log \(a snapshot file of the wrong shape\)"):
        Node(rt, NodeConfig(), raft_opener=opener)
