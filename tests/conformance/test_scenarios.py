"""The same scenario bodies against the sim and against real processes.

Each test is one plain function of a :class:`~tests.conformance.worlds.World`, run once per
world. The assertions are the same in both arms; where the worlds may legitimately differ (how
long something takes, which of two error codes a request gets at a given moment) the scenario
accepts the same *set* of outcomes in both and says why in a comment. If both arms pass, what
the sim shows about these behaviours holds for real processes too.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import pytest

from kvcore.slots import even_split, key_slot
from tests.conformance.worlds import FAILURES, WORLDS, Outcome, World
from tests.realnet.conftest import keys_in

OK = Outcome()
#: Limits small enough that "over the limit" is cheap to send.
LIMITS = {"max_key_bytes": 64, "max_value_bytes": 1024}
#: Errors that say "certainly not applied, try again": a key in flight to a slot's new owner
#: (try_again), a forward that met a node whose map had already moved on (wrong_node).
RETRY = frozenset({"try_again", "wrong_node"})
#: What a request for a crashed owner's slots gets while it is down: forward_timeout until the
#: forwarder's failure detector has noticed (the owner never answers), owner_down from then on.
#: Which one a given request gets depends on timings, which differ between the worlds (a
#: simulated detector and real processes); the set is the same.
DOWN = frozenset({"owner_down", "forward_timeout"})


def owned_by(ids: list[str], owner: str, n: int, prefix: str) -> list[bytes]:
    """``n`` keys whose slots ``owner`` holds in the even split both worlds start from."""
    lo, hi = even_split(ids)[owner][0]
    return keys_in(lo, hi, n, prefix=prefix)


def eventually(world: World, op: Callable[[], Outcome], want: Outcome, allowed: Collection[str],
               timeout: float = 20.0, what: str = "") -> None:
    """Repeat ``op`` until it gives ``want``; any other outcome must be an error in ``allowed``."""

    def attempt() -> bool:
        got = op()
        if got == want:
            return True
        assert got.error in allowed, (what, got)
        return False

    world.wait_until(attempt, timeout, what or f"{want}")


@pytest.mark.parametrize("world", WORLDS, indirect=True)
def test_standalone_set_get_delete_and_errors(world: World) -> None:
    n = world.start_standalone(LIMITS)
    assert world.get(n, b"k") == Outcome("not_found")
    assert world.set(n, b"k", b"v1") == OK
    assert world.get(n, b"k") == Outcome("", b"v1")
    assert world.set(n, b"k", b"v2") == OK  # an upsert
    assert world.get(n, b"k") == Outcome("", b"v2")
    assert world.set(n, b"empty", b"") == OK  # an empty value is a value, not an absence
    assert world.get(n, b"empty") == Outcome("", b"")
    assert world.delete(n, b"k") == OK
    assert world.get(n, b"k") == Outcome("not_found")
    assert world.delete(n, b"k") == Outcome("not_found")

    assert world.set(n, b"", b"v") == Outcome("bad_request")
    assert world.get(n, b"") == Outcome("bad_request")
    assert world.delete(n, b"") == Outcome("bad_request")

    at_limit, over = b"x" * LIMITS["max_key_bytes"], b"x" * (LIMITS["max_key_bytes"] + 1)
    assert world.set(n, at_limit, b"v") == OK
    assert world.get(n, at_limit) == Outcome("", b"v")
    assert world.set(n, over, b"v") == Outcome("too_large")
    assert world.get(n, over) == Outcome("too_large")
    assert world.delete(n, over) == Outcome("too_large")

    big = b"v" * LIMITS["max_value_bytes"]
    assert world.set(n, b"big", big) == OK
    assert world.get(n, b"big") == Outcome("", big)
    assert world.set(n, b"big", big + b"!") == Outcome("too_large")
    assert world.get(n, b"big") == Outcome("", big)  # the refused write changed nothing


@pytest.mark.parametrize("world", WORLDS, indirect=True)
def test_three_nodes_forward_to_the_owner(world: World) -> None:
    ids = world.start_cluster(3)
    key, other = owned_by(ids, "c", 2, prefix="fwd")
    for n in ids:
        assert world.owner_of(key, via=n) == "c"
    assert world.set("a", key, b"v1") == OK  # a does not own the slot: forwarded to c
    for n in ids:
        assert world.get(n, key) == Outcome("", b"v1")
    assert world.set("c", key, b"v2") == OK
    assert world.get("b", key) == Outcome("", b"v2")
    assert world.delete("b", key) == OK  # deleted through another non-owner
    for n in ids:
        assert world.get(n, key) == Outcome("not_found")
    # not_found is the owner's answer carried back through the forward, for delete as for get
    assert world.delete("a", key) == Outcome("not_found")
    assert world.get("a", other) == Outcome("not_found")
    # a request the entry node refuses never travels: same error whoever owns the slot
    assert world.set("a", b"", b"v") == Outcome("bad_request")


@pytest.mark.parametrize("world", WORLDS, indirect=True)
def test_a_slot_moved_under_writes_keeps_every_acknowledged_write(world: World) -> None:
    ids = world.start_cluster(3)
    keys = [b"{moving}k%d" % i for i in range(120)]  # one hash tag: every key in one slot
    slot = key_slot(keys[0])
    source = world.owner_of(keys[0], via="a")
    target = next(n for n in ids if n != source)
    acked: dict[bytes, bytes] = {}
    seen: set[str] = set()
    count = [0]

    def write() -> None:
        """One write of a fresh value, through each node in turn, retried while refused."""
        i = count[0]
        count[0] += 1
        key, value, via = keys[i % len(keys)], b"w%d" % i, ids[i % len(ids)]
        while (got := world.set(via, key, value)) != OK:
            # any other error (forward_timeout: outcome unknown) would make the check below
            # unsound, and a steady cluster must not give one
            assert got.error in RETRY, (key, value, via, got)
            seen.add(got.error)
        acked[key] = value

    for _ in keys:
        write()
    world.move_slot(slot, target, batch=10)
    during = count[0]

    def write_until_moved() -> bool:
        write()
        return world.moved(slot, target)

    world.wait_until(write_until_moved, 30.0, f"slot {slot} to move from {source} to {target}")
    assert count[0] > during, "no write went on while the slot moved"
    for _ in range(len(ids) * 3):  # and after it, through every node
        write()

    for n in ids:
        assert world.owner_of(keys[0], via=n) == target
    for key, value in acked.items():
        for n in ids:
            # the last acknowledged value, from every node: none lost, none replaced by an
            # earlier write that was acknowledged too
            assert world.get(n, key) == Outcome("", value), (key, n)
    assert seen <= RETRY


@pytest.mark.parametrize("world", WORLDS, indirect=True)
def test_a_crashed_owner_fails_fast_and_serves_its_keys_after_a_restart(world: World) -> None:
    ids = world.start_cluster(3, FAILURES)
    *mine, spare = owned_by(ids, "c", 5, prefix="dur")
    for k in mine:
        assert world.set("a", k, k) == OK  # acknowledged by c, durably
    fresh = owned_by(ids, "a", 1, prefix="dur")[0]

    world.crash("c")
    for n in ("a", "b"):
        assert world.get(n, mine[0]).error in DOWN
    # (a key of its own: a forward_timeout leaves the write's outcome unknown)
    assert world.set("b", spare, b"lost?").error in DOWN
    # ...and once the detector has spoken, every such request is refused at once
    world.wait_until(lambda: all(world.get(n, mine[0]) == Outcome("owner_down") for n in ("a", "b")),
                     20.0, "owner_down for c's slots")
    # the other slots keep working (a write forwarded from b to a). owner_down is allowed for a
    # moment: on a busy machine a stalled live process can be taken for dead before it refutes
    eventually(world, lambda: world.set("b", fresh, b"still"), OK, {"owner_down"})

    world.restart("c")
    # until c has rejoined, its slots may still fail as while it was down, or with try_again
    # (a restarted node serves nothing until it has synced with a member)
    for k in mine:
        for n in ids:
            eventually(world, lambda n=n, k=k: world.get(n, k), Outcome("", k), DOWN | {"try_again"},
                       what=f"{k!r} back at {n}")
    assert world.set("c", fresh, b"after") == OK
    assert world.get("a", fresh) == Outcome("", b"after")


#: What a replicated group may answer while it elects a leader: no leader known yet (certainly
#: not applied), or no answer in time (the outcome unknown: the write may still be applied).
ELECTING = frozenset({"no_leader", "forward_timeout", "unreachable"})


@pytest.mark.parametrize("world", WORLDS, indirect=True)
def test_a_replicated_group_serves_through_every_node_and_keeps_every_acknowledged_write(world: World) -> None:
    """R = 3 (issue #11): any node takes any request; the leader's crash costs an election, not
    a write; the old leader comes back as a follower with everything it missed."""
    ids = world.start_group(3)
    lead = world.wait_until(world.leader, 20.0, "a leader")
    for i, n in enumerate(ids):
        eventually(world, lambda n=n, i=i: world.set(n, b"g%d" % i, b"v%d" % i), OK, ELECTING)
    for i in range(len(ids)):
        for n in ids:  # ReadIndex at every node: each sees every write acknowledged before
            assert world.get(n, b"g%d" % i) == Outcome("", b"v%d" % i)
    assert world.delete(ids[0], b"g0") == OK and world.get(ids[1], b"g0") == Outcome("not_found")

    world.crash(lead)
    rest = [n for n in ids if n != lead]
    world.wait_until(lambda: world.leader() not in (None, lead), 20.0, "a new leader")
    acked: list[bytes] = []
    for i in range(6):
        k = b"after%d" % i
        eventually(world, lambda k=k, i=i: world.set(rest[i % 2], k, k), OK, ELECTING)
        acked.append(k)
    world.restart(lead)
    for k in acked:  # the restarted node catches up, then reads its own copy
        eventually(world, lambda k=k: world.get(lead, k), Outcome("", k), ELECTING | {"try_again"},
                   what=f"{k!r} at the old leader")
    assert world.get(lead, b"g1") == Outcome("", b"v1")
