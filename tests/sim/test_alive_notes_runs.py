"""Known-alive notes in whole runs: never more than the record, and the same run without them.

A node passes over a Gossip whose every update is an Alive its notes cover
(``Membership._apply_updates``). These runs (joins one by one, loss, partitions and their heal,
crashes and restarts that refute, a leave and reaps) check at every half second that no note of
any node says more than its record (the member held, alive, at the noted incarnation or more),
that the pass was taken, and that with the notes out of use (every look-up of a number fails)
the trace, the views and every node's counters and storage are the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import kvcore.membership.protocol as protocol
from kvcore.membership import SwimConfig
from kvcore.membership.member import ALIVE
from kvcore.membership.table import learned_record, numbers
from sim.cluster import SimCluster

from .test_join_equivalence import state_hash
from .test_shared_views import views_hash


def check_notes(c: SimCluster) -> int:
    """Assert every note of every live node is at most what its record says; how many notes."""
    by_number = {n: k for k, n in numbers.items()}
    count = 0
    for node in c.nodes():
        table = node.membership.members
        for n, b in enumerate(table.alive_known):
            if not b:
                continue
            count += 1
            m = table.get(by_number[n])
            assert m is not None, f"{node.id} notes {by_number[n]}, which it does not hold"
            assert m.state is ALIVE, f"{node.id} notes {by_number[n]} alive, held {m.state}"
            assert m.incarnation >= b - 1, f"{node.id} notes {by_number[n]} above its incarnation"
    return count


def build(seed: int, codec: bool) -> SimCluster:
    # reaped 4 s after they are dead or left, so that members leave tables and come back
    c = SimCluster(seed, 4, join="static", codec=codec, swim=SwimConfig.lan(reap_time=4.0))
    for i in range(40):
        c.add_node(f"j{i}", at=0.5 + i * 0.02)
    c.set_loss(0.03, at=1.0)
    c.run(until=2.0)  # every join under way: the faults below may name the joiners
    c.partition(["n1", "j3", "j7", "j11"], at=4.0)
    c.heal(at=12.0)
    c.crash("n3", at=6.0)
    c.restart("n3", at=9.0)
    c.crash("n2", at=14.0)  # stays down: declared dead, then reaped in time
    c.leave("j20", at=16.0)
    c.restart("n2", at=48.0)  # declared dead about 20 s, reaped from about 40 s: learned anew
    c.set_loss(0.0, at=20.0)
    return c


@contextmanager
def notes_out_of_use() -> Iterator[None]:
    saved = protocol.numbers
    protocol.numbers = {}  # type: ignore[misc]  # every number look-up fails: one by one
    try:
        yield
    finally:
        protocol.numbers = saved  # type: ignore[misc]


@pytest.mark.parametrize("codec", [False, True], ids=["objects", "codec"])
@pytest.mark.parametrize("seed", [1, 2])
def test_notes_never_say_more_than_the_record_and_change_nothing(seed: int, codec: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    passed = [0]
    original = protocol.Membership._apply_updates

    def counting(self: Any, updates: Any) -> None:
        before = self.counters.copy()
        original(self, updates)
        if type(updates) is tuple and updates and self.counters == before and all(
            type(u) is protocol.Alive and 0 <= numbers.get(u.node, -1) < len(self.members.alive_known)
            and self.members.alive_known[numbers[u.node]] > u.incarnation for u in updates
        ):
            passed[0] += 1

    monkeypatch.setattr(protocol.Membership, "_apply_updates", counting)
    c = build(seed, codec)
    noted = 0
    for k in range(5, 101):
        c.run(until=k * 0.5)
        noted = max(noted, check_notes(c))
    assert noted > 100 and passed[0] > 100  # the notes were used
    assert sum(n.membership.counters.get("reaped", 0) for n in c.nodes()) > 10  # and members left tables
    got = (c.digest(), views_hash(c), state_hash(c))
    monkeypatch.setattr(protocol.Membership, "_apply_updates", original)
    with notes_out_of_use():
        twin = build(seed, codec)
        twin.run(until=50.0)
    assert got == (twin.digest(), views_hash(twin), state_hash(twin))


def _plain_learn(self: Any, a: Any) -> None:
    """Membership._learn as the general rules compose it: _count, the queue, one shared record
    added by _add (index, probe round, _emit: storage and listeners), then its note."""
    self._count("learned")
    self.broadcasts.queue(a)
    m = learned_record(a, self.rt.now())
    self._add(m)
    self.members.note_alive(a.node, m)


@pytest.mark.parametrize("codec", [False, True], ids=["objects", "codec"])
def test_members_learned_straight_are_learned_as_the_merge_rules_learn_them(codec: bool,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A Gossip's Alive, or a full state's alive entry, about a member never heard of is learned
    straight (``_apply_updates``, ``_merge_states``): only where ``_in_range`` and ``_on_alive``
    would learn it, and the run is the one where every such update goes through them."""
    original = protocol.Membership._learn
    learned = [0]

    def checked(self: Any, a: Any) -> None:
        assert type(a) is protocol.Alive and a.node != self.id and a.node not in self.members
        assert a.epoch <= protocol.MAX_ACCEPTED
        learned[0] += 1
        original(self, a)

    monkeypatch.setattr(protocol.Membership, "_learn", checked)
    c = build(1, codec)
    c.run(until=50.0)
    got = (c.digest(), views_hash(c), state_hash(c))
    assert learned[0] > 1000

    def through_the_rules(self: Any, a: Any) -> None:
        if getattr(self, "_in_rules", False):  # _on_alive's own call: the plain learn
            _plain_learn(self, a)
            return
        self._in_rules = True
        try:
            if self._in_range(a):
                self._on_alive(a)
        finally:
            self._in_rules = False

    monkeypatch.setattr(protocol.Membership, "_learn", through_the_rules)
    twin = build(1, codec)
    twin.run(until=50.0)
    assert got == (twin.digest(), views_hash(twin), state_hash(twin))
