"""Clock skew in the sim (Jepsen's clock nemesis, as drift) and what it does to LEASE reads.

A node's clock can run fast or slow (:meth:`sim.runtime.SimRuntime.set_clock_rate`,
:meth:`sim.cluster.SimCluster.skew_clock`, the nemesis kind ``clock``): its ``now()`` and its
timers run at the rate. SAFE reads (thesis §6.4: a heartbeat round per batch) do not care; LEASE
reads (§6.4.1) stay linearizable only while the clocks' rates differ by less than
election_tick / (election_tick - lease_drift_ticks), 10/9 by default. A leader whose clock runs
slow outlives its lease: cut off from the majority, it goes on answering reads after a new
leader took writes, and the checker finds the stale read.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import simpy

from checker import check
from kvcore.replica import ReplicaConfig
from kvcore.runtime import MemoryStorage
from sim.clients import OK, Workload
from sim.cluster import SimCluster
from sim.latency import LogNormal
from sim.nemesis import ALIASES, ClockSkews, Nemesis, Partitions, parse_kinds
from sim.network import SimNetwork, schedule_call
from sim.runtime import SimRuntime
from sim.sweep import SWEEP_CONFIG, SWEEP_SWIM, RunConfig, group_ready, run_seed, simulate
from sim.timeline import fault_bars
from sim.trace import Trace

# --- the skewed Runtime --------------------------------------------------------------------------


def _runtime() -> tuple[simpy.Environment, SimRuntime]:
    env = simpy.Environment()
    trace = Trace()
    net = SimNetwork(env, random.Random(1), trace, LogNormal(0.001, 0.5))
    return env, SimRuntime(env, net, trace, "n1", random.Random(2), MemoryStorage())


def test_a_skewed_clock_runs_at_its_rate_and_so_do_its_timers() -> None:
    env, rt = _runtime()
    fired: list[tuple[str, float]] = []
    env.run(until=1.0)
    assert rt.now() == 1.0 and rt.clock is None
    rt.set_clock_rate(0.5)  # slow: half a node-second per simulated second
    rt.call_later(1.0, lambda: fired.append(("later", env.now)))
    rt.call_at(rt.now() + 0.25, lambda: fired.append(("at", env.now)))
    env.run(until=2.0)
    assert rt.now() == pytest.approx(1.5) and rt.clock_offset == pytest.approx(-0.5)
    rt.set_clock_rate(2.0)  # fast
    rt.call_later(1.0, lambda: fired.append(("fast", env.now)))
    env.run(until=4.0)
    # 0.25 node-seconds at 0.5 fire after 0.5 simulated seconds; 1 at 2.0 after 0.5; "later", set
    # at 1.0 for 1 node-second, ran half of it by 2.0 (at 0.5) and the other half at 2.0
    assert fired == [("at", 1.5), ("later", 2.25), ("fast", 2.5)]
    assert rt.now() == pytest.approx(1.5 + 2 * 2.0)
    rt.set_clock_rate(1.0)  # true again: the offset it gathered stays (a monotonic clock never jumps)
    env.run(until=5.0)
    assert rt.clock_rate == 1.0 and rt.clock_offset == pytest.approx(1.5)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            rt.set_clock_rate(bad)


def test_a_pending_timer_is_moved_with_its_clock() -> None:
    """A machine's pending timers wait on its oscillator too: at a change of rate what remains
    of each, in node-seconds, remains; the node's handle still cancels it; timers due at one
    instant keep their order; another node's timers and cancelled ones are left alone."""
    env, rt = _runtime()
    other = SimRuntime(env, rt.net, rt.trace, "n2", random.Random(3), MemoryStorage())
    fired: list[tuple[str, float]] = []
    rt.call_later(4.0, lambda: fired.append(("later", env.now)))
    rt.call_at(6.0, lambda: fired.append(("at", env.now)))
    rt.call_at(6.0, lambda: fired.append(("at too", env.now)))  # the same instant, set after
    gone = rt.call_later(3.0, lambda: fired.append(("cancelled", env.now)))
    kept = rt.call_later(5.0, lambda: fired.append(("kept handle", env.now)))
    other.call_later(4.0, lambda: fired.append(("other node", env.now)))
    gone.cancel()
    env.run(until=2.0)
    rt.set_clock_rate(0.5)  # 2 node-seconds left of "later" now take 4 simulated seconds
    env.run(until=3.0)
    kept.cancel()  # the handle it was given still works
    rt.set_clock_rate(2.0)  # at 3.0 the clock reads 2.5: "later" has 1.5 node-seconds left
    env.run(until=20.0)
    # later: 3.0 + 1.5 / 2; at: node time 6.0 is 3.5 node-seconds after 2.5, 1.75 s at 2.0
    assert fired == [("later", 3.75), ("other node", 4.0), ("at", 4.75), ("at too", 4.75)]
    rt.set_clock_rate(2.0)  # the same rate again: nothing pending moves
    rt.call_later(1.0, lambda: fired.append(("again", env.now)))
    rt.set_clock_rate(2.0)
    env.run(until=21.0)
    assert fired[-1] == ("again", 20.5)


def test_a_rate_of_one_changes_nothing() -> None:
    """A never-skewed clock given 1.0 stays the simulated time itself: no float drift, so a
    replicated run whose every node is set to 1.0 mid-run has the same digest as without."""
    env, rt = _runtime()
    env.run(until=0.3)
    rt.set_clock_rate(1.0)
    assert rt.clock is None and rt.now() == env.now

    def run(set_rates: bool) -> str:
        c = SimCluster(3, 3, replicas=3)
        if set_rates:
            def all_true(_e: object) -> None:
                for nid in c.ids:
                    c._slots[nid].runtime.set_clock_rate(1.0)  # type: ignore[union-attr]
            schedule_call(c.env, 0.7, all_true)
        c.add_clients(2, Workload(ops=60, keys=4, pace=0.05, think=0.005, timeout=1.0))
        c.run()
        return c.digest()

    assert run(True) == run(False)


# --- the scenario verb and the nemesis kind ------------------------------------------------------


def test_skew_clock_is_a_fault_the_nodes_incarnations_share_and_restore_ends_it() -> None:
    c = SimCluster(2, 3, replicas=3)
    c.skew_clock("n2", 0.5, at=1.0, until=3.0)
    c.crash("n2", at=1.5)
    c.restart("n2", at=2.0)
    c.run(until=2.5)
    assert c.clock_rate("n2") == 0.5 and c.node("n2").rt.now() == pytest.approx(2.5 - 0.75)
    c.run(until=4.0)
    assert c.clock_rate("n2") == 1.0 and c.clock_offset("n2") == pytest.approx(-1.0)
    skew = next(f for f in c.faults if f.verb == "skew_clock")
    assert (skew.time, skew.args, skew.end) == (1.0, "n2 x0.5", 3.0)
    assert [f.verb for f in c.faults] == ["skew_clock", "crash", "restart", "restore_clock"]
    # a timeline draws the skew as one bar, from the skew to its restore
    bars = [(b.kind, b.start, b.end) for b in fault_bars(c.faults) if b.kind != "crash"]
    assert bars == [("clock", 1.0, 3.0)]
    with pytest.raises(ValueError, match="positive finite"):
        c.skew_clock("n1", 0.0)
    with pytest.raises(ValueError, match="unknown node"):
        c.skew_clock("n9", 2.0)


def test_the_clock_nemesis_draws_rates_and_keeps_the_evidence() -> None:
    assert parse_kinds("clock") == ("clock",)
    assert not any("clock" in kinds for kinds in ALIASES.values())  # add it by name: digests stay
    c = SimCluster(5, 3, replicas=3)
    group_ready(c)
    run = Nemesis("clock", 5).apply(c, c.now + 0.5, c.now + 8.0)
    c.run(until=c.now + 9.0)
    recs = run.records
    assert recs and all(r.kind == "clock" and r.fired is not None and r.undone is not None for r in recs)
    for r in recs:
        assert 1 <= len(r.nodes) <= 2 and len(r.rates) == len(r.nodes)
        assert all(0.5 <= x <= 2.0 for x in r.rates)
        assert r.param == pytest.approx(max(*r.rates, 1.0) / min(*r.rates, 1.0), abs=2e-3)
        assert r.detail.startswith("drifted ") and all(n in r.detail for n in r.nodes)
    # every skewed clock was restored, and each skew_clock fault has its end
    assert all(c.clock_rate(n) == 1.0 for n in c.ids)
    skews = [f for f in c.faults if f.verb == "skew_clock"]
    assert len(skews) == sum(len(r.nodes) for r in recs) and all(f.end is not None for f in skews)


# --- SAFE reads do not care; LEASE reads hold within the bound, break past it --------------------

LEASE = RunConfig(nodes=3, replicas=3, nemesis="partition,clock", read_mode="lease")


@pytest.mark.parametrize("seed", [1, 2, 6])
def test_safe_reads_stay_linearizable_under_the_clock_nemesis(seed: int) -> None:
    """Seed 6 is the one whose skews break LEASE reads (below): SAFE reads confirm every read
    with a heartbeat round, so no clock matters."""
    r = run_seed(seed, replace(LEASE, read_mode="safe"))
    assert r.verdict == "linearizable", r.describe()
    assert any(f.kind == "clock" and f.fired is not None for f in r.faults)


def test_lease_reads_stay_linearizable_while_clocks_drift_within_the_bound() -> None:
    """Rates within 0.95-1.05: two clocks' rates differ by at most 1.05/0.95 < 10/9."""
    spreads = []
    for seed in range(1, 9):
        run = simulate(seed, LEASE, packages=[Partitions(), ClockSkews(rates=(0.95, 1.05))])
        res = check(run.events, model="kv", timeout=10)
        assert res.verdict == "linearizable", (seed, res)
        spreads += [r.param for r in run.nemesis.records if r.kind == "clock" and r.fired is not None]
    assert spreads and max(spreads) < 10 / 9
    assert any(op.f == "get" and op.outcome == OK for op in run.history)


def test_the_clock_nemesis_finds_a_stale_lease_read() -> None:
    """``python -m sim check --replicas 3 --read-mode lease --nemesis partition,clock
    --seed-list 6``: n3's clock runs at 0.789 (a spread of 1.267 > 10/9) while it is cut off."""
    r = run_seed(6, LEASE)
    assert r.verdict == "not_linearizable", r.describe()
    assert any(f.kind == "clock" and f.param > 10 / 9 for f in r.faults)


# --- the concrete schedule ------------------------------------------------------------------------

SLOW = 0.25  # the old leader's clock: a quarter of a second per simulated second


def stale_read_schedule(seed: int, read_only: str, rate: float) -> tuple[SimCluster, str]:
    """Three nodes, one Raft group. Once it has a leader L (simulated time t0): at t0+0.2 L's
    clock slows to ``rate``; at t0+0.5 L is cut off from the other two; both end at t0+3.5. One
    client puts a new value on the one key every 0.2 s at a node of the majority, another reads
    it at L every 0.1 s.

    L's lease is election_tick - lease_drift_ticks = 9 of its ticks from its last heartbeat a
    majority acked: at 0.25 that is 1.8 simulated seconds. The followers stop honouring it after
    10 of their own (0.5 s), elect a leader and commit the writer's puts, while L, sure of its
    lease, answers reads from its own copy."""
    c = SimCluster(seed, 3, replace(SWEEP_CONFIG, durable=False), latency=LogNormal(0.001, 0.5),
                   swim=SWEEP_SWIM, replicas=3, replica=ReplicaConfig(read_only=read_only))
    t0 = group_ready(c)
    lead = next(n.id for n in c.nodes() if n.replica.raft.role == "leader")
    others = [n for n in c.ids if n != lead]
    c.skew_clock(lead, rate, at=t0 + 0.2, until=t0 + 3.5)
    c.partition([lead], others, at=t0 + 0.5)
    c.heal(at=t0 + 3.5)
    c.add_clients(1, Workload(ops=20, keys=1, mix=(0, 1, 0), think=0, pace=0.2, timeout=1.0),
                  targets=[others[0]])
    c.add_clients(1, Workload(ops=40, keys=1, mix=(1, 0, 0), think=0, pace=0.1, timeout=1.0), targets=[lead])
    c.run()
    return c, lead


def _written(value: str | None) -> int:
    return -1 if value is None else int(value.split("-")[1])  # the writer's n-th put: "c0-n"


def test_a_leader_whose_clock_runs_slow_serves_a_stale_lease_read() -> None:
    c, lead = stale_read_schedule(1, "lease", SLOW)
    res = check(c.history.events(), model="kv", timeout=10)
    assert res.verdict == "not_linearizable"
    assert res.counterexample is not None and res.counterexample.culprit.f == "get"
    # the stale read in plain terms: an ok get at the old leader that began after a later put
    # had been acknowledged by the new one
    puts = [op for op in c.history if op.f == "put" and op.outcome == OK]
    stale = [g for g in c.history if g.f == "get" and g.outcome == OK and g.node == lead
             and any(p.complete is not None and p.complete < g.invoke and _written(p.value) > _written(g.result)
                     for p in puts)]
    assert stale, "no get at the old leader read a value older than an acknowledged put"
    assert any(f.verb == "skew_clock" and f.args == f"{lead} x{SLOW:g}" for f in c.faults)


@pytest.mark.parametrize(("read_only", "rate"), [("safe", SLOW), ("lease", 1.0), ("lease", 0.95)])
def test_the_same_schedule_is_linearizable_with_safe_reads_or_a_clock_within_the_bound(read_only: str,
                                                                                       rate: float) -> None:
    c, lead = stale_read_schedule(1, read_only, rate)
    assert check(c.history.events(), model="kv", timeout=10).verdict == "linearizable"
    assert any(op.f == "get" and op.node == lead and op.outcome == OK for op in c.history)
