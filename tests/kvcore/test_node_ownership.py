"""The slot map from membership events (kvcore.node.ownership): highest epoch wins, saved when a
reconfiguration lands, and a slot that changes hands ends its source's migration."""

from __future__ import annotations

import pytest

from kvcore.membership import Member
from kvcore.metrics import NodeStats
from kvcore.node.ownership import SLOT_MAP_KEY, Ownership
from kvcore.runtime import MemoryStorage
from kvcore.slots import SlotMap
from kvcore.states import MemberEvent


def ownership(base_epoch: int = 2) -> tuple[Ownership, MemoryStorage, NodeStats]:
    disk, stats = MemoryStorage(), NodeStats()
    return Ownership(disk, stats, SlotMap.from_assignment({"a": [(0, 99)]}, 2), base_epoch), disk, stats


def claim(node: str, slots: str, epoch: int) -> Member:
    return Member(node, "", "", slots=slots, epoch=epoch)


def test_the_highest_epoch_wins_in_any_order() -> None:
    o, _, _ = ownership()
    assert o.learn(MemberEvent.UPDATE, "b", claim("b", "50-60", 3))
    assert not o.learn(MemberEvent.JOIN, "c", claim("c", "55", 3)), "an equal epoch does not win"
    assert not o.learn(MemberEvent.ALIVE, "a", claim("a", "0-99", 2)), "an older claim changes nothing"
    assert o.slot_map.owner(55) == "b" and o.slot_map.owner(49) == "a"


@pytest.mark.parametrize("event", [MemberEvent.SUSPECT, MemberEvent.DEAD, MemberEvent.LEFT,
                                   MemberEvent.REFUTE, MemberEvent.REAP])
def test_only_events_that_carry_a_current_claim_count(event: MemberEvent) -> None:
    o, _, _ = ownership()
    assert not o.learn(event, "b", claim("b", "0-10", 9))
    assert o.slot_map.owner(0) == "a"


def test_the_map_is_saved_only_for_a_claim_above_the_configured_epoch() -> None:
    o, disk, _ = ownership(base_epoch=3)
    assert o.learn(MemberEvent.UPDATE, "b", claim("b", "200", 3))
    assert disk.get(SLOT_MAP_KEY) is None, "the configuration itself is not saved"
    assert o.learn(MemberEvent.UPDATE, "b", claim("b", "0-10", 4))
    saved = disk.get(SLOT_MAP_KEY)
    assert saved is not None and SlotMap.from_text(saved.decode()) == o.slot_map


def test_seeding_mutes_learning_and_a_bad_claim_is_counted() -> None:
    o, _, stats = ownership()
    o.seeding = True
    assert not o.learn(MemberEvent.UPDATE, "b", claim("b", "0-10", 9))
    o.seeding = False
    assert not o.learn(MemberEvent.UPDATE, "b", claim("b", "10-5", 9))
    assert stats.malformed == 1 and o.slot_map.owner(0) == "a"


@pytest.mark.parametrize("batch_pending", [False, True])
def test_a_claim_that_takes_a_migrating_slot_ends_the_move_unless_a_batch_is_unacknowledged(
    batch_pending: bool,
) -> None:
    from kvcore.config import ClusterConfig, NodeConfig, NodeSpec
    from kvcore.messages import Alive, Gossip, Put
    from kvcore.node import Node
    from kvcore.runtime import FakeRuntime
    from kvcore.slots import even_split, key_slot

    split = even_split(["n1", "n2"])
    cluster = ClusterConfig(tuple(NodeSpec(n, f"127.0.0.1:{7001 + i}", f"127.0.0.1:{17001 + i}", tuple(split[n]))
                                  for i, n in enumerate(["n1", "n2"])), 1)
    slot = key_slot(b"{a}x")  # n2's
    src = Node(FakeRuntime("n2", seed=1), NodeConfig(), cluster)
    src.on_client_request(Put(key=b"{a}0", value=b"v"), lambda r: None)
    src.begin_migrate(slot, "n1")
    if batch_pending:
        src.migrate_keys(slot, 10, lambda moved, err: None)
    src.on_message("n1", Gossip(updates=(Alive(node="n1", incarnation=3, addr="127.0.0.1:7001",
                                               peer_addr="127.0.0.1:17001", slots=f"{slot}", epoch=5),)))
    assert src.slot_map.owner(slot) == "n1"
    assert src.migrating == ({slot: "n1"} if batch_pending else {})
