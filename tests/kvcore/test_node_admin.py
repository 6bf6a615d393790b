"""The node's admin door refuses on its own (so the sim, which calls it directly, refuses what
the realnet API refuses, with the same sentences), and its peer door dispatches by one table."""

from __future__ import annotations

from typing import Any

import pytest

from kvcore import errors
from kvcore.config import ClusterConfig, NodeConfig, NodeSpec
from kvcore.messages import (
    Asking,
    Dead,
    Forward,
    ForwardReply,
    Get,
    Gossip,
    MigrateAck,
    MigrateKeys,
    Put,
    Suspect,
)
from kvcore.node import Node
from kvcore.runtime import FakeRuntime
from kvcore.slots import even_split, key_slot

IDS = ["n1", "n2", "n3"]
SPLIT = even_split(IDS)
CLUSTER = ClusterConfig(
    tuple(NodeSpec(n, f"127.0.0.1:{7001 + i}", f"127.0.0.1:{17001 + i}", tuple(SPLIT[n]))
          for i, n in enumerate(IDS)), 1)
MINE = SPLIT["n1"][0][0]  # a slot n1 owns
THEIRS = SPLIT["n2"][0][0]  # a slot n2 owns


def node(nid: str = "n1") -> tuple[Node, FakeRuntime]:
    rt = FakeRuntime(nid, seed=1)
    n = Node(rt, NodeConfig(), CLUSTER)
    n.start()
    return n, rt


def refused(fn: Any, *args: Any) -> str:
    with pytest.raises(errors.Conflict) as e:
        fn(*args)
    return e.value.message


# --- the guards, on the node -----------------------------------------------------------------------


def test_importing_from_an_unknown_member_is_refused() -> None:
    n, _ = node()
    assert refused(n.begin_import, THEIRS, "x") == "node n1 knows no member 'x' to import from"
    assert n.importing == {}


@pytest.mark.parametrize(("update", "state"), [
    (Dead(node="n2", incarnation=1, source="n3"), "dead"),
    (Dead(node="n2", incarnation=1, source="n2"), "left"),
])
def test_migrating_to_a_member_that_is_not_up_is_refused(update: Any, state: str) -> None:
    n, _ = node()
    n.on_message("n3", Gossip(updates=(update,)))
    assert n.membership.state_of("n2") == state
    assert refused(n.begin_migrate, MINE, "n2") == (
        f"node n1 does not hold 'n2' alive ({state}), so it cannot migrate slots to it")
    assert n.migrating == {}


def test_migrating_to_an_unknown_member_or_to_itself_is_refused() -> None:
    n, _ = node()
    assert refused(n.begin_migrate, MINE, "x") == (
        "node n1 does not hold 'x' alive (unknown), so it cannot migrate slots to it")
    assert refused(n.begin_migrate, MINE, "n1") == "node n1 cannot migrate slots to itself"
    assert n.migrating == {}


def test_a_suspect_target_may_still_receive_a_slot() -> None:
    n, _ = node()
    n.on_message("n3", Gossip(updates=(Suspect(node="n2", incarnation=0, source="n3"),)))
    assert n.membership.state_of("n2") == "suspect"
    n.begin_migrate(MINE, "n2")
    assert n.migrating == {MINE: "n2"}


def test_a_rollback_is_refused_while_the_target_may_come_back_and_done_once_it_left() -> None:
    n, _ = node()
    n.begin_migrate(MINE, "n2")
    assert refused(n.rollback_migration, [MINE]) == (
        "node n1 holds 'n2' alive; only a migration whose target is gone (left or forgotten) is rolled back")
    assert n.migrating == {MINE: "n2"}  # refused before anything changed
    n.on_message("n3", Gossip(updates=(Dead(node="n2", incarnation=1, source="n2"),)))
    assert n.membership.state_of("n2") == "left"
    n.rollback_migration([MINE])
    assert n.migrating == {}


def test_a_slot_already_moving_elsewhere_is_refused_with_the_api_sentences() -> None:
    n, _ = node()
    n.begin_import(THEIRS, "n2")
    n.begin_migrate(MINE, "n2")
    assert refused(n.begin_import, THEIRS, "n3") == f"slot {THEIRS} is already importing from n2 on node n1"
    assert refused(n.begin_migrate, MINE, "n3") == f"slot {MINE} is already migrating to n2 on node n1"
    n.begin_import(THEIRS, "n2")  # the same mark again is fine (an orchestrator resuming)
    n.begin_migrate(MINE, "n2")


def test_a_list_of_slots_is_checked_as_a_whole_before_any_is_marked() -> None:
    n, _ = node()
    assert refused(n.begin_import, [THEIRS, MINE], "n2") == f"node n1 already owns slot {MINE}"
    assert refused(n.begin_migrate, [MINE, THEIRS], "n2") == f"node n1 does not own slot {THEIRS}"
    assert n.importing == {} and n.migrating == {}
    n.begin_import([THEIRS, THEIRS + 1], "n2")
    assert n.importing == {THEIRS: "n2", THEIRS + 1: "n2"}
    with pytest.raises(errors.BadRequest):
        n.begin_migrate([MINE, 16384], "n2")
    assert n.migrating == {}


def test_a_claim_at_an_epoch_that_would_not_win_is_refused_and_changes_nothing() -> None:
    n, _ = node()
    n.claim_slots(f"{THEIRS}-{THEIRS + 9}", 4, accept_loss=True)
    inc = n.membership.me.incarnation
    assert refused(n.claim_slots, f"{THEIRS + 5}-{THEIRS + 20}", 4) == (
        "epoch 4 is not above epoch 4 that node n1 holds for one of these slots, so the claim would not win")
    assert n.membership.me.incarnation == inc and n.slot_map.owner(THEIRS + 20) == "n2"
    n.claim_slots(f"{THEIRS + 5}-{THEIRS + 20}", 5, accept_loss=True)
    assert n.slot_map.owner(THEIRS + 20) == "n1"


# --- the peer door: one table --------------------------------------------------------------------


def test_the_dispatch_table_is_routing_migration_membership_and_the_group_each_once() -> None:
    from kvcore.replica import GROUP_MESSAGES

    n, _ = node()
    mine = {Forward, ForwardReply, Asking, MigrateKeys, MigrateAck}
    assert n._dispatch.handles == mine | set(n.membership.HANDLES) | set(GROUP_MESSAGES)
    assert not mine & set(n.membership.HANDLES)
    assert {c.__name__ for c in GROUP_MESSAGES} >= {"RaftVote", "RaftAppend", "ReplicaForward"}
    assert not {"Entry", "HardState", "Snapshot", "ConfChange"} & {c.__name__ for c in GROUP_MESSAGES}


def test_an_unknown_kind_is_counted_malformed_and_never_raises_even_a_subclass_of_a_known_one() -> None:
    class NotQuiteForward(Forward):
        pass

    n, rt = node()
    rt.take_sent()
    k = next(b"k%d" % i for i in range(1000) if n.slot_map.owner(key_slot(b"k%d" % i)) == "n1")
    for msg in (NotQuiteForward(request_id=1, op=Put(key=k, value=b"v")), 42, "Forward"):
        n.on_message("n2", msg)
    assert n.stats.malformed == 3
    assert n.store.get(k) is None and rt.take_sent() == []
    n.on_message("n2", Forward(request_id=2, op=Get(key=k)))  # the known kind still works
    assert n.stats.malformed == 3 and n.stats.forwards_received == 1
