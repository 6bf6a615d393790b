"""The nemesis: seeded schedules, faults that undo exactly what they did, and their evidence."""

from __future__ import annotations

import itertools

import pytest

from kvcore.config import NodeConfig
from kvcore.membership import SwimConfig
from sim.clients import OK, Workload
from sim.cluster import SimCluster
from sim.latency import LogNormal
from sim.nemesis import (
    KINDS,
    Crashes,
    FaultReport,
    LossSpikes,
    MemberChanges,
    Nemesis,
    Partitions,
    parse_kinds,
)
from sim.network import Link, Loss, Partition

CFG = NodeConfig(forward_timeout=1.0)
SWIM = SwimConfig.lan(probe_interval=0.5, probe_timeout=0.2, suspicion_mult=3, push_pull_interval=2.0)
IDS = ["n1", "n2", "n3", "n4", "n5"]


def _run(seed: int, kinds: str, *, until: float = 10.0, window: tuple[float, float] = (0.5, 8.0),
         loss: float = 0.0) -> tuple[SimCluster, object]:
    c = SimCluster(seed, 5, CFG, swim=SWIM)
    if loss:
        c.set_loss(loss)
    run = Nemesis(kinds, seed).apply(c, *window)
    c.add_clients(3, Workload(ops=60, keys=10, pace=until / 60, think=0.01, timeout=1.5))
    c.run()
    return c, run


def test_kinds_parse_with_aliases_and_unknown_kinds_are_named() -> None:
    assert parse_kinds("partition, crash") == ("partition", "crash")
    assert parse_kinds("none") == ()
    assert "crash" not in parse_kinds("network") and "crash" in parse_kinds("all")
    assert set(parse_kinds("network,all")) <= set(KINDS)
    with pytest.raises(ValueError, match=r"unknown nemesis 'flood'.*partition"):
        parse_kinds("partition,flood")
    # the partition flavours are one package: one partition at a time
    assert [type(p) for p in Nemesis("bridge,crash,oneway").packages] == [Partitions, Crashes]


def test_the_same_seed_plans_the_same_faults_and_packages_do_not_disturb_each_other() -> None:
    a = Nemesis("partition,crash,loss", seed=4).plan(IDS, 0.5, 20.0)
    b = Nemesis("partition,crash,loss", seed=4).plan(IDS, 0.5, 20.0)
    assert a == b and len(a) >= 6
    assert Nemesis("partition,crash,loss", seed=5).plan(IDS, 0.5, 20.0) != a
    # adding packages leaves the others' schedules alone (one random stream per package)
    crashes = [r for r in a if r.kind == "crash"]
    alone = Nemesis("crash", seed=4).plan(IDS, 0.5, 20.0)
    assert crashes == alone
    for r in a:
        assert 0.5 <= r.start < r.end <= 20.0
    # one package's faults never overlap
    for kind in ("partition", "crash", "loss"):
        mine = [r for r in a if r.kind == kind]
        assert all(x.end <= y.start for x, y in itertools.pairwise(mine))


def test_partitions_drop_messages_and_are_removed_exactly_when_they_end() -> None:
    c, run = _run(3, "partition,bridge,oneway")
    recs = run.records
    assert {r.kind for r in recs} >= {"partition", "bridge"}
    for r in recs:
        assert r.fired == pytest.approx(r.start) and r.undone == pytest.approx(r.end)
        assert r.hits > 0 and r.dropped == r.hits, f"{r.describe()}: the rule must have fired"
        a, b = r.sides
        assert a and b and not set(a) & set(b)
        if r.kind == "bridge":
            (bridge,) = r.nodes
            assert bridge not in a and bridge not in b and len(a) + len(b) == 4
    assert not [x for x in c.net.rules if isinstance(x, Partition)], "every partition was undone"
    # each fault is on the cluster's time axis, with its end
    parts = [f for f in c.faults if f.verb == "partition"]
    assert [(f.time, f.end) for f in parts] == [(r.fired, r.undone) for r in recs]
    assert c.net.rule_hits()["partition"] + c.net.rule_hits().get("partition-oneway", 0) == sum(
        r.hits for r in recs
    )


def test_a_oneway_partition_drops_one_direction_only() -> None:
    c = SimCluster(1, 5, CFG, swim=SWIM)
    run = Nemesis([Partitions(flavours=("oneway",), quiet=(0.2, 0.2), length=(3.0, 3.0))], seed=1).apply(c, 0, 3.5)
    c.run(until=2.0)
    (rule,) = [x for x in c.net.rules if isinstance(x, Partition)]
    assert rule.oneway
    src, dst = sorted(rule.a)[0], sorted(rule.b)[0]
    assert rule.decide(c.net, src, dst) == "partition-oneway"
    assert rule.decide(c.net, dst, src) is None
    c.run(until=4.0)
    assert run.records[0].dropped > 0 and not [x for x in c.net.rules if isinstance(x, Partition)]


def test_a_crashed_node_is_down_exactly_as_long_as_scheduled() -> None:
    c, run = _run(5, "crash")
    recs = [r for r in run.records if r.fired is not None]
    assert len(recs) >= 2
    for r in recs:
        assert r.downtime == pytest.approx(r.end - r.start)
        (nid,) = r.nodes
        assert c.is_up(nid), "every crashed node is restarted when its fault ends"
    down: dict[str, float] = {}
    for r in recs:
        down[r.nodes[0]] = down.get(r.nodes[0], 0.0) + r.downtime
    assert c.downtime() == pytest.approx(down)
    assert sum(r.dropped for r in recs) > 0, "messages to the down node were dropped"
    verbs = [f.verb for f in c.faults]
    assert verbs.count("crash") == verbs.count("restart") == len(recs)


def test_a_crash_keeps_a_durable_nodes_store_and_loses_a_memory_only_one() -> None:
    for durable in (False, True):
        c = SimCluster(2, 3, NodeConfig(forward_timeout=1.0, durable=durable), swim=SWIM)
        c.add_clients(1, Workload(ops=200, keys=30, pace=0.005, think=0.0, timeout=1.0), targets=["n1"])
        # one crash, from t=2 to t=3
        run = Nemesis([Crashes(quiet=(2.0, 2.0), length=(1.0, 1.0))], seed=2).apply(c, 0, 3.0)
        crashed = run.records[0].nodes[0]
        c.run(until=1.9)
        before = c.node(crashed).store.count()
        assert before > 0
        c.run(until=3.5)
        assert run.records[0].undone == 3.0 and c.is_up(crashed)
        after = c.node(crashed).store.count()
        assert (after >= before) if durable else (after < before), (durable, before, after)


def test_loss_and_latency_spikes_restore_what_was_there_and_slow_nodes_delay() -> None:
    c, run = _run(7, "loss,latency,slow", loss=0.01)
    base_latency = LogNormal(0.001, 0.5)
    assert c.net.latency == base_latency
    (loss,) = [x for x in c.net.rules if isinstance(x, Loss)]
    assert loss.probability == 0.01, "the background loss is back after each spike"
    assert not [x for x in c.net.rules if isinstance(x, Link)]
    by_kind = FaultReport(run.records).by_kind()
    assert by_kind["loss"]["dropped"] > 0
    assert by_kind["latency"]["delayed"] > 0 and by_kind["slow"]["delayed"] > 0
    for r in run.records:
        if r.kind == "loss":
            assert 0.1 <= r.param <= 0.5 and r.dropped == r.hits


def test_the_fault_report_lines_faults_up_with_the_operations() -> None:
    c, run = _run(5, "crash,partition")
    report = run.report()
    assert len(report) == len(run.records) > 0
    table = report.table()
    assert set(table.dtype.names) >= {"kind", "fired", "undone", "dropped", "downtime", "ops", "ops_not_ok"}
    for row in report:
        during = [op for op in c.history if row["fired"] <= op.invoke < row["undone"]]
        assert row["ops"] == len(during)
        assert row["ops_ok"] == sum(op.outcome == OK for op in during)
    # crashes cost availability: operations during them did not all succeed
    crash_rows = [row for row in report if row["kind"] == "crash"]
    assert sum(row["ops_not_ok"] for row in crash_rows) > 0
    assert "crash" in report.summary()


def test_a_fault_still_active_when_the_run_stops_reports_what_it_did_so_far() -> None:
    c = SimCluster(1, 5, CFG, swim=SWIM)
    run = Nemesis([LossSpikes(quiet=(0.1, 0.1), length=(5.0, 5.0))], seed=1).apply(c, 0, 10.0)
    c.run(until=2.0)
    (r,) = [x for x in run.records if x.fired is not None]
    assert r.undone is None and r.dropped > 0 and r.sent > r.dropped


def test_a_loss_spike_adds_to_the_background_loss_and_restores_it() -> None:
    """A spike is a loss of its own on top of ``--loss``: it never lowers the loss (it replaced
    the background's rate, so a spike of 0.3 over 0.5 made the network more reliable)."""
    c = SimCluster(1, 5, CFG, swim=SWIM)
    c.net.set_loss(0.5)
    run = Nemesis([LossSpikes(quiet=(0.1, 0.1), length=(5.0, 5.0))], seed=1).apply(c, 0, 10.0)
    c.run(until=2.0)
    (r,) = [x for x in run.records if x.fired is not None]
    spike = float(r.param)
    assert 0.1 <= spike <= 0.5
    (rule,) = [x for x in c.net.rules if isinstance(x, Loss)]
    assert rule.probability == pytest.approx(1 - 0.5 * (1 - spike)) and rule.probability > 0.5
    assert r.detail == f"{spike:g} over 0.5: {rule.probability:.3g}"
    c.run(until=12.0)  # past the nemesis window: every spike undone
    assert r.undone is not None and all(x.undone is not None for x in run.records if x.fired is not None)
    (rule,) = [x for x in c.net.rules if isinstance(x, Loss)]
    assert rule.probability == 0.5  # the background's, back


def test_a_reshard_moves_a_slot_that_holds_keys_to_its_target() -> None:
    c, run = _run(4, "reshard")
    fired = [r for r in run.records if r.fired is not None]
    assert fired and all(r.detail == "moved" for r in fired), [r.describe() for r in run.records]
    last = fired[-1]
    (source,), (target,) = last.sides
    slot = int(last.target.split()[1])  # "slot 1234 n2 -> n4"
    assert source != target
    assert all(n.slot_map.owner(slot) == target for n in c.nodes()), "every node learned the move"
    assert [f.verb for f in c.faults].count("reshard") == len(fired)


def test_a_partial_partition_leaves_one_node_talking_to_one_other_only() -> None:
    """The Cloudflare 2020 shape: x reaches y, and nobody else; y still reaches everyone."""
    c = SimCluster(2, 5, CFG, swim=SWIM)
    run = Nemesis([Partitions(flavours=("partial",), quiet=(0.2, 0.2), length=(3.0, 3.0))], seed=2).apply(c, 0, 3.5)
    c.run(until=2.0)
    rec = run.records[0]
    alone, friend = rec.nodes
    (rule,) = [x for x in c.net.rules if isinstance(x, Partition)]
    others = [n for n in IDS if n not in (alone, friend)]
    assert rec.target == f"{alone} sees only {friend}"
    assert rule.decide(c.net, alone, friend) is None and rule.decide(c.net, friend, alone) is None
    assert all(rule.decide(c.net, alone, o) and rule.decide(c.net, o, alone) for o in others)
    assert all(rule.decide(c.net, friend, o) is None for o in others)
    c.run(until=4.0)
    assert not [x for x in c.net.rules if isinstance(x, Partition)]


def test_a_duplication_spike_delivers_messages_twice_then_stops() -> None:
    c, run = _run(3, "duplicate")
    recs = [r for r in run.records if r.fired is not None]
    assert recs and all(0.1 <= r.param <= 0.5 for r in recs)
    assert c.net.stats.duplicated > 0
    assert c.net._dup is None, "the last spike ended: no duplication rule is left"


def test_the_raft_alias_adds_partial_partitions_duplication_and_power_loss_and_all_is_unchanged() -> None:
    assert parse_kinds("raft") == ("partition", "bridge", "oneway", "loss", "latency", "slow",
                                   "partial", "duplicate", "crash", "powerloss")
    assert "partial" not in parse_kinds("all") and "duplicate" not in parse_kinds("all")


def test_a_member_change_removes_a_voter_then_a_new_node_joins_and_the_removed_one_leaves() -> None:
    """Jepsen's member nemesis on a replicated group: what ``storelab cluster remove-node`` and
    ``add-node`` do, under load; the history stays linearizable."""
    import checker

    c = SimCluster(5, 3, CFG, swim=SWIM, replicas=3)
    run = Nemesis([MemberChanges(quiet=(1.0, 1.0), length=(2.0, 2.0))], seed=5).apply(c, 1.0, 9.0)
    c.add_clients(3, Workload(ops=60, keys=10, pace=12.0 / 60, think=0.01, timeout=1.5))
    c.run(until=14.0)
    fired = [r for r in run.records if r.fired is not None]
    done = [r for r in fired if r.detail.startswith("removed")]
    assert done, [r.describe() for r in run.records]
    for rec in done:
        victim, new = rec.nodes[0], rec.detail.split()[-1]
        assert rec.target == f"remove {victim}" and new not in IDS[:3]
        assert not c.is_up(victim), f"{victim} left (its process stopped)"
    lead = next(n for n in c.nodes() if n.replica is not None and n.replica.raft.role == "leader")
    voters = set(lead.replica.raft.log.conf().voters)
    assert not voters & {r.nodes[0] for r in done} and len(voters) >= 3
    assert [f.verb for f in c.faults].count("remove_voter") == len(fired)
    ops = checker.events_to_ops(c.history.events())
    assert checker.check(ops, checker.KV).verdict == checker.LINEARIZABLE


def test_member_changes_need_a_replicated_group_and_are_not_in_any_alias() -> None:
    _c, run = _run(1, "member")
    assert run.records and all(r.skipped == "membership changes need a replicated group" for r in run.records)
    assert all("member" not in parse_kinds(a) for a in ("all", "raft", "network"))
    assert "member" in KINDS


def _first_seen_committed(c: SimCluster, step: float) -> dict[str, list[float | None]]:
    """Poll every ``step`` s: per node, [when a committed configuration first included it, when
    one first excluded it after that], read at any live node's log (reads only: the run's
    digest stays)."""
    seen: dict[str, list[float | None]] = {}

    def poll() -> object:
        while True:
            for node in c.nodes():
                log = node.replica.raft.log
                for at, conf in log.confs:
                    if at > log.committed:
                        continue
                    for nid in c.ids:
                        mark = seen.setdefault(nid, [None, None])
                        member = nid in conf.voters or nid in conf.learners
                        if member and mark[0] is None:
                            mark[0] = c.now
                        elif not member and mark[0] is not None and mark[1] is None:
                            mark[1] = c.now
            yield c.env.timeout(step)

    c.env.process(poll())
    return seen


@pytest.mark.parametrize("seed", [5, 8])
def test_member_nemesis_clients_follow_the_committed_members(seed: int) -> None:
    """As Jepsen's member nemesis tells its clients which nodes are members: once a voter's
    removal is committed no client operation goes to it (it would answer 503 removed, then, once
    it left, nothing: a client timeout), and a node the nemesis added gets operations once its
    addition committed. Before, the clients picked among every node the cluster ever had."""
    c = SimCluster(seed, 3, CFG, swim=SWIM, replicas=3)
    step = 0.005
    seen = _first_seen_committed(c, step)
    run = Nemesis([MemberChanges(quiet=(1.0, 1.0), length=(2.0, 2.0))], seed=seed).apply(c, 1.0, 9.0)
    c.add_clients(3, Workload(ops=100, keys=10, pace=12.0 / 100, think=0.01, timeout=1.5))
    c.run()
    done = [r for r in run.records if r.detail.startswith("removed")]
    assert len(done) >= 2, [r.describe() for r in run.records]
    for rec in done:
        victim, new = rec.nodes[0], rec.detail.split()[-1]
        gone = seen[victim][1]
        assert gone is not None
        to_victim = [op.invoke for op in c.history if op.node == victim]
        assert to_victim and min(to_victim) < gone, "it was a choice until its removal committed"
        late = [op.invoke for op in c.history if op.node == victim and op.invoke >= gone]
        assert late == [], f"{len(late)} operations went to {victim} after its removal committed at {gone:.3f}"
        added = seen[new][0]
        assert added is not None
        to_new = [op.invoke for op in c.history if op.node == new]
        assert to_new, f"the new node {new} got no operation"
        assert min(to_new) >= added - step, "a choice only once its addition committed"
    errors = c.history.errors()
    assert "removed" not in errors and "client_timeout" not in errors, errors
    import checker

    ops = checker.events_to_ops(c.history.events())
    assert checker.check(ops, checker.KV).verdict == checker.LINEARIZABLE


def test_without_membership_changes_clients_choose_among_every_node_as_before(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The clients follow the group's committed members, and while those are the nodes the
    group was formed with they are every node in id order: the clients draw exactly the nodes
    they drew before (the digest of every run without the member nemesis stays), through crashes,
    a power loss and partitions."""
    from sim.sweep import RunConfig, simulate

    calls: list[bool] = []
    real = SimCluster.client_nodes

    def checked(self: SimCluster) -> list[str]:
        got = real(self)
        calls.append(got == self.ids)
        return got

    monkeypatch.setattr(SimCluster, "client_nodes", checked)
    simulate(3, RunConfig(nodes=3, replicas=3, nemesis="raft", ops=120, duration=6.0))
    simulate(3, RunConfig(nodes=5, nemesis="all", ops=60, duration=4.0))
    assert len(calls) == 180 and all(calls)


def test_a_member_change_sees_a_removal_committed_while_the_group_has_no_leader() -> None:
    """At the fault's end the nemesis asked only the current leader whether the removal had
    committed: with none at that moment (here the leader crashed right after the commit, leaving
    one of two voters up, which cannot elect) a committed removal read "not seen committed" and the
    removed node never left. It now asks every live node's committed configuration."""
    from sim.replicas import committed_conf

    c = SimCluster(5, 3, CFG, swim=SWIM, replicas=3)
    run = Nemesis([MemberChanges(quiet=(1.0, 1.0), length=(3.0, 3.0))], seed=5).apply(c, 1.0, 5.5)
    c.run(until=2.5)
    rec = next(r for r in run.records if r.fired is not None)
    end = rec.fired + 3.0
    victim = rec.nodes[0]
    while c.now < end - 0.5:
        newest = committed_conf(c)
        if newest is not None and victim not in newest[1].voters:
            break
        c.run(until=c.now + 0.01)
    assert newest is not None and victim not in newest[1].voters, "the removal committed"
    lead = next(n.id for n in c.nodes() if n.replica is not None and n.replica.raft.role == "leader"
                and n.id != victim)
    c.crash(lead)
    c.run(until=end + 0.1)  # the fault ends with no leader
    assert not any(n.replica is not None and n.replica.raft.role == "leader" for n in c.nodes())
    assert rec.detail.startswith(f"removed {victim}, added "), rec.describe()
    c.run(until=end + 5.0)
    assert not c.is_up(victim), f"{victim} left (its process stopped)"
