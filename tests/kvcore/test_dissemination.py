"""Dissemination's hot path against simple reference models (SWIM §4.1).

The broadcast queue's take (one slice when one level holds the batch, a hint that skips the empty
levels below), the gossip round's target draws (randrange inlined: the same numbers in the same
order, the generator left in the same state) and the round itself (one retransmit limit per
round, messages until the queue is empty) are each checked against a model written the plain way.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kvcore.membership import BroadcastQueue, Membership, SwimConfig
from kvcore.membership.formulas import retransmit_limit
from kvcore.messages import Alive, Dead, Gossip, Suspect
from kvcore.runtime import FakeRuntime

# --- the broadcast queue ----------------------------------------------------------------------


class _PlainQueue:
    """memberlist's TransmitLimitedQueue the plain way: (transmits, arrival) per member, and a
    take that sorts everything. Within a level the last to arrive goes first; a batch moved up
    together arrives there in the order it was taken, newest last."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[int, int, Any]] = {}  # member -> (transmits, arrival, msg)
        self.clock = 0

    def queue(self, msg: Any) -> None:
        self.clock += 1
        self.items[msg.node] = (0, self.clock, msg)

    def take(self, limit: int, max_transmits: int) -> list[Any]:
        ranked = sorted(self.items.items(), key=lambda kv: (kv[1][0], -kv[1][1]))[:max(0, limit)]
        out = [msg for _k, (_t, _a, msg) in ranked]
        # the batch moves up oldest first, the lowest level's part last (it hands on first)
        by_level: dict[int, list[tuple[str, Any]]] = {}
        for key, (t, _a, msg) in ranked:
            by_level.setdefault(t, []).append((key, msg))
        for t in sorted(by_level, reverse=True):
            for key, msg in reversed(by_level[t]):
                self.clock += 1
                if t + 1 >= max_transmits:
                    del self.items[key]
                else:
                    self.items[key] = (t + 1, self.clock, msg)
        return out


def _alive(i: int, inc: int = 0) -> Alive:
    return Alive(node=f"m{i}", incarnation=inc, addr="x", peer_addr="y", slots="", epoch=0)


def _low_is_a_floor(q: BroadcastQueue) -> bool:
    return all(not level for level in q._levels[:q._low])


_ops = st.lists(st.one_of(
    st.tuples(st.just("burst"), st.integers(0, 60), st.integers(1, 40)),  # queue members a..a+b
    st.tuples(st.just("one"), st.integers(0, 80), st.integers(0, 3)),     # one member, inc b
    st.tuples(st.just("take"), st.integers(0, 20), st.integers(1, 7)),    # take(a, b)
), max_size=80)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_take_gives_what_the_plain_queue_gives(ops: list[tuple[str, int, int]]) -> None:
    q, ref = BroadcastQueue(), _PlainQueue()
    for op, a, b in ops:
        if op == "take":
            assert q.take(a, b) == ref.take(a, b)
            assert _low_is_a_floor(q)
        else:
            msgs = [_alive(i) for i in range(a, a + b)] if op == "burst" else [_alive(a, b)]
            for msg in msgs:
                q.queue(msg)
                ref.queue(msg)
        assert len(q) == len(ref.items) and set(q.queued) == set(ref.items)
    while ref.items:  # and it drains the same way to the end
        assert q.take(16, 4) == ref.take(16, 4)
    assert not q.queued and q.take(16, 4) == []


def test_a_full_level_goes_in_one_slice_newest_first_and_moves_up_whole() -> None:
    q = BroadcastQueue()
    for i in range(40):
        q.queue(_alive(i))
    assert [u.node for u in q.take(16, 3)] == [f"m{i}" for i in range(39, 23, -1)]
    assert [u.node for u in q._levels[1]] == [f"m{i}" for i in range(24, 40)]
    assert [u.node for u in q.take(16, 3)] == [f"m{i}" for i in range(23, 7, -1)]
    # level 0 holds 8: the batch spans two levels (8 never sent, then 8 sent once, the last
    # to arrive there first)
    batch = [u.node for u in q.take(16, 3)]
    assert batch == [f"m{i}" for i in range(7, -1, -1)] + [f"m{i}" for i in range(23, 15, -1)]
    assert _low_is_a_floor(q)
    q.take(1, 3)  # the hint moves up when a take finds level 0 empty
    assert q._low == 1 and _low_is_a_floor(q)


def test_the_hint_goes_back_to_level_zero_when_news_arrives() -> None:
    q = BroadcastQueue()
    for i in range(20):
        q.queue(_alive(i))
    q.take(16, 5)
    q.take(16, 5)  # level 0 is empty now
    q.take(1, 5)  # and this take started at level 1
    assert q._low == 1
    q.queue(_alive(99))
    assert q._low == 0
    assert q.take(1, 5)[0].node == "m99"  # the news goes first


def test_a_stale_update_in_the_batch_is_passed_over_in_the_one_level_case() -> None:
    q = BroadcastQueue()
    for i in range(20):
        q.queue(_alive(i))
    q.take(4, 10)  # m16..m19 move up
    q.queue(Suspect(node="m10", incarnation=0, source="x"))  # m10's Alive in level 0 goes stale
    out = q.take(16, 10)
    assert out[0].node == "m10" and isinstance(out[0], Suspect)
    assert sum(u.node == "m10" for u in out) == 1
    assert not any(isinstance(u, Alive) and u.node == "m10" for level in q._levels for u in level)


def test_the_last_transmit_leaves_the_queue() -> None:
    q = BroadcastQueue()
    for i in range(16):
        q.queue(_alive(i))
    assert len(q.take(16, 1)) == 16
    assert not q.queued and not any(q._levels)


# --- the gossip round's draws -----------------------------------------------------------------


class _OwnRandom(random.Random):
    """A generator with its own ``random()``: its ``randrange`` does not draw with getrandbits,
    so the inlined draw must step aside for it."""

    def random(self) -> float:
        return super().random()


def _membership(peers: int, seed: int, rng: random.Random | None = None, **config: Any) -> Membership:
    rt = FakeRuntime("n0", seed=seed)
    if rng is not None:
        rt.random = rng
    cfg = SwimConfig.lan(**config)
    m = Membership(rt, rt.send, cfg, "a-n0", "p-n0")
    m.add_static([(f"n{i}", f"a-n{i}", f"p-n{i}", "", 0) for i in range(peers + 1)])
    return m


def _plain_targets(m: Membership, count: int) -> list[str]:
    """_gossip_targets as it is written in memberlist terms: randrange per try."""
    live = list(m._live_ids)
    now = m.rt.now()
    recent = [n for n in m._dead_ids if now - m.members[n].state_change < m.config.gossip_to_the_dead_time]
    pool = live + recent
    want = min(count, len(pool))
    out: list[str] = []
    tries = 0
    while len(out) < want and tries < 4 * count + 8:
        tries += 1
        nid = pool[m.rt.random.randrange(len(pool))]
        if nid not in out:
            out.append(nid)
    return out


@settings(max_examples=60, deadline=None)
@given(peers=st.integers(0, 70), dead=st.integers(0, 5), count=st.integers(0, 6),
       seed=st.integers(0, 2**32), own=st.booleans())
def test_gossip_targets_draw_what_randrange_draws(peers: int, dead: int, count: int, seed: int,
                                                  own: bool) -> None:
    m = _membership(peers, seed, _OwnRandom(seed) if own else None)
    for i in range(1, min(dead, peers) + 1):
        m.apply(Dead(node=f"n{i}", incarnation=0, source="n0"))
    twin = _membership(peers, seed, _OwnRandom(seed) if own else None)
    for i in range(1, min(dead, peers) + 1):
        twin.apply(Dead(node=f"n{i}", incarnation=0, source="n0"))
    assert twin.rt.random.getstate() == m.rt.random.getstate()
    for _ in range(5):
        assert m._gossip_targets(count) == _plain_targets(twin, count)
        assert m.rt.random.getstate() == twin.rt.random.getstate()


# --- the gossip round -------------------------------------------------------------------------


def test_a_round_sends_full_messages_until_the_queue_is_empty() -> None:
    # 31 live members, retransmit_mult 1: each update is sent ceil(log10(32)) = 2 times
    m = _membership(30, 1, gossip_nodes=5, max_piggyback=16, retransmit_mult=1)
    m.running = True
    limit = retransmit_limit(1, m.num_live())
    assert limit == 2
    for i in range(100, 120):  # twenty updates, forty transmits: 16 + 16 + 8, then no more
        m.broadcasts.queue(_alive(i))
    sent: list[tuple[str, Any]] = m.rt.sent  # type: ignore[attr-defined]
    m._gossip_tick()
    assert [len(msg.updates) for _dst, msg in sent] == [16, 16, 8]
    assert all(type(msg) is Gossip for _dst, msg in sent)
    assert len({dst for dst, _msg in sent}) == 3
    each = [u.node for _dst, msg in sent for u in msg.updates]
    assert sorted(each) == sorted(f"m{i}" for i in range(100, 120) for _ in range(2))
    assert not m.broadcasts.queued and m._limit == limit and m._limit_for == m.num_live()


def test_a_round_with_nothing_queued_sends_nothing_and_sleeps() -> None:
    m = _membership(30, 1)
    m.running = True
    m._gossip_tick()
    assert m.rt.sent == []  # type: ignore[attr-defined]
    assert "gossip" not in m._timers and m._gossip_due == 0.2  # no timer: asleep until news
    m.broadcasts.queue(_alive(100))
    assert m._timers["gossip"].when == 0.2 and m._gossip_due is None  # type: ignore[attr-defined]


def test_a_round_with_nothing_queued_sets_its_next_round_when_told_not_to_sleep() -> None:
    m = _membership(30, 1)
    m.running = True
    m.sleep_when_idle = False
    m._gossip_tick()
    assert m.rt.sent == []  # type: ignore[attr-defined]
    assert m._timers["gossip"].when == 0.2 and m._gossip_due is None  # type: ignore[attr-defined]


def _rounds(sleep: bool, news_at: list[float], until: float,
            start: float = 0.037) -> tuple[list[tuple[float, str, Any]], int]:
    """A member whose rounds start at ``start`` and that queues news at ``news_at``: the
    Gossips it sends, with their times, and how many rounds ran."""
    m = _membership(30, 7, gossip_nodes=2, retransmit_mult=1)
    rt: FakeRuntime = m.rt  # type: ignore[assignment]
    m.sleep_when_idle = sleep
    sent: list[tuple[float, str, Any]] = []
    rt.send = lambda dst, msg: sent.append((rt.now(), dst, msg))  # type: ignore[method-assign]
    m._send = rt.send
    ran = [0]
    tick = m._gossip_tick

    def counted() -> None:
        ran[0] += 1
        tick()

    m._gossip_tick = counted  # type: ignore[method-assign]
    for i, t in enumerate(news_at):
        rt.call_at(t, lambda i=i: m.broadcasts.queue(_alive(100 + i)))  # type: ignore[misc]
    m.running = True
    m._after("gossip", start, m._gossip_tick)
    rt.advance(until)
    return sent, ran[0]


def test_sleeping_rounds_send_what_ticking_rounds_send_at_the_same_times() -> None:
    # news now and then: right after a round, just before one, after a long quiet, in bursts
    news = [0.01, 0.0371, 0.5, 0.61, 0.62, 3.3001, 17.0, 17.19, 40.05, 40.06, 40.07, 99.9]
    ticking, ran_ticking = _rounds(False, news, 120.0)
    sleeping, ran_sleeping = _rounds(True, news, 120.0)
    assert len(ticking) > 10 and all(type(msg) is Gossip for _t, _d, msg in ticking)
    assert sleeping == ticking  # the same messages, to the same members, at the same (float) times
    assert ran_ticking == 600  # every 0.2 s for 120 s
    assert ran_sleeping < 60  # the rounds that sent, and one more each time the queue ran dry
    # each message left on the ticker's grid: 0.037 plus a whole number of rounds, summed
    grid, t = set(), 0.037
    while t < 120.0:
        grid.add(t)
        t += 0.2
    assert {t for t, _d, _msg in sleeping} <= grid


def test_a_woken_round_is_set_at_the_exact_float_time_of_the_ticker() -> None:
    # the first round at t0, asleep until t0 + 0.2; news at w: now + (due - now) is not due
    # here (a delay would miss it by one unit in the last place), call_at(due) is
    t0, w = 0.005594996816768472, 0.05151600307217326
    assert w + ((t0 + 0.2) - w) != t0 + 0.2
    ticking, _ = _rounds(False, [w], 1.0, start=t0)
    sleeping, _ = _rounds(True, [w], 1.0, start=t0)
    assert ticking and sleeping == ticking and sleeping[0][0] == t0 + 0.2


def _ticking_from(first: float) -> tuple[Membership, FakeRuntime]:
    """A running member (not started: no probes) whose first round is at ``first``."""
    m = _membership(30, 1)
    m.running = True
    m._after("gossip", first, m._gossip_tick)
    return m, m.rt  # type: ignore[return-value]


def test_news_at_the_very_time_a_sleeping_round_is_due_waits_for_the_next() -> None:
    m, rt = _ticking_from(0.1)
    rt.advance(0.1)
    assert m._gossip_due == 0.1 + 0.2
    rt.advance(0.2)  # now = 0.3, the very time the round is due: taken to have run, empty
    m.broadcasts.queue(_alive(100))
    assert m._timers["gossip"].when == 0.1 + 0.2 + 0.2  # type: ignore[attr-defined]


def test_a_stopped_member_is_not_woken_and_a_restart_ticks_anew() -> None:
    m, rt = _ticking_from(0.1)
    rt.advance(1.0)
    assert m._gossip_due == 0.1 + 0.2 and "gossip" not in m._timers  # asleep
    m.stop()
    assert m._gossip_due is None
    m.broadcasts.queue(_alive(100))
    assert not m._timers and rt.pending_timers() == 0  # stopped: nothing set
    m.start()
    assert "gossip" in m._timers and m._gossip_due is None
