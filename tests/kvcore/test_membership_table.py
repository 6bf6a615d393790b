"""Shared member tables (copy on write), shared pools, lazy probe rounds, and the bulk paths of
the broadcast queue and the slot map: each gives what the plain structure it replaces gave.

The rule these tests pin: nodes built from one static configuration share what they know alike,
and a node that learns otherwise never changes another node's view.
"""

from __future__ import annotations

import bisect
import itertools
import random
from itertools import islice
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcore import codec
from kvcore.membership import ALIVE, SUSPECT, BroadcastQueue, Member, Membership, SwimConfig
from kvcore.membership import probe as probe_module
from kvcore.membership.member import encode_member
from kvcore.membership.table import LazyRound, MemberTable, SortedIds, StaticView, static_view
from kvcore.messages import Alive, Dead, Gossip, MemberState, PushPull, Suspect
from kvcore.runtime import FakeRuntime
from kvcore.slots import NUM_SLOTS, SlotMap

STATIC = [(f"n{i}", f"a-n{i}", f"p-n{i}", f"{(i - 1) * 100}-{i * 100 - 1}", 1) for i in range(1, 9)]


def _membership(node: str, static: Any = STATIC, *, quiet: bool = True, seed: int = 0) -> Membership:
    rt = FakeRuntime(node, seed=seed)
    sent: list[tuple[str, Any]] = []
    m = Membership(rt, lambda dst, msg: sent.append((dst, msg)), SwimConfig.lan(), f"a-{node}", f"p-{node}")
    m.add_static(static, quiet=quiet)
    return m


# --- sharing and copy on write ----------------------------------------------------------------


def test_nodes_of_one_static_config_share_the_records_of_their_members() -> None:
    a, b = _membership("n1"), _membership("n2")
    assert a.members.view is b.members.view is not None
    assert a.members.is_shared("n3") and b.members.is_shared("n3")
    assert a.members["n3"] is b.members["n3"]
    # each node's own entry is its own
    assert a.members["n1"] is a.me and not a.members.is_shared("n1")
    assert a.me.slots == "0-99" and a.me.epoch == 1


def test_a_node_that_learns_otherwise_does_not_change_another_nodes_view() -> None:
    a, b = _membership("n1"), _membership("n2")
    before = b.view()
    a.apply(Suspect(node="n3", incarnation=0, source="n1"))
    a.apply(Alive(node="n4", incarnation=3, addr="x", peer_addr="y", slots="400-450", epoch=2))
    a.apply(Dead(node="n5", incarnation=0, source="n1"))
    assert a.state_of("n3") == SUSPECT and a.state_of("n5") is not None and a.state_of("n5") != ALIVE
    assert a.members["n4"].incarnation == 3 and a.members["n4"].peer_addr == "y"
    assert not a.members.is_shared("n3")
    # the other node, and the shared records themselves, are as they were
    assert b.view() == before
    assert b.state_of("n3") == ALIVE and b.members["n4"].incarnation == 0
    view = b.members.view
    assert view is not None and view.records["n3"].state == ALIVE and view.records["n4"].peer_addr == "p-n4"


def test_shared_and_unshared_static_views_are_the_same_view() -> None:
    shared, plain = _membership("n3"), _membership("n3", quiet=False)
    assert shared.members.view is not None and plain.members.view is None
    assert shared.view() == plain.view()
    assert sorted(shared.members) == sorted(plain.members) and len(shared.members) == len(plain.members)
    assert list(shared._live_ids) == list(plain._live_ids) == [f"n{i}" for i in range(1, 9) if i != 3]
    assert shared._local_state() == plain._local_state()
    # an unchanged node sends the view's own tuple, shared by every such node
    assert shared._local_state() is _membership("n5")._local_state()


def test_a_quiet_static_add_tells_listeners_of_our_own_entry_only() -> None:
    heard: list[tuple[str, str]] = []
    rt = FakeRuntime("n1")
    m = Membership(rt, lambda d, x: None, SwimConfig.lan(), "a-n1", "p-n1")
    m.listeners.append(lambda event, nid, _m: heard.append((str(event), nid)))
    m.add_static(STATIC, quiet=True)
    assert heard == [("update", "n1")]


def test_push_pull_state_after_a_change_is_the_changed_view_in_id_order() -> None:
    a = _membership("n1")
    a.apply(Suspect(node="n3", incarnation=0, source="n1"))
    a.apply(Alive(node="n0", incarnation=0, addr="x", peer_addr="y", slots="", epoch=0))
    states = a._local_state()
    assert [s.node for s in states] == sorted(a.members)
    assert {s.node: s.state for s in states}["n3"] == "suspect"
    assert states == tuple(a.members[k].to_state() for k in sorted(a.members))


def test_merging_the_very_tuple_we_hold_is_merging_an_equal_one() -> None:
    """The identity shortcut of the push-pull merge changes nothing the rules would not."""
    results = []
    for copy in (False, True):
        a, b = _membership("n1"), _membership("n2")
        b.apply(Suspect(node="n4", incarnation=0, source="n2"))
        a.apply(Suspect(node="n4", incarnation=0, source="n1"))
        state = b._local_state()
        if copy:
            state = codec.roundtrip(PushPull(join=False, reply=False, members=state)).members
        a.handle("n2", PushPull(join=False, reply=False, members=state))
        results.append((a.view(), a.counters, sorted(a._suspicions["n4"].confirmations)))
    assert results[0] == results[1]


# --- MemberTable --------------------------------------------------------------------------------


def _record(nid: str, inc: int = 0) -> Member:
    return Member(nid, "a-" + nid, "p-" + nid, inc)


def test_member_table_reads_writes_and_hides_over_a_shared_base() -> None:
    view = StaticView([(n, "a", "p", "", 0) for n in ("a", "b", "c", "d")], 0.0)
    t = MemberTable()
    mine = t["a"] = _record("a")
    t.set_base(view)
    assert len(t) == 4 and sorted(t) == ["a", "b", "c", "d"] and "c" in t and "z" not in t
    assert t["a"] is mine and t.get("c") is view.records["c"] and t.get("z") is None
    w = t.writable("c")
    w.incarnation = 7
    assert t["c"].incarnation == 7 and view.records["c"].incarnation == 0
    del t["b"]
    assert "b" not in t and t.get("b") is None and len(t) == 3 and view.records["b"].node == "b"
    t["b"] = _record("b", 2)
    assert t["b"].incarnation == 2 and len(t) == 4
    t["e"] = _record("e")
    assert len(t) == 5
    del t["e"]
    assert "e" not in t and len(t) == 4
    t["f"] = _record("f")
    assert list(t) == ["a", "b", "c", "d", "f"]  # the base's order, then our own additions
    try:
        t.set_base(view)
    except ValueError:
        pass
    else:
        raise AssertionError("a table that holds a base takes no other")
    fresh = MemberTable()
    fresh["zz"] = _record("zz")
    try:
        fresh.set_base(view)
    except ValueError:
        pass
    else:
        raise AssertionError("a table holding a member the view lacks takes no base")


def test_static_view_is_shared_for_one_list_at_one_time() -> None:
    members = list(STATIC)
    assert static_view(members, 0.0) is static_view(members, 0.0)
    assert static_view(members, 1.0) is not static_view(members, 0.0)
    assert static_view(list(STATIC), 1.0) is not static_view(members, 1.0)


# --- SortedIds ------------------------------------------------------------------------------

_ids = st.sampled_from([f"m{i:02d}" for i in range(30)])


@settings(max_examples=150, deadline=None)
@given(st.lists(_ids, unique=True), st.one_of(st.none(), _ids),
       st.lists(st.tuples(st.sampled_from(["add", "remove", "snapshot"]), _ids), max_size=30))
def test_sorted_ids_behave_as_the_sorted_list_without_the_hidden_entry(
    base: list[str], hide: str | None, ops: list[tuple[str, str]]
) -> None:
    shared = sorted(base)
    pool = SortedIds(shared, hide=hide)
    model = [x for x in shared if x != hide]
    snaps: list[tuple[tuple[list[str], int], list[str]]] = []
    for op, x in ops:
        if op == "add" and x not in model:
            pool.insort(x)
            bisect.insort(model, x)
        elif op == "remove":
            assert pool.discard(x) == (x in model)
            if x in model:
                model.remove(x)
        elif op == "snapshot":
            snaps.append((pool.snapshot(), list(model)))
        assert len(pool) == len(model) and list(pool) == model
        assert [pool[i] for i in range(len(pool))] == model
        assert all((y in pool) == (y in model) for y in ("m00", "m15", "m29", x))
    assert shared == sorted(base)  # the shared list itself never changed
    for (items, skip), then in snaps:
        assert [y for i, y in enumerate(items) if i != skip] == then


# --- LazyRound ------------------------------------------------------------------------------


def test_a_lazy_round_visits_every_member_once_late_ones_included() -> None:
    items = [f"m{i}" for i in range(50)]
    rnd = random.Random(4)
    r = LazyRound((items, 7))
    seen = []
    for k in itertools.count():
        if k == 20:
            r.insert("late1")
            r.insert("late2")
        nid = r.next(rnd)
        if nid is None:
            break
        seen.append(nid)
    assert sorted(seen) == sorted([x for i, x in enumerate(items) if i != 7] + ["late1", "late2"])
    assert r.next(rnd) is None and r.remaining() == 0


def test_a_lazy_round_draws_every_order_about_equally_often() -> None:
    counts: dict[tuple[str, ...], int] = {}
    for seed in range(1200):
        r = LazyRound((["a", "b", "c", "x"], 3))
        rnd = random.Random(seed)
        order = tuple(r.next(rnd) or "" for _ in range(3))
        assert r.next(rnd) is None
        counts[order] = counts.get(order, 0) + 1
    assert len(counts) == 6 and all(150 <= c <= 250 for c in counts.values()), counts


def test_a_large_pool_is_probed_in_lazy_rounds_each_member_once_per_round(monkeypatch: Any) -> None:
    monkeypatch.setattr(probe_module, "LAZY_ROUND_MIN", 4)
    m = _membership("n1")
    m.running = True
    targets = []
    for _ in range(2 * 7):
        t = m._next_probe_target()
        assert t is not None
        targets.append(t)
    assert m._lazy_round is not None
    peers = sorted(f"n{i}" for i in range(2, 9))
    assert sorted(targets[:7]) == peers and sorted(targets[7:]) == peers


# --- members learned at run time: one shared record per Alive -------------------------------


def _joiner(node: str) -> Membership:
    rt = FakeRuntime(node, seed=1)
    return Membership(rt, lambda dst, msg: None, SwimConfig.lan(), f"a-{node}", f"p-{node}")


def test_nodes_that_learn_a_member_from_the_same_alive_share_one_record() -> None:
    a, b = _joiner("j1"), _joiner("j2")
    news = Alive(node="j9", incarnation=2, addr="a-j9", peer_addr="p-j9", slots="", epoch=0)
    a.apply(news)
    b.apply(Alive(node="j9", incarnation=2, addr="a-j9", peer_addr="p-j9", slots="", epoch=0))  # equal
    assert a.members["j9"] is b.members["j9"] and a.members["j9"].shared
    # its MemberState is built once, and both nodes' full states carry that one object
    assert a.members["j9"].to_state() is b.members["j9"].to_state()
    # and so is what both keep of it in their storage
    assert a.rt.storage.get("member:j9") is b.rt.storage.get("member:j9") is not None
    assert a.rt.storage.get("member:j9") == encode_member(a.members["j9"])
    # other news is another record
    b.apply(Alive(node="j8", incarnation=0, addr="a-j8", peer_addr="p-j8", slots="", epoch=0))
    assert "j8" not in a.members


def test_nodes_that_learn_from_full_state_pass_on_one_alive_object() -> None:
    a, b = _joiner("p1"), _joiner("p2")
    state = (MemberState(node="p9", incarnation=3, state="alive", addr="a-p9", peer_addr="p-p9", slots="1-2",
                         epoch=4),)
    a.handle("p5", PushPull(join=False, reply=True, members=state))
    b.handle("p6", PushPull(join=False, reply=True, members=tuple(codec.roundtrip(PushPull(
        join=False, reply=True, members=state)).members)))  # an equal state, other objects
    (ua,), (ub,) = a.broadcasts.take(5, 5), b.broadcasts.take(5, 5)
    assert ua is ub and ua == Alive(node="p9", incarnation=3, addr="a-p9", peer_addr="p-p9", slots="1-2", epoch=4)
    assert a.members["p9"] is b.members["p9"] and a.members["p9"].incarnation == 3


def test_a_node_that_changes_a_shared_learned_record_changes_its_own_copy() -> None:
    a, b = _joiner("k1"), _joiner("k2")
    news = Alive(node="k9", incarnation=0, addr="a-k9", peer_addr="p-k9", slots="", epoch=0)
    a.apply(news)
    b.apply(news)
    shared = b.members["k9"]
    a.apply(Suspect(node="k9", incarnation=0, source="k1"))
    a.apply(Alive(node="k9", incarnation=1, addr="a-k9", peer_addr="p-k9", slots="0-9", epoch=2))
    assert a.members["k9"] is not shared and not a.members["k9"].shared
    assert (a.members["k9"].incarnation, a.members["k9"].slots) == (1, "0-9")
    assert b.members["k9"] is shared and (shared.state, shared.incarnation, shared.slots) == (ALIVE, 0, "")
    assert shared.to_state().incarnation == 0 and a.members["k9"].to_state().incarnation == 1
    # a copy is equal to what it was copied from: the marks are no part of a record's value
    assert shared.copy() == shared and not shared.copy().shared


def test_the_full_state_of_a_node_that_joined_is_every_records_state_in_id_order() -> None:
    a = _joiner("s1")
    for i in (7, 3, 9, 1, 5):
        a.handle("s2", Gossip(updates=(Alive(node=f"s{i}x", incarnation=i % 3, addr="a", peer_addr="p",
                                             slots="", epoch=0),)))
    a.apply(Suspect(node="s3x", incarnation=0, source="s1"))  # a record of its own: copied, not shared
    a.handle("s2", PushPull(join=False, reply=True, members=(MemberState(
        node="s0x", incarnation=1, state="dead", addr="a", peer_addr="p", slots="4-5", epoch=3),)))
    assert a.members.view is None  # a node that joined holds every record itself
    for _ in range(2):  # built, then again with the shared records' states kept
        got = a.members.states()
        want = tuple(a.members[k].to_state() for k in sorted(a.members))
        assert got == want and [s.node for s in got] == sorted(a.members)
        for s in got:
            m = a.members[s.node]
            assert (s is m.to_state()) == m.shared  # a shared record's kept state, one object


# --- the broadcast queue's bulk take against the one-at-a-time original ------------------------


class _ReferenceQueue:
    """BroadcastQueue as it was: items moved one at a time (the order the bulk take keeps)."""

    def __init__(self) -> None:
        self.levels: list[dict[str, Any]] = [{}]
        self.where: dict[str, int] = {}

    def queue(self, msg: Any) -> None:
        lvl = self.where.pop(msg.node, None)
        if lvl is not None:
            del self.levels[lvl][msg.node]
        self.levels[0][msg.node] = msg
        self.where[msg.node] = 0

    def take(self, limit: int, max_transmits: int) -> list[Any]:
        out: list[Any] = []
        moved = []
        for lvl, bucket in enumerate(self.levels):
            need = limit - len(out)
            if need <= 0:
                break
            for key, msg in islice(reversed(bucket.items()), need):
                out.append(msg)
                moved.append((key, msg, lvl))
        for key, msg, lvl in reversed(moved):
            del self.levels[lvl][key]
            if lvl + 1 >= max_transmits:
                del self.where[key]
                continue
            while len(self.levels) <= lvl + 1:
                self.levels.append({})
            self.levels[lvl + 1][key] = msg
            self.where[key] = lvl + 1
        return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("q"), st.integers(0, 40), st.integers(0, 3)),
                          st.tuples(st.just("t"), st.integers(1, 8), st.integers(1, 6))), max_size=120))
def test_bulk_take_gives_what_one_at_a_time_gave(ops: list[tuple[str, int, int]]) -> None:
    q, ref = BroadcastQueue(), _ReferenceQueue()
    for op, a, b in ops:
        if op == "q":
            msg = Alive(node=f"m{a}", incarnation=b, addr="x", peer_addr="y", slots="", epoch=0)
            q.queue(msg)
            ref.queue(msg)
        else:
            assert q.take(a, b) == ref.take(a, b)
        assert len(q) == len(ref.where)


def test_a_long_drain_stays_cheap_and_in_order() -> None:
    q, ref = BroadcastQueue(), _ReferenceQueue()
    for i in range(3000):
        msg = Alive(node=f"m{i}", incarnation=0, addr="x", peer_addr="y", slots="", epoch=0)
        q.queue(msg)
        ref.queue(msg)
    while len(q):
        assert q.take(16, 12) == ref.take(16, 12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("q"), st.integers(0, 5), st.integers(0, 2)),
                          st.tuples(st.just("r"), st.integers(0, 30), st.integers(0, 0)),
                          st.tuples(st.just("t"), st.integers(0, 5), st.integers(1, 6))), max_size=300))
def test_replaced_updates_are_passed_over_as_one_at_a_time_removed_them(ops: list[tuple[str, int, int]]) -> None:
    # few members, many replacements: stale updates in every level, passed over or removed;
    # "r" queues again an update object queued before (perhaps the very one still queued)
    q, ref = BroadcastQueue(), _ReferenceQueue()
    made: list[Any] = []
    for op, a, b in ops:
        if op in "qr":
            if op == "q" or not made:
                msg: Any = (Alive(node=f"m{a}", incarnation=b, addr="x", peer_addr="y", slots="", epoch=0)
                            if b < 2 else Suspect(node=f"m{a}", incarnation=b, source="x"))
                made.append(msg)
            else:
                msg = made[a % len(made)]
            q.queue(msg)
            ref.queue(msg)
        else:
            assert q.take(a, b) == ref.take(a, b)
        assert len(q) == len(ref.where) and bool(q.queued) == bool(ref.where)


def test_requeueing_the_very_same_update_sends_it_from_zero_once() -> None:
    q, ref = BroadcastQueue(), _ReferenceQueue()
    msgs = [Alive(node=f"m{i}", incarnation=0, addr="x", peer_addr="y", slots="", epoch=0) for i in range(50)]
    for m in msgs:
        q.queue(m)
        ref.queue(m)
    assert q.take(20, 8) == ref.take(20, 8)
    for _ in range(3):  # the very same objects again, over and over
        for m in msgs[::2]:
            q.queue(m)
            ref.queue(m)
    while len(ref.where):
        assert q.take(7, 8) == ref.take(7, 8)
    assert len(q) == 0 and not q.queued


# --- SlotMap: shared on copy, claims in slices ----------------------------------------------------


def _reference_claim(owners: list[Any], epochs: list[int], ranges: Any, node: Any, epoch: int) -> int:
    changed = 0
    for lo, hi in ranges:
        for s in range(lo, hi + 1):
            if epoch > epochs[s]:
                epochs[s] = epoch
                if owners[s] != node:
                    owners[s] = node
                    changed += 1
    return changed


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, NUM_SLOTS - 1), st.integers(0, 300), st.sampled_from(["a", "b", None]),
                          st.integers(0, 5)), max_size=12))
def test_claims_in_slices_give_what_claims_slot_by_slot_gave(claims: list[tuple[int, int, Any, int]]) -> None:
    m = SlotMap()
    owners: list[Any] = [None] * NUM_SLOTS
    epochs = [0] * NUM_SLOTS
    for lo, width, node, epoch in claims:
        hi = min(NUM_SLOTS - 1, lo + width)
        got = m.claim([(lo, hi)], node, epoch)
        want = _reference_claim(owners, epochs, [(lo, hi)], node, epoch)
        assert got == want
        assert [m.owner(s) for s in range(NUM_SLOTS)] == owners and [m.epoch(s) for s in range(NUM_SLOTS)] == epochs


def test_copies_of_a_slot_map_share_until_one_changes() -> None:
    orig = SlotMap.from_assignment({"a": [(0, NUM_SLOTS - 1)]}, 1)
    x, y = orig.copy(), orig.copy()
    x.claim([(0, 99)], "b", 2)
    y.release("a", 5)
    assert orig.owner(0) == "a" and orig.epoch(0) == 1 and orig.covers_all()
    assert x.owner(0) == "b" and x.owner(100) == "a"
    assert y.owner(0) is None and y.owner(100) is None
    orig.claim([(200, 200)], "c", 3)
    assert x.owner(200) == "a" and y.owner(200) is None and orig.owner(200) == "c"
