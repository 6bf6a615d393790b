"""Storage.sync(): every durable write kvcore makes is followed by a sync, so a disk that loses
unsynced writes in a crash (the sim's SimStorage; here a small double) keeps all a node promised."""

from __future__ import annotations

from kvcore.config import ClusterConfig, NodeConfig, NodeSpec
from kvcore.membership.protocol import INCARNATION_KEY, MEMBER_PREFIX
from kvcore.messages import Alive, Gossip, Put
from kvcore.node import Node
from kvcore.runtime import FakeRuntime, MemoryStorage, Storage
from kvcore.slots import even_split, key_slot
from kvcore.store import LocalStore

SPLIT = even_split(["n1", "n2"])
CLUSTER = ClusterConfig(
    tuple(NodeSpec(n, f"127.0.0.1:{7001 + i}", f"127.0.0.1:{17001 + i}", tuple(SPLIT[n]))
          for i, n in enumerate(["n1", "n2"])), 1)
SLOT = key_slot(b"{a}x")  # owned by n2


class ForgetfulDisk(MemoryStorage):
    """A MemoryStorage whose crash() forgets every write not followed by a sync()."""

    def __init__(self) -> None:
        super().__init__()
        self.durable: dict[str, bytes] = {}
        self.dirty = 0
        self.syncs = 0

    def put(self, key: str, value: bytes) -> None:
        super().put(key, value)
        self.dirty += 1

    def delete(self, key: str) -> None:
        super().delete(key)
        self.dirty += 1

    def sync(self) -> None:
        self.syncs += 1
        self.dirty = 0
        self.durable = dict(self._data)

    def crash(self) -> None:
        self._data = dict(self.durable)
        self.dirty = 0


def test_memory_storage_sync_is_a_no_op_and_keeps_everything() -> None:
    s: Storage = MemoryStorage()
    s.put("a", b"1")
    s.sync()
    assert s.get("a") == b"1"


def test_the_journaled_store_syncs_each_set_and_delete() -> None:
    disk = ForgetfulDisk()
    s = LocalStore(disk)
    s.set(b"a", b"1")
    assert disk.dirty == 0 and disk.syncs == 1
    s.delete(b"a")
    assert disk.dirty == 0 and disk.syncs == 2
    assert s.delete(b"a") is False and disk.syncs == 2  # nothing written, nothing to sync
    s.set(b"b", b"2")
    disk.crash()
    assert LocalStore.load(disk).get(b"b") == b"2"


def test_a_durable_node_leaves_nothing_unsynced_and_survives_a_forgetful_crash() -> None:
    disk = ForgetfulDisk()
    rt = FakeRuntime("n2", seed=1)
    rt.storage = disk
    n2 = Node(rt, NodeConfig(durable=True), CLUSTER)
    n2.start()
    assert disk.dirty == 0 and disk.get(INCARNATION_KEY) is not None
    n2.on_client_request(Put(key=b"{a}0", value=b"kept"), lambda r: None)
    assert disk.dirty == 0
    n2.begin_migrate(SLOT, "n1")
    assert disk.dirty == 0
    n2.on_message("n1", Gossip(updates=(Alive(node="n1", incarnation=4, addr="127.0.0.1:7001",
                                              peer_addr="127.0.0.1:17001", slots="0-8191,10000", epoch=3),)))
    rt.advance(5.0)
    assert disk.dirty == 0
    disk.crash()
    rt2 = FakeRuntime("n2", seed=2)
    rt2.storage = disk
    again = Node(rt2, NodeConfig(durable=True), CLUSTER)
    again.start()
    assert again.store.get(b"{a}0") == b"kept"
    assert again.migrating == {SLOT: "n1"}
    assert again.slot_map.owner(10000) == "n1" and again.slot_map.epoch(10000) == 3
    assert again.membership.me.incarnation > n2.membership.me.incarnation


def test_leaving_syncs_the_forgotten_members() -> None:
    disk = ForgetfulDisk()
    rt = FakeRuntime("n1", seed=1)
    rt.storage = disk
    n1 = Node(rt, NodeConfig(), CLUSTER)
    n1.start()
    # n2's news (a new epoch) is written to storage: a member for leave() to forget
    n1.on_message("n2", Gossip(updates=(Alive(node="n2", incarnation=4, addr="127.0.0.1:7002",
                                              peer_addr="127.0.0.1:17002", slots="8192-16383", epoch=2),)))
    assert disk.items(MEMBER_PREFIX) and "member:n2" in disk.durable
    n1.membership.leave()
    assert disk.dirty == 0
    disk.crash()
    assert disk.items(MEMBER_PREFIX) == []
