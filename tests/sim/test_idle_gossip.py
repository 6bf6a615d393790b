"""Gossip rounds that sleep while nothing is queued, in whole runs: the same run, fewer events.

A member's gossip rounds set no timer while its broadcast queue is empty, and the next round is
set when news is queued, at the time the ticker would have fired (``Dissemination._gossip_wake``).
Each run here goes twice, once with the rounds ticking every ``gossip_interval`` as memberlist's
do (``sleep_when_idle = False``) and once sleeping. Everything but the timer records of the empty
rounds must be the same: every send, delivery, drop, fault and client operation at the same time
in the same order, the views, every node's counters and storage, the checker's verdict. And the
sleeping run must have fewer events.
"""

from __future__ import annotations

from typing import Any

import pytest

from kvcore.membership import SwimConfig
from kvcore.membership.gossip import Dissemination
from sim.cluster import SimCluster
from sim.sweep import RunConfig, run_seed, simulate

from .test_join_equivalence import state_hash
from .test_shared_views import views_hash


def _split(trace: Any) -> tuple[list[tuple[Any, ...]], int]:
    """The trace without timer records, and how many timer records there were."""
    rest = [e for e in trace if e[1] != "timer"]
    return rest, len(trace) - len(rest)


def churn(seed: int, codec: bool) -> SimCluster:
    """Joins one by one, loss, a partition and its heal, crashes and restarts, a leave, reaps,
    then a long quiet: rounds that sleep and wake many times."""
    c = SimCluster(seed, 4, join="static", codec=codec, keep_trace=True, swim=SwimConfig.lan(reap_time=4.0))
    for i in range(30):
        c.add_node(f"j{i}", at=0.5 + i * 0.03)
    c.set_loss(0.03, at=1.0)
    c.run(until=2.0)  # every join under way: the faults below may name the joiners
    c.partition(["n1", "j3", "j7"], at=4.0)
    c.heal(at=10.0)
    c.crash("n3", at=6.0)
    c.restart("n3", at=9.0)
    c.crash("n2", at=12.0)
    c.leave("j20", at=14.0)
    c.restart("n2", at=40.0)
    c.set_loss(0.0, at=18.0)
    c.run(until=60.0)
    return c


@pytest.mark.parametrize("codec", [False, True], ids=["objects", "codec"])
@pytest.mark.parametrize("seed", [1, 2])
def test_churn_sends_the_same_messages_at_the_same_times(seed: int, codec: bool,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Dissemination, "sleep_when_idle", False)
    ticking = churn(seed, codec)
    monkeypatch.setattr(Dissemination, "sleep_when_idle", True)
    sleeping = churn(seed, codec)
    rest_t, timers_t = _split(ticking.trace)
    rest_s, timers_s = _split(sleeping.trace)
    assert len(rest_t) > 10_000  # a run with something in it
    assert rest_s == rest_t
    assert (views_hash(sleeping), state_hash(sleeping)) == (views_hash(ticking), state_hash(ticking))
    # 34 members 60 s at 5 rounds a second would be 10,000 rounds: most of them slept
    assert timers_t - timers_s > 5_000


@pytest.mark.parametrize("seed", [3, 4])
def test_a_checked_run_under_faults_is_the_same_run(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    config = RunConfig(nemesis="all", nodes=5, clients=4, ops=160, duration=8.0, loss=0.01)
    monkeypatch.setattr(Dissemination, "sleep_when_idle", False)
    ticking = simulate(seed, config, keep_trace=True)
    monkeypatch.setattr(Dissemination, "sleep_when_idle", True)
    sleeping = simulate(seed, config, keep_trace=True)
    rest_t, timers_t = _split(ticking.cluster.trace)
    rest_s, timers_s = _split(sleeping.cluster.trace)
    assert rest_s == rest_t
    assert sleeping.events == ticking.events
    assert timers_s < timers_t
    verdict = run_seed(seed, config).verdict
    monkeypatch.setattr(Dissemination, "sleep_when_idle", False)
    assert run_seed(seed, config).verdict == verdict


def test_a_quiet_static_cluster_costs_no_event_per_round() -> None:
    def steady(sleep: bool) -> tuple[int, int, str]:
        Dissemination.sleep_when_idle = sleep
        try:
            c = SimCluster(5, 200, join="static", keep_trace=True)
            c.run(until=20.0)
        finally:
            Dissemination.sleep_when_idle = True
        rest, timers = _split(c.trace)
        return timers, len(rest), views_hash(c)

    ticking, sleeping = steady(False), steady(True)
    assert sleeping[1:] == ticking[1:]
    # 200 members for 20 s: 20,000 rounds, of which only the first ones (each member's own
    # Alive, and what it hears in its first seconds) had news; probes and the rest remain
    rounds = 200 * 20 * 5
    assert ticking[0] - sleeping[0] > 0.9 * rounds


def test_sim_call_at_fires_at_the_exact_time_and_a_past_time_at_once() -> None:
    c = SimCluster(1, 1)
    rt = c.node("n1").membership.rt
    c.run(until=0.05151600307217326)
    fired: list[tuple[str, float]] = []
    due = 0.005594996816768472 + 0.2  # now + (due - now) would not be due
    rt.call_at(due, lambda: fired.append(("due", rt.now())))
    rt.call_at(0.01, lambda: fired.append(("past", rt.now())))
    gone = rt.call_at(0.1, lambda: fired.append(("cancelled", rt.now())))
    gone.cancel()
    c.run(until=1.0)
    assert fired == [("past", 0.05151600307217326), ("due", due)]
