"""Scenario tests: small clusters under faults, checked against a model, over several seeds.

A failing scenario names its seed: rerun it with ``python -m sim --seed N`` or build the same
SimCluster in a notebook.
"""

from __future__ import annotations

from kvcore.config import NodeConfig
from kvcore.errors import ERRORS_BY_CODE
from kvcore.membership import SwimConfig
from sim.clients import FAIL, OK, UNKNOWN, Workload
from sim.cluster import SimCluster
from sim.model import check_reads

CFG = NodeConfig(forward_timeout=1.0)
#: memberlist's LAN preset with faster probes, so failures are detected within a short scenario
SWIM = SwimConfig.lan(probe_interval=0.5, probe_timeout=0.2, suspicion_mult=3)


def _run(seed: int, *, loss: float = 0.0, partition: bool = False, codec: bool = True) -> SimCluster:
    c = SimCluster(seed, 5, CFG, codec=codec, swim=SWIM)
    c.set_loss(loss)
    if partition:
        c.partition(["n1", "n2"], at=4.0)
        c.heal(at=6.0)
    # 3 clients, 2,000 operations in all, to random nodes, over ~10 simulated seconds
    c.add_clients(3, Workload(ops=667, keys=25, think=0.015, timeout=3.0))
    c.run()
    return c


def _assert_model(c: SimCluster) -> None:
    violations = check_reads(c.history)
    assert not violations, f"seed {c.seed}: {len(violations)} bad reads, first: {violations[0]}"


def test_no_faults_every_read_sees_the_last_acknowledged_write(seed: int) -> None:
    c = _run(seed)
    assert len(c.history) == 3 * 667
    oc = c.history.outcomes()
    assert oc[OK] == len(c.history), f"seed {seed}: without faults every op succeeds, got {oc}"
    _assert_model(c)
    # the reads really did observe writes (the check is not vacuous)
    assert sum(1 for op in c.history if op.f == "get" and op.result is not None) > 100
    # and requests really were forwarded between nodes
    assert c.messages_by_kind()["Forward"][0] > 500


def test_loss_and_partition_give_correct_values_or_typed_errors(seed: int) -> None:
    c = _run(seed, loss=0.10, partition=True)
    oc = c.history.outcomes()
    assert sum(oc.values()) == 3 * 667
    for op in c.history:
        assert op.outcome in (OK, FAIL, UNKNOWN)
        if op.outcome != OK:
            # a typed error from the store, or the client's own timeout
            assert op.error in ERRORS_BY_CODE or op.error == "client_timeout", (seed, op)
    _assert_model(c)
    # the faults did fire, with evidence
    assert c.net.stats.dropped.get("loss", 0) > 100
    assert c.net.stats.dropped.get("partition", 0) > 0
    assert [f.verb for f in c.faults] == ["set_loss", "partition", "heal"]
    # and the store stayed mostly available
    assert oc[OK] > 0.7 * sum(oc.values()), (seed, oc)


def test_partition_makes_minority_owned_slots_fail_fast_with_owner_down() -> None:
    # push-pull every second, so that the two sides re-merge soon after the heal (the default
    # 30 s would make the scenario long; see kvcore.membership, "Anti-entropy")
    swim = SwimConfig.lan(probe_interval=0.5, probe_timeout=0.2, suspicion_mult=3, push_pull_interval=1.0)
    c = SimCluster(7, 5, CFG, swim=swim)
    c.partition(["n1", "n2"], at=1.0)
    c.heal(at=6.0)
    c.add_clients(1, Workload(ops=1500, keys=40, think=0.01, timeout=3.0), targets=["n5"])
    c.run()
    during = [op for op in c.history if 4.0 < op.invoke < 6.0]
    errors = {op.error for op in during if op.outcome != OK}
    assert "owner_down" in errors, "once SWIM declares the minority dead, requests fail fast"
    assert {op.error for op in during if op.outcome != OK} <= {"owner_down", "forward_timeout"}
    # after the heal, anti-entropy re-merges the views and everything works again
    after = [op for op in c.history if op.invoke > 11.0]
    assert after and all(op.outcome == OK for op in after)
    states = {n.id: sorted(n.peer_states().values()) for n in c.nodes()}
    assert all(v == ["alive"] * 4 for v in states.values()), states
    _assert_model(c)


def test_crash_loses_the_nodes_memory_and_restart_serves_again() -> None:
    c = SimCluster(3, 3, CFG, swim=SWIM)
    node = c.node("n2")
    c.crash("n2", at=2.0)
    c.restart("n2", at=4.0)
    c.add_clients(1, Workload(ops=500, keys=30, think=0.01, timeout=2.0), targets=["n1"])
    c.run()
    assert c.node("n2") is not node  # a new incarnation
    assert c.downtime() == {"n2": 2.0}
    faults = [(f.verb, f.args, f.time, f.end) for f in c.faults]
    assert faults == [("crash", "n2", 2.0, 4.0), ("restart", "n2", 4.0, None)]
    during = [op for op in c.history if 2.5 < op.invoke < 3.9 and op.outcome != OK]
    assert during, "requests for n2's slots must fail while it is down"
    assert {op.error for op in during} <= {"owner_down", "forward_timeout"}
    assert all(op.outcome == OK for op in c.history if op.invoke > 6.0)


def test_codec_on_and_off_give_the_same_run_but_only_codec_counts_bytes() -> None:
    on = _run(11, loss=0.05, codec=True)
    off = _run(11, loss=0.05, codec=False)
    assert [(o.f, o.key, o.outcome, o.result) for o in on.history] == [
        (o.f, o.key, o.outcome, o.result) for o in off.history
    ]
    assert all(b > 0 for _, b in on.messages_by_kind().values())
    assert all(b == 0 for _, b in off.messages_by_kind().values())


def test_a_failing_scenario_reports_its_seed() -> None:
    c = _run(5)
    # corrupt one read to prove the model check can fail, and names what it found
    read = next(op for op in c.history if op.f == "get" and op.result is not None)
    read.result = "never-written"
    violations = check_reads(c.history)
    assert len(violations) == 1 and "never-written" in str(violations[0])
