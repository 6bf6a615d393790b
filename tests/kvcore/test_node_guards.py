"""The admin door's loss guards (kvcore.node.guards): each admin sequence issue 10 found losing
keys is refused on the node, with nothing changed, unless the request accepts the loss; and the
epochs an operator gives are bounded to int64."""

from __future__ import annotations

from typing import Any

import pytest

from kvcore import errors
from kvcore.bounds import MAX_ACCEPTED
from kvcore.config import ClusterConfig, NodeConfig, NodeSpec
from kvcore.messages import Dead, MigrateAck, MigrateKeys
from kvcore.node import Node
from kvcore.runtime import FakeRuntime
from kvcore.slots import MAX_EPOCH, even_split, key_slot
from kvcore.states import State

IDS = ["n1", "n2"]
SPLIT = even_split(IDS)
CLUSTER = ClusterConfig(
    tuple(NodeSpec(n, f"127.0.0.1:{7001 + i}", f"127.0.0.1:{17001 + i}", tuple(SPLIT[n]))
          for i, n in enumerate(IDS)), 1)
KEY = b"{a}x"
SLOT = key_slot(KEY)  # owned by n2
MINE = SPLIT["n1"][0][0]


def pair() -> tuple[Node, FakeRuntime, Node, FakeRuntime]:
    """n1 (the importer) and n2 (the owner of SLOT, holding KEY)."""
    r1, r2 = FakeRuntime("n1", seed=1), FakeRuntime("n2", seed=2)
    n1, n2 = Node(r1, NodeConfig(), CLUSTER), Node(r2, NodeConfig(), CLUSTER)
    n1.start()
    n2.start()
    n2.store.set(KEY, b"v")
    assert n2.slot_map.owner(SLOT) == "n2"
    return n1, r1, n2, r2


def deliver(rt: FakeRuntime, to: Node, src: str, kind: type) -> None:
    for _dst, msg in rt.take_sent():
        if isinstance(msg, kind):
            to.on_message(src, msg)


def refused(fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(errors.Conflict) as e:
        fn(*args, **kw)
    return e.value.message


def moved_one_batch() -> tuple[Node, Node]:
    """import, migrate, move-keys acknowledged: KEY lives on n1 only, SLOT still n2's."""
    n1, r1, n2, r2 = pair()
    n1.begin_import(SLOT, "n2")
    n2.begin_migrate(SLOT, "n1")
    results: list[tuple[int, str]] = []
    n2.migrate_keys(SLOT, 10, lambda moved, err: results.append((moved, err)))
    deliver(r2, n1, "n2", MigrateKeys)
    deliver(r1, n2, "n1", MigrateAck)
    assert results == [(1, "")]
    assert n1.store.get(KEY) == b"v" and n2.store.get(KEY) is None
    return n1, n2


def end_batch(n1: Node, n2: Node) -> list[tuple[int, str]]:
    """One more move-keys round on n2 (the source): it finds no key left and sends n1 the end
    batch; delivered both ways. What the round answered."""
    results: list[tuple[int, str]] = []
    n2.migrate_keys(SLOT, 10, lambda moved, err: results.append((moved, err)))
    r1, r2 = n1.rt, n2.rt
    assert isinstance(r1, FakeRuntime) and isinstance(r2, FakeRuntime)
    deliver(r2, n1, "n2", MigrateKeys)
    deliver(r1, n2, "n1", MigrateAck)
    return results


# --- claims ----------------------------------------------------------------------------------


def test_claiming_a_slot_another_live_member_owns_is_refused_unless_the_loss_is_accepted() -> None:
    n1, _, _n2, _ = pair()
    msg = refused(n1.claim_slots, str(SLOT), 5)
    assert f"slot {SLOT} is owned by n2 (alive)" in msg and "accept_loss" in msg
    assert n1.slot_map.owner(SLOT) == "n2" and n1.slot_map.epoch(SLOT) == 1
    n1.claim_slots(str(SLOT), 5, accept_loss=True)
    assert n1.slot_map.owner(SLOT) == "n1"


def test_claiming_the_slots_of_a_member_that_left_needs_no_acceptance() -> None:
    n1, _, _, _ = pair()
    n1.membership.apply(Dead(node="n2", incarnation=5, source="n2"))  # n2 leaves
    assert n1.membership.state_of("n2") == "left"
    n1.claim_slots(str(SLOT), 5)
    assert n1.slot_map.owner(SLOT) == "n1"


def test_assigning_away_slots_this_node_holds_keys_of_is_refused() -> None:
    _, _, n2, _ = pair()
    mine = SPLIT["n2"][0]
    msg = refused(n2.assign_slots, f"{mine[0]}-{mine[0] + 9}", 9)
    assert "holds 1 keys" in msg and str(SLOT) in msg
    assert n2.slot_map.owner(SLOT) == "n2"
    n2.assign_slots(f"{mine[0]}-{mine[0] + 9}", 9, accept_loss=True)
    assert n2.slot_map.owner(SLOT) is None or n2.slot_map.owner(SLOT) != "n2"


# --- import, migrate, move-keys, abort --------------------------------------------------------


def test_aborting_the_import_after_a_batch_was_acknowledged_is_refused_and_keeps_the_only_copy() -> None:
    n1, n2 = moved_one_batch()
    msg = refused(n1.abort_migration, SLOT)
    assert "only copy" in msg
    assert n1.store.get(KEY) == b"v" and n1.importing == {SLOT: "n2"}
    # the sequence still finishes: the key is served by its new owner
    assert end_batch(n1, n2) == [(0, "")]
    n1.finish_import([SLOT])
    assert n1.slot_map.owner(SLOT) == "n1" and n1.store.get(KEY) == b"v"


def test_aborting_the_source_after_keys_moved_is_refused_it_would_orphan_them() -> None:
    _n1, n2 = moved_one_batch()
    msg = refused(n2.abort_migration, SLOT)
    assert "1 keys of slot" in msg and "orphan" in msg
    assert n2.migrating == {SLOT: "n1"}
    n2.abort_migration(SLOT, accept_loss=True)
    assert n2.migrating == {}


def test_aborting_with_accept_loss_drops_the_copies_as_before() -> None:
    n1, _ = moved_one_batch()
    n1.abort_migration(SLOT, accept_loss=True)
    assert n1.store.get(KEY) is None and n1.importing == {}


def test_aborting_an_import_that_received_nothing_needs_no_acceptance() -> None:
    n1, _, _, _ = pair()
    n1.begin_import(SLOT, "n2")
    n1.abort_migration(SLOT)
    assert n1.importing == {}


# --- finish (issue: finish orphaned the owner's keys) -----------------------------------------


def test_finishing_a_slot_this_node_does_not_import_is_refused_when_its_owner_holds_keys() -> None:
    n1, _, n2, _ = pair()
    msg = refused(n1.finish_import, [SLOT])
    assert msg.startswith(f"node n1 is not importing slot {SLOT}, which is owned by n2 (alive)")
    assert "orphan the keys n2 holds of it" in msg and "accept_loss" in msg
    assert n1.slot_map.owner(SLOT) == "n2" and n1.slot_map.epoch(SLOT) == 1 and n1.membership.me.epoch == 1
    assert n2.store.get(KEY) == b"v"
    epoch = n1.finish_import([SLOT], accept_loss=True)  # an operator who means it
    assert n1.slot_map.owner(SLOT) == "n1" and n1.slot_map.epoch(SLOT) == epoch


def test_finishing_an_import_whose_keys_never_moved_is_refused_and_the_import_stays_open() -> None:
    n1, _, n2, _ = pair()
    n1.begin_import(SLOT, "n2")
    msg = refused(n1.finish_import, [SLOT])
    assert msg.startswith(f"node n1 imports slot {SLOT} from n2 (alive), which has not told it")
    assert "orphan the keys n2 still holds of it" in msg and "accept_loss" in msg
    assert n1.importing == {SLOT: "n2"} and n1.slot_map.owner(SLOT) == "n2"
    # the source marked migrating but no key moved yet: still refused
    n2.begin_migrate(SLOT, "n1")
    assert "has not told it" in refused(n1.finish_import, [SLOT])
    # several slots are checked as a whole: one refused slot refuses them all
    n1.migration.drained[SLOT] = "n2"
    other = SLOT + 1
    n1.begin_import(other, "n2")
    assert f"imports slot {other} from n2" in refused(n1.finish_import, [SLOT, other])
    assert n1.importing == {SLOT: "n2", other: "n2"}


def test_finishing_after_the_keys_moved_and_the_end_batch_is_accepted() -> None:
    n1, n2 = moved_one_batch()
    assert "has not told it" in refused(n1.finish_import, [SLOT])  # one batch moved; more may be left
    assert end_batch(n1, n2) == [(0, "")]
    epoch = n1.finish_import([SLOT])
    assert n1.slot_map.owner(SLOT) == "n1" and n1.slot_map.epoch(SLOT) == epoch and not n1.importing
    assert n1.store.get(KEY) == b"v"
    n1.finish_import([SLOT])  # a repeated finish of a slot it owns takes nothing from anyone


def test_an_end_batch_is_forgotten_with_the_import_it_belonged_to() -> None:
    n1, n2 = moved_one_batch()
    assert end_batch(n1, n2) == [(0, "")]
    n1.abort_migration(SLOT, accept_loss=True)
    n1.begin_import(SLOT, "n2")  # a new import: n2 may hold keys of it again
    assert "has not told it" in refused(n1.finish_import, [SLOT])


def test_finishing_needs_no_end_batch_from_a_source_that_left_nor_for_a_slot_nobody_owns() -> None:
    n1, _, _, _ = pair()
    n1.begin_import(SLOT, "n2")
    n1.membership.apply(Dead(node="n2", incarnation=5, source="n2"))  # n2 leaves: its keys went with it
    assert n1.membership.state_of("n2") == "left"
    n1.finish_import([SLOT])
    assert n1.slot_map.owner(SLOT) == "n1"
    lone, _, _, _ = pair()
    free = SLOT + 1
    lone.slot_map.claim([(free, free)], None, 3)  # nobody owns it: nothing to orphan
    lone.finish_import([free])
    assert lone.slot_map.owner(free) == "n1"


def test_finishing_an_import_of_a_slot_a_third_member_owns_is_refused() -> None:
    n1, _, _, _ = pair()
    n1.begin_import(SLOT, "n2")
    n1.membership.apply(Dead(node="n2", incarnation=5, source="n2"))  # n2 leaves: its keys went with it
    n1.slot_map.claim([(SLOT, SLOT)], "n3", 4)
    n1.membership.add_static([("n3", "127.0.0.1:7003", "127.0.0.1:17003", "", 0)])
    msg = refused(n1.finish_import, [SLOT])
    assert f"imports slot {SLOT} from n2, but it is owned by n3 (alive)" in msg


# --- leaving ----------------------------------------------------------------------------------


def test_a_forced_leave_with_keys_needs_accept_loss_and_without_keys_force_is_enough() -> None:
    _, _, n2, _ = pair()
    assert "force" in refused(n2.check_leave, False, False)
    msg = refused(n2.check_leave, True, False)
    assert "holds 1 keys" in msg and "accept_loss" in msg
    n2.check_leave(True, True)
    n2.store.delete(KEY)
    n2.check_leave(True, False)
    n2.check_leave(False, False, drains=True)


# --- epochs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("epoch", [MAX_ACCEPTED + 1, MAX_EPOCH, MAX_EPOCH + 1, 2**64, 2**64 - 1, -1])
def test_an_epoch_outside_int64_is_refused_by_claim_and_assign(epoch: int) -> None:
    n1, _, _, _ = pair()
    with pytest.raises(errors.BadRequest, match="out of range"):
        n1.claim_slots(str(MINE), epoch)
    with pytest.raises(errors.BadRequest, match="out of range"):
        n1.assign_slots(str(MINE), epoch)
    assert n1.slot_map.epoch(MINE) == 1


def test_the_largest_epoch_is_accepted_and_nothing_can_be_finished_above_it() -> None:
    n1, _, _, _ = pair()
    n1.claim_slots(str(MINE), MAX_ACCEPTED)
    assert n1.slot_map.epoch(MINE) == MAX_ACCEPTED
    n1.begin_import(SLOT, "n2")
    with pytest.raises(errors.Conflict, match="largest accepted"):
        n1.finish_import([SLOT], accept_loss=True)  # the cap holds even when a loss is accepted
    assert n1.slot_map.owner(SLOT) == "n2"


# --- what verify reads ------------------------------------------------------------------------


def test_info_reports_keys_held_for_slots_the_node_does_not_own() -> None:
    n1, _, n2, _ = pair()
    assert n2.info()["stray"] == {"slots": "", "keys": 0}
    n1.store.set(KEY, b"stale")  # n1 holds a key of n2's slot, not importing it
    assert n1.info()["stray"] == {"slots": str(SLOT), "keys": 1}
    n1.begin_import(SLOT, "n2")  # importing: expected, not stray
    assert n1.info()["stray"]["keys"] == 0


def test_finishing_an_import_whose_source_crashed_and_was_forgotten_is_refused() -> None:
    """A crashed source is reaped after reap_time, but its disk may come back with the keys the
    import was to take: "no longer known" is not "left" (an audit read an acknowledged key as 404
    after such a finish)."""
    n1, r1, _, _ = pair()
    n1.begin_import(SLOT, "n2")
    n1.membership.apply(Dead(node="n2", incarnation=5, source="n3"))  # declared dead, not left
    assert n1.membership.state_of("n2") == "dead"
    r1.advance(n1.membership.config.reap_time + 5.0)
    assert n1.membership.state_of("n2") is None  # forgotten
    msg = refused(n1.finish_import, [SLOT])
    assert f"imports slot {SLOT} from n2" in msg and "has not told it that it holds no key" in msg
    n1.finish_import([SLOT], accept_loss=True)  # what an operator who knows it is gone says
    assert n1.slot_map.owner(SLOT) == "n1"


# --- forgetting a member (a forced leave on its behalf) -------------------------------------------


def _forgetter(states: dict[str, str], voters: tuple[str, ...] = (), learners: tuple[str, ...] = (),
               owned: dict[str, int] | None = None, migrating: dict[int, str] | None = None) -> Any:
    """What check_forget reads of a node: its id, its view's states, its group's configuration
    (None: no group), its map's slot counts and its open migrations."""
    from types import SimpleNamespace

    conf = SimpleNamespace(voters=voters, learners=learners)
    replica = (SimpleNamespace(raft=SimpleNamespace(log=SimpleNamespace(conf=lambda: conf)))
               if voters or learners else None)
    return SimpleNamespace(
        id="a", replica=replica,
        membership=SimpleNamespace(state_of=lambda m: states.get(m)),
        slot_map=SimpleNamespace(slot_counts=lambda: dict(owned or {})),
        migrating=dict(migrating or {}), importing={})


def test_check_forget_refuses_what_is_not_a_dead_member_nothing_needs() -> None:
    from kvcore.node.guards import check_forget

    dead = {"x": State.DEAD, "b": State.ALIVE, "s": State.SUSPECT, "v": State.DEAD, "o": State.DEAD}
    with pytest.raises(errors.BadRequest, match="cannot forget itself"):
        check_forget(_forgetter(dead), "a", False)
    with pytest.raises(errors.NotFound, match="knows no member 'nobody'"):
        check_forget(_forgetter(dead), "nobody", False)
    for live in ("b", "s"):
        with pytest.raises(errors.Conflict, match="only a dead member is forgotten"):
            check_forget(_forgetter(dead), live, True)
    # a dead voter or learner of the node's group: a configuration change removes it first,
    # even with accept_loss
    for role, kw in (("voter", {"voters": ("a", "v")}), ("learner", {"voters": ("a",), "learners": ("v",)})):
        with pytest.raises(errors.Conflict, match=f"v is a {role} of node a's replicated group"):
            check_forget(_forgetter(dead, **kw), "v", True)
    # owning slots, or the other end of an open migration: only with accept_loss
    with pytest.raises(errors.Conflict, match="o owns 12 slots in node a's map"):
        check_forget(_forgetter(dead, owned={"o": 12}), "o", False)
    with pytest.raises(errors.Conflict, match="open migration of slots 7"):
        check_forget(_forgetter(dead, migrating={7: "o"}), "o", False)
    check_forget(_forgetter(dead, owned={"o": 12}), "o", True)
    check_forget(_forgetter(dead, voters=("a", "b")), "x", False)  # dead, outside the group, no slots
