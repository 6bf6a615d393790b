"""Gossip membership in the sim: SWIM + Lifeguard scenarios over seeds, and sim.measure itself.

Scenarios (each over several seeds; a failure names its seed):

* 200 nodes join through 3 seeds and converge to one view (and one slot map);
* a crash is detected — declared dead — by every live node within a bound computed from the
  configuration;
* with 5% loss and Lifeguard on, no live node is declared dead over 300 simulated seconds;
* a partition long enough for both sides to declare each other dead, then a heal, returns to one
  view;
* a slot map change made on one node reaches every node.

Speed-ups, each said where it is used: the long and the large runs turn the codec off (it
changes no behaviour: every message round-trips to an equal one, only byte counts differ), and
the partition scenario shortens ``push_pull_interval`` from 30 s to 5 s. Everything else is
``SwimConfig.lan()``, memberlist's LAN defaults.

The second half tests :mod:`sim.measure` on small hand-made event logs, so that its definitions
are pinned by cases that can fail.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from kvcore.membership import SwimConfig, suspicion_timeout
from sim import measure as M
from sim.cluster import SimCluster

# --- helpers ---------------------------------------------------------------------------------


def _run_until(c: SimCluster, done: Any, deadline: float, step: float = 0.5) -> float | None:
    """Run in steps until ``done(c)`` holds (returns that time) or ``deadline`` (None)."""
    while c.now < deadline:
        c.run(until=min(deadline, c.now + step))
        if done(c):
            return c.now
    return None


def _detection_bound(swim: SwimConfig, n: int) -> float:
    """Latest time after a crash by which every live node must hold the crashed node dead.

    Round-robin probing (SWIM §4.3) reaches a given member at most ``2(n-1) - 1`` periods after
    any instant (the worst gap: first in one round, last in the next); the probe is concluded one
    period later; Lifeguard's suspicion then lasts at most ``suspicion_max_timeout_mult`` times
    the minimum timeout; 5 s more for the Dead to travel by gossip (measured: well under 1 s).
    """
    T = swim.probe_interval
    min_t = suspicion_timeout(swim.suspicion_mult, n, T)
    return 2 * (n - 1) * T + swim.suspicion_max_timeout_mult * min_t + 5.0


# --- scenarios -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_200_nodes_join_through_3_seeds_and_converge_to_one_view(seed: int) -> None:
    # codec off for speed (200 nodes); the join flood is the costly part
    c = SimCluster(seed, 200, join="seeds", seeds=3, codec=False)
    assert len(M.views(c)["n200"]) == 1, "a joining node starts knowing only itself"
    at = _run_until(c, M.one_view, deadline=30.0)
    assert at is not None, f"seed {seed}: no single view after 30 s: {M.view_disagreements(c)[:5]}"
    # every node learned every join, and nobody was wrongly declared dead on the way
    assert all(len(v) == 200 for v in M.views(c).values())
    assert M.false_positives(c) == [], f"seed {seed}"
    # the slots stayed with the 3 seeds, and everybody knows so
    maps = [c.node(nid).slot_map for nid in c.ids]
    assert all(m == maps[0] for m in maps), f"seed {seed}: slot maps differ"
    assert set(maps[0].slot_counts()) == {"n1", "n2", "n3"}
    joins = M.learned_times(c, "join", "n200")
    assert not np.isnan(joins).any()


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_crash_is_detected_by_every_live_node_within_the_bound(seed: int) -> None:
    n, swim = 32, SwimConfig.lan()
    c = SimCluster(seed, n, swim=swim)
    crash_at = 10.0 + 0.1 * seed  # not on a tick boundary
    c.crash("n7", at=crash_at)
    bound = _detection_bound(swim, n)

    def all_dead(c: SimCluster) -> bool:
        return c.now > crash_at and not np.isnan(M.detection_times(c, "n7", crash_at).dead).any()

    at = _run_until(c, all_dead, deadline=crash_at + bound)
    d = M.detection_times(c, "n7", crash_at)
    assert at is not None, (
        f"seed {seed}: after {bound:.1f} s, {int(np.isnan(d.dead).sum())} of {n - 1} live nodes "
        f"still do not hold n7 dead"
    )
    assert len(d.observers) == n - 1 and "n7" not in d.observers
    assert np.all(d.suspect <= d.dead), "a node declares dead only what it suspected or heard dead"
    assert 0 < d.first() <= 2 * (n - 1) * swim.probe_interval
    assert M.one_view(c), M.view_disagreements(c)[:5]
    assert M.false_positives(c) == []


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_with_5_percent_loss_and_lifeguard_no_live_node_is_declared_dead(seed: int) -> None:
    # 300 simulated seconds: codec off for speed
    c = SimCluster(seed, 30, swim=SwimConfig.lan(lifeguard=True), codec=False)
    c.set_loss(0.05)
    c.run(until=300.0)
    fps = M.false_positives(c)
    assert fps == [], f"seed {seed}: {len(fps)} false positives, first: {fps[:3]}"
    # not vacuous: the loss hit, suspicions were raised, and the suspects refuted them
    assert c.net.stats.dropped.get("loss", 0) > 1000
    assert M.false_positives(c, event="suspect"), f"seed {seed}: no suspicion at all"
    assert any(e[2] == "refute" for e in c.member_events)
    # at any instant under loss some suspicion may be open; once the loss stops, they all end
    c.set_loss(0.0)
    c.run(until=330.0)
    assert M.false_positives(c) == []
    assert M.one_view(c), M.view_disagreements(c)[:5]


def test_false_positives_are_seen_when_they_happen() -> None:
    """The measurement is not blind: at 30% loss without Lifeguard, live nodes are declared dead."""
    c = SimCluster(1, 30, swim=SwimConfig.lan(lifeguard=False), codec=False)
    c.set_loss(0.30)
    c.run(until=120.0)
    fps = M.false_positives(c)
    assert fps and all(c.truth[f.subject] == "up" for f in fps)
    assert 0 < len(M.episodes(fps)) <= len(fps)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_partition_then_heal_returns_to_one_view(seed: int) -> None:
    # push-pull every 5 s instead of 30 s, so the healed sides find each other sooner; the
    # partition outlasts the longest suspicion (6 x 5.6 s) plus gossip_to_the_dead_time (30 s),
    # so only push-pull with not-yet-reaped dead members (Serf's reconnect) can heal it
    n = 24
    c = SimCluster(seed, n, swim=SwimConfig.lan(push_pull_interval=5.0))
    minority = [f"n{i}" for i in range(1, n // 3 + 1)]
    c.partition(minority, at=5.0)
    c.heal(at=95.0)
    c.run(until=94.9)
    side_of = {nid: frozenset(minority) if nid in minority else frozenset(c.ids) - set(minority)
               for nid in c.ids}
    split = M.views(c)
    assert all(split[nid] == side_of[nid] for nid in c.ids), f"seed {seed}: sides did not split"
    healed = _run_until(c, M.one_view, deadline=95.0 + 60.0)
    assert healed is not None, f"seed {seed}: not one view 60 s after the heal: {M.view_disagreements(c)[:5]}"
    # the declared-dead refuted it, at a higher incarnation
    assert sum(1 for e in c.member_events if e[2] == "refute" and e[0] >= 95.0) >= 1


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_slot_map_change_reaches_every_node(seed: int) -> None:
    c = SimCluster(seed, 16)
    c.run(until=5.0)
    epoch = c.cluster_config.epoch + 1
    c.node("n16").claim_slots("0-99,8000", epoch, accept_loss=True)

    def same_maps(c: SimCluster) -> bool:
        maps = [c.node(nid).slot_map for nid in c.ids]
        return all(m == maps[0] for m in maps)

    at = _run_until(c, same_maps, deadline=20.0, step=0.1)
    assert at is not None, f"seed {seed}: slot maps still differ at 20 s"
    m = c.node("n1").slot_map
    assert all(m.owner(s) == "n16" and m.epoch(s) == epoch for s in (*range(100), 8000))
    assert m.owner(100) != "n16" and m.covers_all()


# --- sim.measure on hand-made logs ---------------------------------------------------------------


def _fake(events: list[tuple[float, str, str, str, int]], truth_log: list[tuple[float, str, str]],
          ids: tuple[str, ...] = ("a", "b", "c", "d"), core: tuple[str, ...] | None = None) -> Any:
    truth: dict[str, str] = {}
    for _, nid, st in truth_log:
        truth[nid] = st
    core_cfg = SimpleNamespace(nodes=[SimpleNamespace(id=i) for i in (core if core is not None else ids)])
    return SimpleNamespace(ids=list(ids), truth=truth, truth_log=truth_log, member_events=events,
                           core_config=core_cfg, cluster_config=core_cfg)


ALL_UP = [(0.0, x, "up") for x in "abcd"]


def test_learned_times_takes_each_observers_first_matching_event_after_since() -> None:
    ev = [
        (1.0, "a", "suspect", "d", 0),  # before since: ignored
        (5.0, "b", "join", "d", 0),
        (6.0, "a", "alive", "d", 1),
        (7.0, "b", "join", "d", 0),  # not the first
        (8.0, "c", "suspect", "d", 0),  # another kind of news
    ]
    c = _fake(ev, ALL_UP)
    t = M.learned_times(c, "join", "d", since=2.0)
    assert M.observers(c, exclude="d") == ["a", "b", "c"]
    np.testing.assert_array_equal(t, [6.0, 5.0, np.nan])
    np.testing.assert_array_equal(M.learned_times(c, "crash", "d"), [1.0, np.nan, 8.0])
    np.testing.assert_array_equal(M.learned_times(c, "crash", "d", 2.0), [np.nan, np.nan, 8.0])


def test_learned_times_forgets_what_an_observer_learned_before_its_restart() -> None:
    ev = [(1.0, "a", "dead", "d", 0), (9.0, "a", "dead", "d", 0)]
    truth = [*ALL_UP, (3.0, "a", "down"), (4.0, "a", "up")]
    np.testing.assert_array_equal(M.learned_times(_fake(ev, truth), "dead", "d"), [9.0, np.nan, np.nan])
    # an observer that is down now is not an observer
    truth_down = [*ALL_UP, (3.0, "b", "down")]
    c = _fake(ev, truth_down)
    assert M.observers(c, exclude="d") == ["a", "c"]
    assert M.learned_times(c, "dead", "d").shape == (2,)


def test_learned_times_of_a_refute_need_the_refuted_incarnation() -> None:
    ev = [
        (1.0, "a", "suspect", "d", 3),
        (2.0, "d", "refute", "d", 4),
        (2.5, "b", "alive", "d", 3),  # an older alive: not the refute
        (3.0, "a", "alive", "d", 4),
        (4.0, "b", "alive", "d", 5),
    ]
    np.testing.assert_array_equal(M.learned_times(_fake(ev, ALL_UP), "refute", "d"), [3.0, 4.0, np.nan])
    assert np.isnan(M.learned_times(_fake(ev[:1], ALL_UP), "refute", "d")).all()


def test_convergence_curve_and_time_to_fraction() -> None:
    t = np.array([0.5, 1.0, np.nan, 2.0])
    np.testing.assert_allclose(M.convergence_curve(t, np.array([0.0, 0.5, 1.5, 3.0])), [0, 0.25, 0.5, 0.75])
    assert M.time_to_fraction(t, 0.5) == 1.0
    assert M.time_to_fraction(t, 0.75) == 2.0
    assert math.isnan(M.time_to_fraction(t, 1.0))
    assert M.convergence_curve(np.array([]), np.array([1.0])).tolist() == [0.0]


def test_detection_times_are_delays_after_the_crash() -> None:
    ev = [(11.0, "a", "suspect", "d", 0), (12.0, "b", "dead", "d", 0), (16.0, "a", "dead", "d", 0)]
    c = _fake(ev, [*ALL_UP, (10.0, "d", "down")])
    d = M.detection_times(c, "d", 10.0)
    assert d.observers == ("a", "b", "c")
    np.testing.assert_array_equal(d.suspect, [1.0, 2.0, np.nan])
    np.testing.assert_array_equal(d.dead, [6.0, 2.0, np.nan])
    assert d.first() == 1.0


def test_false_positives_are_dead_events_about_nodes_that_were_up() -> None:
    ev = [
        (2.0, "a", "dead", "b", 0),  # b up since 0: false positive
        (2.5, "c", "dead", "b", 0),  # the same declaration, spread to c
        (6.0, "a", "dead", "d", 0),  # d crashed at 5: right
        (8.5, "a", "dead", "d", 0),  # d restarted at 8: stale, within a 1 s grace
        (9.0, "a", "suspect", "c", 0),  # a suspicion, not a declaration
        (9.5, "b", "dead", "b", 1),  # about itself: never counted
    ]
    truth = [*ALL_UP, (5.0, "d", "down"), (8.0, "d", "up")]
    c = _fake(ev, truth)
    fps = M.false_positives(c)
    assert [(f.time, f.observer, f.subject) for f in fps] == [(2.0, "a", "b"), (2.5, "c", "b"), (8.5, "a", "d")]
    assert fps[2].up_since == 8.0
    assert [(f.time, f.subject) for f in M.false_positives(c, grace=1.0)] == [(2.0, "b"), (2.5, "b")]
    assert [(f.time, f.observer) for f in M.episodes(fps)] == [(2.0, "a"), (8.5, "a")]
    assert [(f.observer, f.subject) for f in M.false_positives(c, event="suspect")] == [("a", "c")]
    assert M.truth_at(truth, "d", 6.0) == "down" and M.truth_at(truth, "d", 8.0) == "up"
    assert M.up_intervals(c)["d"] == [(0.0, 5.0), (8.0, math.inf)]


def test_view_timeline_replays_boots_and_events() -> None:
    # a, b, c boot from the static core; d joins later and knows only itself at first
    truth = [(0.0, "a", "up"), (0.0, "b", "up"), (0.0, "c", "up"), (1.0, "d", "up"),
             (6.0, "c", "down"), (9.0, "c", "up")]
    ev = [
        (1.5, "a", "join", "d", 0), (1.6, "d", "join", "a", 0), (1.6, "d", "join", "b", 0),
        (7.0, "a", "suspect", "c", 0), (8.0, "a", "dead", "c", 0),
        (10.0, "c", "join", "d", 0), (11.0, "a", "reap", "c", 0),
    ]
    nodes, counts = M.view_timeline(_fake(ev, truth, core=("a", "b", "c")), [0.5, 1.5, 2.0, 7.0, 8.0, 9.5, 12.0])
    assert nodes == ["a", "b", "c", "d"]
    a, b, c, d = counts.T
    np.testing.assert_array_equal(a, [3, 4, 4, 3, 3, 3, 3])
    np.testing.assert_array_equal(b, [3, 3, 3, 3, 3, 3, 3])
    np.testing.assert_array_equal(c, [3, 3, 3, np.nan, np.nan, 3, 4])  # rebooted from the core
    np.testing.assert_array_equal(d, [np.nan, 1, 3, 3, 3, 3, 3])


def _node(states: dict[str, str]) -> Any:
    return SimpleNamespace(membership=SimpleNamespace(
        members={k: SimpleNamespace(state=v) for k, v in states.items()}))


def test_one_view_needs_the_live_alive_and_the_rest_dead_or_left() -> None:
    c = _fake([], [*ALL_UP, (1.0, "d", "down")])
    good = {"a": "alive", "b": "alive", "c": "alive", "d": "dead"}
    nodes = {"a": _node(good), "b": _node(good), "c": _node({**good, "d": "left"})}
    c.node = nodes.__getitem__
    assert M.one_view(c) and M.views(c)["a"] == frozenset("abc")
    nodes["b"] = _node({**good, "d": "suspect"})
    assert M.view_disagreements(c) == ["b holds d suspect, but it is down"]
    nodes["b"] = _node({"a": "alive", "b": "alive"})
    assert M.view_disagreements(c) == ["b does not know c, which is up"]
    nodes["b"] = _node({**good, "a": "suspect"})
    assert not M.one_view(c)


def test_load_per_node_divides_by_nodes_and_seconds() -> None:
    c = SimpleNamespace(ids=["a", "b"], messages_by_kind=lambda: {"Gossip": (40, 4000), "SwimPing": (20, 1000)})
    load = M.load_per_node(c, 10.0)
    assert load == {"Gossip": (2.0, 200.0), "SwimPing": (1.0, 50.0), "total": (3.0, 250.0)}
    since = M.load_per_node(c, 5.0, baseline={"Gossip": (20, 2000)}, nodes=4)
    assert since["Gossip"] == (1.0, 100.0) and since["SwimPing"] == (1.0, 50.0)


# --- theory ----------------------------------------------------------------------------------


def test_push_gossip_rounds() -> None:
    assert M.push_gossip_rounds(1024) == pytest.approx(10 + math.log(1024))
    assert M.push_gossip_rounds(1024, fanout=3) == pytest.approx(5 + math.log(1024) / 3)
    assert M.push_gossip_rounds(1) == 0.0


def test_swim_expected_first_detection_tends_to_e_over_e_minus_1_periods() -> None:
    assert M.swim_first_detection_periods(2) == 1.0
    assert M.swim_first_detection_periods(3) == pytest.approx(4 / 3)  # 1 / (1 - 1/4)
    assert M.swim_first_detection_periods(100_000) == pytest.approx(math.e / (math.e - 1), rel=1e-4)
    assert M.swim_expected_first_detection(64, 2.0) == pytest.approx(2 * M.swim_first_detection_periods(64))


def test_first_suspicion_model_matches_a_direct_simulation_of_its_assumptions() -> None:
    """Round robin over shuffled rounds at random phases; suspicion one period after the probe."""
    rng = np.random.default_rng(1)
    for n in (3, 8, 24):
        m, trials, waits = n - 1, 20_000, []
        for _ in range(trials // 100):
            # each member's probe times of the target over a long run, then a random crash time
            firsts = np.full(100, np.inf)
            crash = rng.uniform(10 * m, 20 * m, size=100)
            for _member in range(m):
                phase = rng.uniform(0, 1)
                rounds = 40
                pos = rng.integers(0, m, size=(100, rounds))  # slot of the target in each round
                probes = phase + np.arange(rounds) * m + pos
                after = np.where(probes >= crash[:, None], probes, np.inf).min(axis=1)
                firsts = np.minimum(firsts, after - crash)
            waits.extend(firsts + 1.0)
        assert np.mean(waits) == pytest.approx(M.swim_first_suspicion_model(n, 1.0), rel=0.03), n
    assert M.swim_first_suspicion_model(2, 1.0) == pytest.approx(1.5, rel=1e-3)
    assert M.swim_first_suspicion_model(1000, 1.0) == pytest.approx(2.0, abs=0.01)


def test_first_suspicion_cdf_is_the_models_distribution() -> None:
    # nothing before one period (the probe is concluded at the next tick); 1 - 1/e one period
    # later for large N (the first probe's wait is then about exponential with mean T)
    cdf = M.swim_first_suspicion_cdf(1000, 2.0, np.array([1.0, 2.0, 4.0, 1000.0]))
    np.testing.assert_allclose(cdf, [0.0, 0.0, 1 - math.exp(-1), 1.0], atol=2e-3)
    # two members: the other probes us every period, so the wait is uniform on (1, 2) periods
    np.testing.assert_allclose(M.swim_first_suspicion_cdf(2, 1.0, np.array([1.25, 1.5, 2.0])), [0.25, 0.5, 1.0])
    # and its mean is the model's expectation
    t = np.linspace(0, 40, 40001)
    surv = 1 - M.swim_first_suspicion_cdf(16, 1.0, t)
    mean = float(np.sum((surv[1:] + surv[:-1]) * 0.5 * np.diff(t)))
    assert mean == pytest.approx(M.swim_first_suspicion_model(16, 1.0), rel=1e-3)


@pytest.mark.parametrize("seed", range(1, 9))
def test_a_claim_reaches_every_live_member_at_once_even_where_gossip_would_miss_one(seed: int) -> None:
    """Four nodes under the local preset: an update is sent twice by each node that learns it,
    one target a message, so gossip alone left a member without the claim now and then until
    the next push-pull (15 s), a source holding its migration marks meanwhile (5-10 s stalls of
    `storelab cluster reshard`). The claimer sends its new Alive to every live member itself."""
    c = SimCluster(seed, 4, swim=SwimConfig.local())
    c.run(until=3.0)
    epoch = c.cluster_config.epoch + 1
    c.node("n4").claim_slots("0-99", epoch, accept_loss=True)
    c.run(until=c.now + 0.05)  # one network delay, less than a gossip interval (0.1 s)
    for nid in c.ids:
        m = c.node(nid).slot_map
        assert m.owner(0) == "n4" and m.epoch(99) == epoch, nid
