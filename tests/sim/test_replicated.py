"""One Raft group serving the store in the sim (kvcore.replica): Raft's promises, end to end.

Each test reads like the rule it checks: a write is acknowledged only once a majority holds it
durably, so no crash of a minority and no power loss of everyone loses it; any node takes any
request; a node cut off from the majority never answers from a stale copy.
"""

from __future__ import annotations

from typing import Any

import pytest

import checker
from kvcore import errors
from kvcore.messages import Delete, Get, Put, Reply
from kvcore.raft.messages import RaftHeartbeat
from kvcore.replica import ReplicaConfig
from kvcore.replica.disk import KVRaftStorage
from kvcore.replica.messages import ReplicaForward, ReplicaReply
from kvcore.slots import key_slot
from sim.clients import Workload
from sim.cluster import SimCluster
from sim.replicas import committed_conf, leader


def wait_for(cluster: SimCluster, cond: Any, limit: float = 20.0, step: float = 0.05) -> None:
    end = cluster.now + limit
    while not cond():
        assert cluster.now < end, "condition not reached in simulated time"
        cluster.run(until=cluster.now + step)


def call(cluster: SimCluster, node: str, op: Any, limit: float = 10.0) -> Reply:
    got: list[Reply] = []
    assert cluster.submit(node, op, got.append)
    wait_for(cluster, lambda: got, limit)
    return got[0]


def a_leader(cluster: SimCluster) -> str:
    wait_for(cluster, lambda: leader(cluster) is not None)
    return str(leader(cluster).id)


def linearizable(cluster: SimCluster) -> bool:
    ops = checker.events_to_ops(cluster.history.events())
    return checker.check(ops, checker.KV).verdict == checker.LINEARIZABLE


def test_a_group_elects_one_leader_and_any_node_serves_reads_and_writes() -> None:
    c = SimCluster(1, 3, replicas=3)
    lead = a_leader(c)
    followers = [n for n in c.ids if n != lead]
    assert call(c, followers[0], Put(key=b"k", value=b"v")).ok  # forwarded to the leader
    assert call(c, followers[1], Get(key=b"k")).value == b"v"  # ReadIndex at a follower
    assert call(c, lead, Delete(key=b"k")).ok
    assert call(c, followers[0], Get(key=b"k")).error == "not_found"
    assert c.node(followers[0]).stats.sent.get("ReplicaForward", 0) >= 1
    wait_for(c, lambda: len({c.node(n).replica.machine.applied for n in c.ids}) == 1)
    assert [c.node(n).store.items() for n in c.ids] == [[], [], []]


def test_the_leader_crashes_under_load_and_no_acknowledged_write_is_lost() -> None:
    c = SimCluster(2, 3, replicas=3)
    lead = a_leader(c)
    c.add_clients(3, Workload(ops=150, keys=4, think=0.02, timeout=3.0))
    c.crash(lead, at=c.now + 1.0)
    c.restart(lead, at=c.now + 3.0)
    c.run()
    new = a_leader(c)
    terms = {c.node(n).replica.raft.term for n in c.ids}
    assert max(terms) >= 2, "a new term began after the leader's crash"
    assert linearizable(c)
    oks = [e for e in c.history.events() if e["type"] == "ok" and e["f"] == "put"]
    assert oks, "the workload made progress"
    assert new in c.ids
    # the old leader came back as a follower and holds what the group applied while it was down
    wait_for(c, lambda: len({c.node(n).replica.machine.applied for n in c.ids}) == 1)
    assert c.node(lead).replica.raft.role != "leader" or new == lead
    assert c.node(lead).store.items() == c.node(new).store.items() != []


@pytest.mark.parametrize("broken", [False, True])
def test_an_acknowledged_write_survives_a_power_loss_of_every_node(broken: bool, monkeypatch: Any) -> None:
    """Figure 2: persist before you answer. Syncs take 50 ms; the power fails 1 ms after the
    client's acknowledgement. Acknowledging before the sync completes (``broken``) loses it."""
    if broken:
        monkeypatch.setattr(KVRaftStorage, "on_durable", lambda self, fn: fn())
    c = SimCluster(3, 3, replicas=3, sync_time="const:0.05")
    lead = a_leader(c)
    assert call(c, lead, Put(key=b"k", value=b"v1")).ok
    c.power_loss(c.ids, at=c.now + 0.001)
    for n in c.ids:
        c.restart(n, at=c.now + 0.5)
    c.run(until=c.now + 0.6)
    lead = a_leader(c)
    got = call(c, lead, Get(key=b"k"))
    if broken:
        assert got.error == "not_found", "the broken variant should lose the write (the test's teeth)"
    else:
        assert got.value == b"v1"


def test_a_node_cut_off_from_the_majority_never_serves_a_stale_read() -> None:
    c = SimCluster(4, 3, replicas=3)
    lead = a_leader(c)
    assert call(c, lead, Put(key=b"k", value=b"old")).ok
    wait_for(c, lambda: all(c.node(n).replica.machine.applied == c.node(lead).replica.machine.applied
                            for n in c.ids))
    c.partition([lead])
    others = [n for n in c.ids if n != lead]
    wait_for(c, lambda: leader(c) is not None and leader(c).id != lead, limit=10)
    assert call(c, others[0], Put(key=b"k", value=b"new")).ok
    stale = call(c, lead, Get(key=b"k"))
    assert stale.error in ("forward_timeout", "no_leader"), stale
    c.heal()
    wait_for(c, lambda: c.node(lead).replica.raft.lead not in (None, lead))
    assert call(c, lead, Get(key=b"k")).value == b"new"


def test_a_retried_forward_is_applied_once() -> None:
    """Thesis §6.3: the same (client, seq) proposed twice answers twice, applies once."""
    c = SimCluster(5, 3, replicas=3)
    lead = a_leader(c)
    assert call(c, lead, Put(key=b"k", value=b"v")).ok
    g = c.node(lead).replica
    f = next(n for n in c.ids if n != lead)
    answers: list[ReplicaReply] = []
    send = g.send

    def spy(dst: str, m: Any) -> None:
        if isinstance(m, ReplicaReply) and m.client == "tester":
            answers.append(m)
        else:
            send(dst, m)

    g.send = spy
    g.on_message(f, ReplicaForward(request_id=1, client="tester", seq=1, acked=1, op=None))
    wait_for(c, lambda: answers)
    delete = ReplicaForward(request_id=2, client="tester", seq=2, acked=2, op=Delete(key=b"k"))
    g.on_message(f, delete)
    wait_for(c, lambda: len(answers) == 2)
    g.on_message(f, delete)  # a resend after a lost reply: applied already, so the session answers
    wait_for(c, lambda: len(answers) == 3)
    assert [m.reply for m in answers[1:]] == [Reply(), Reply()], "the second is not 'not_found'"
    assert g.machine.store.get(b"k") is None
    # a resend while the first copy is still on its way is not proposed twice
    put = ReplicaForward(request_id=3, client="tester", seq=3, acked=3, op=Put(key=b"p", value=b"1"))
    last = g.raft.log.last_index()
    g.on_message(f, put)
    g.on_message(f, put)
    wait_for(c, lambda: len(answers) == 5)
    assert g.stats.deduplicated == 1
    assert g.raft.log.last_index() == last + 1


def test_a_learner_catches_up_from_a_snapshot_then_votes_and_a_voter_can_be_removed() -> None:
    c = SimCluster(6, 3, replicas=3, replica=ReplicaConfig(snapshot_entries=20))
    lead = a_leader(c)
    for i in range(60):
        assert call(c, lead, Put(key=b"k%d" % (i % 7), value=b"%d" % i)).ok
    wait_for(c, lambda: c.node(lead).replica.raft.log.first_index() > 2)  # compacted
    new = c.add_replica()
    wait_for(c, lambda: c.node(new) is not None and new in c.node(new).replica.raft.log.conf().voters)
    g = c.node(new).replica
    assert g.stats.snapshots_installed >= 1, "it caught up from a snapshot"
    assert sorted(g.raft.log.conf().voters) == sorted([*c.ids[:3], new])
    wait_for(c, lambda: g.machine.applied == c.node(lead).replica.machine.applied)
    assert g.machine.store.items() == c.node(lead).replica.machine.store.items()
    victim = next(n for n in c.ids[:3] if n != lead)
    c.remove_replica(victim)
    wait_for(c, lambda: victim not in c.node(lead).replica.raft.log.conf().voters)
    c.crash(victim)
    assert call(c, new, Put(key=b"after", value=b"1")).ok  # 3 voters left, all up


def test_leadership_moves_where_the_operator_asks() -> None:
    c = SimCluster(8, 3, replicas=3)
    lead = a_leader(c)
    target = next(n for n in c.ids if n != lead)
    with pytest.raises(errors.Conflict, match="leader"):
        c.node(target).transfer_leader(lead)
    c.transfer_leader(target)
    wait_for(c, lambda: leader(c) is not None and leader(c).id == target)


def test_form_group_refuses_what_it_cannot_do() -> None:
    c = SimCluster(9, 3, replicas=3)
    n = c.node("n1")
    with pytest.raises(errors.Conflict, match="already in a replicated group"):
        n.form_group(["n1", "n2"])
    n.form_group(["n1", "n2", "n3"])  # a retried create: nothing to do
    plain = SimCluster(9, 2).node("n1")
    plain.store.set(b"x", b"1")
    with pytest.raises(errors.Conflict, match="holds 1 keys"):
        plain.form_group(["n1", "n2"])
    with pytest.raises(errors.BadRequest, match="not among the voters"):
        SimCluster(9, 2).node("n1").form_group(["n2"])


def test_a_raft_message_that_lies_about_its_sender_is_dropped_and_counted() -> None:
    c = SimCluster(10, 3, replicas=3)
    lead = a_leader(c)
    victim = next(n for n in c.ids if n != lead)
    node = c.node(victim)
    before = node.stats.malformed
    forged = RaftHeartbeat(term=99, src=lead, dst=victim, commit=0)
    node.on_message("n-evil", forged)  # the bus says n-evil sent it
    assert node.stats.malformed == before + 1 and node.replica.raft.term < 99
    plain = SimCluster(10, 2).node("n1")
    plain.on_message("n2", forged)  # a node in no group: malformed, not a crash
    assert plain.stats.malformed == 1


def test_replicas_must_be_one_or_every_node() -> None:
    with pytest.raises(ValueError, match="several groups"):
        SimCluster(1, 5, replicas=3)


def test_raft_data_kinds_sent_alone_are_malformed_not_a_crash() -> None:
    """Entry, HardState, Snapshot... are wire kinds only inside Raft's messages."""
    from kvcore.raft.messages import ConfChange, Entry, HardState, Snapshot

    c = SimCluster(11, 3, replicas=3)
    a_leader(c)
    node = c.node("n1")
    before = node.stats.malformed
    for m in (Entry(term=1, index=1), HardState(), Snapshot(), ConfChange(op="remove", node="n1")):
        node.on_message("n2", m)
    assert node.stats.malformed == before + 4


def test_slots_and_keys_do_not_move_in_a_replicated_group() -> None:
    """The store is the state machine: only the log changes it. The node refuses every slot
    move (so realnet's admin door does too), and the sim's verbs say so before trying (but fix,
    which mends the slot map's hints there: the next test). A claim is not refused: it moves no key, only the routing hint (the group serves every slot), so
    it needs no accept_loss even for slots a live member owns."""
    c = SimCluster(12, 3, replicas=3)
    a_leader(c)
    n = c.node("n1")
    for verb in (lambda: n.begin_migrate(5, "n2"), lambda: n.begin_import(5, "n2"),
                 lambda: n.assign_slots("0-10", 99),
                 lambda: n.finish_import([5]), lambda: n.abort_migration(5), lambda: n.rollback_migration([5])):
        with pytest.raises(errors.Conflict, match="replicated group"):
            verb()
    assert c.node("n1").slot_map.owner(16000) == "n3"
    assert call(c, "n1", Put(key=b"k", value=b"v")).ok
    wait_for(c, lambda: c.node("n3").store.items() == n.store.items() != [])
    n.claim_slots("16000-16383", 99)  # n3's, alive: no accept_loss
    assert n.slot_map.owner(16000) == "n1" and n.store.items() == c.node("n3").store.items() != []
    said: list[tuple[int, str]] = []
    n.migrate_keys(5, 10, lambda moved, err: said.append((moved, err)))
    assert said and said[0][0] == 0 and "replicated group" in said[0][1]
    for sim_verb in (lambda: c.reshard([5], "n2"), lambda: c.rebalance(), lambda: c.remove_node("n3")):
        with pytest.raises(ValueError, match="replicated cluster"):
            sim_verb()


def test_a_reshard_fault_is_skipped_in_a_replicated_sweep() -> None:
    from sim.sweep import RunConfig, run_seed

    r = run_seed(1, RunConfig(nodes=3, replicas=3, nemesis="reshard,crash", ops=80, duration=6.0))
    assert r.verdict == "linearizable" and r.figure3 == ()
    reshards = [f for f in r.faults if f.kind == "reshard"]
    assert reshards and all(f.skipped == "slots do not move in a replicated cluster" for f in reshards)


def test_a_voter_removed_while_cut_off_learns_it_stops_campaigning_and_refuses_clients() -> None:
    """Thesis §4.2.3: a server removed while it was cut off never hears of it from the leader.
    Back on the network, its first pre-vote is answered with RaftRemoved: it stops campaigning,
    answers clients 503 removed, and nobody else's term moved."""
    c = SimCluster(11, 4, replicas=4)
    lead = a_leader(c)
    victim = next(n for n in c.ids if n != lead)
    others = [n for n in c.ids if n != victim]
    c.partition([victim])
    c.remove_replica(victim)
    wait_for(c, lambda: victim not in c.node(lead).replica.raft.log.conf().voters
             and c.node(lead).replica.raft.log.committed >= c.node(lead).replica.raft.log.last_conf_index())
    g = c.node(victim).replica
    assert victim in g.raft.log.conf().voters and not g.raft.removed()  # it knows nothing yet
    c.heal()
    terms = {n: c.node(n).replica.raft.term for n in others}
    wait_for(c, lambda: g.raft.removed())
    campaigns = g.raft.stats["campaigns"]
    c.run(until=c.now + 10.0)  # ten seconds: ten or more election timeouts
    assert g.raft.stats["campaigns"] == campaigns and g.raft.role == "follower"
    assert {n: c.node(n).replica.raft.term for n in others} == terms
    assert g.info()["removed_at"] == c.node(lead).replica.raft.log.last_conf_index()
    for op in (Get(key=b"k"), Put(key=b"k", value=b"v")):
        r = call(c, victim, op)
        assert r.error == "removed" and victim in r.message and "ask another node" in r.message
    assert g.stats.removed == 2
    assert call(c, others[0], Put(key=b"k", value=b"v")).ok  # the group serves on without it
    assert all(c.node(n).replica.info()["removed_at"] is None for n in others)


def test_a_snapshot_of_a_large_store_is_built_in_steps_and_a_learner_installs_it() -> None:
    """Thesis §5.2: the image is frozen at an index and built a step per turn (copy on write; the
    steps' interleaving with writes is tested in tests/kvcore/replica/test_state_machine.py); the
    snapshot holds the store at its index, and a learner that installs it catches up to the same
    store."""
    c = SimCluster(12, 3, replicas=3, replica=ReplicaConfig(snapshot_entries=120, image_chunk=8))
    lead = a_leader(c)
    g = c.node(lead).replica
    for i in range(150):
        assert call(c, lead, Put(key=b"k%03d" % (i % 90), value=b"%d" % i)).ok
    wait_for(c, lambda: g.stats.snapshots_taken >= 1)
    assert g.stats.image_steps >= 10  # 90 keys, 8 a step: sorted runs, then merged chunks
    wait_for(c, lambda: all(c.node(n).replica.raft.log.first_index() > 2 for n in c.ids))
    new = c.add_replica()
    wait_for(c, lambda: c.node(new) is not None and new in c.node(new).replica.raft.log.conf().voters)
    ng = c.node(new).replica
    assert ng.stats.snapshots_installed >= 1
    wait_for(c, lambda: ng.machine.applied == g.machine.applied)
    assert ng.machine.store.items() == g.machine.store.items()
    assert [call(c, new, Get(key=b"k%03d" % k)).value for k in (0, 59, 89)] == [b"90", b"149", b"89"]


def test_a_write_queued_behind_a_failed_session_registration_says_it_was_not_applied() -> None:
    """A write waits for its node's client session to be registered before it is sent; when the
    registration is not answered in time, the write is answered 503 no_leader (certainly not
    applied), and its sentence must not say it may have been (the registration's own outcome
    is unknown; the write was never sent)."""
    c = SimCluster(6, 3, replicas=3)
    lead = a_leader(c)
    f = next(n for n in c.ids if n != lead)
    g = c.node(f).replica
    send = g.send

    def drop_forwards(dst: str, m: Any) -> None:
        if not isinstance(m, ReplicaForward):
            send(dst, m)

    g.send = drop_forwards  # the registration never reaches the leader
    got: list[Reply] = []
    assert c.submit(f, Put(key=b"k", value=b"1"), got.append)  # starts the registration
    c.run(until=c.now + 0.5)
    # queued behind the same registration: answered when the registration times out
    assert c.submit(f, Put(key=b"k", value=b"2"), got.append)
    wait_for(c, lambda: len(got) == 2, limit=30.0)
    for r in got:
        assert r.error == "no_leader", r
        assert "may or may not" not in r.message, r.message
        assert "not sent" in r.message and "nothing was applied" in r.message, r.message
    assert c.node(lead).replica.machine.store.get(b"k") is None


def test_a_follower_stopped_across_a_compaction_gets_one_snapshot_not_one_per_heartbeat() -> None:
    """The audit's paused follower, in the sim: every message to and from a follower is held
    (a stopped process: a backlog builds up in its socket) while the leader takes writes and
    compacts its log; released, the follower answers its backlog of heartbeats at once. The
    leader sends it one snapshot, about one image's worth of chunks, and it catches up. Before
    the fix every heartbeat answer started its own stream of chunks (~ one image per heartbeat)."""
    from kvcore.config import NodeConfig

    cfg = NodeConfig(max_key_bytes=64, max_value_bytes=1024, max_frame_bytes=8 * 1024)  # 2 KiB chunks
    c = SimCluster(3, 3, replicas=3, config=cfg, replica=ReplicaConfig(snapshot_entries=100))
    lead = a_leader(c)
    victim = next(n for n in c.ids if n != lead)
    c.hold(dst=victim)
    c.hold(src=victim)
    for i in range(160):
        assert call(c, lead, Put(key=b"k%03d" % i, value=bytes([i % 251]) * 512)).ok
    g = c.node(lead).replica
    wait_for(c, lambda: g.raft.log.first_index() > 100)  # compacted past what the victim holds
    c.run(until=c.now + 3.0)  # 60 heartbeats queue up for the victim
    image = len(g.raft.log.snapshot.data)
    chunk = g.raft.cfg.max_snapshot_chunk
    c.release()
    v = c.node(victim).replica
    wait_for(c, lambda: v.machine.applied >= g.raft.log.snapshot.meta.index and v.stats.snapshots_installed >= 1)
    wait_for(c, lambda: v.machine.applied == g.machine.applied)
    assert v.machine.store.items() == g.machine.store.items()
    one_image = -(-image // chunk)
    assert image > 20 * chunk
    assert g.raft.stats["snapshots_sent"] == 1
    assert one_image <= g.raft.stats["snapshot_chunks_sent"] <= one_image + g.raft.cfg.snapshot_resends


def test_a_groups_raft_takes_the_snapshot_transfers_resends_from_the_replica_config() -> None:
    c = SimCluster(6, 3, replicas=3, replica=ReplicaConfig(snapshot_resend_tick=40, snapshot_resends=7))
    cfg = c.node(a_leader(c)).replica.raft.cfg
    assert (cfg.snapshot_resend_tick, cfg.snapshot_resends) == (40, 7)
    assert (cfg.election_tick, cfg.heartbeat_tick) == (ReplicaConfig.election_tick, ReplicaConfig.heartbeat_tick)


def test_clients_choose_among_the_members_of_the_newest_committed_configuration() -> None:
    """SimCluster.client_nodes: what a client told the cluster's members would pick among. A
    removed voter stops being a choice once its removal committed (while it still runs and
    answers 503 removed), a node added becomes one once its addition committed, and a power
    loss of every node, which leaves no log to read, does not bring the removed one back."""
    c = SimCluster(13, 4, replicas=4)
    lead = a_leader(c)
    assert c.client_nodes() == c.ids == ["n1", "n2", "n3", "n4"]
    victim = next(n for n in c.ids if n != lead)
    c.remove_replica(victim)
    assert victim in c.client_nodes()  # asked, not committed
    wait_for(c, lambda: victim not in c.client_nodes(), step=0.001)
    log = c.node(lead).replica.raft.log
    assert victim not in log.conf().voters and log.conf_committed()
    assert c.is_up(victim) and c.client_nodes() == [n for n in c.ids if n != victim]
    new = c.add_replica()
    assert new in c.ids and new not in c.client_nodes()  # a node, not yet a member
    wait_for(c, lambda: new in c.client_nodes(), step=0.001)
    log = c.node(leader(c).id).replica.raft.log
    assert any(at <= log.committed and new in conf.learners + conf.voters for at, conf in log.confs)
    members = [n for n in c.ids if n != victim]
    assert c.client_nodes() == members
    c.power_loss(c.ids)
    assert c.nodes() == [] and c.client_nodes() == members


def test_unreplicated_clients_choose_among_every_node_left_or_not() -> None:
    """Without a group there is no configuration to follow: every node the cluster has had."""
    c = SimCluster(14, 3)
    c.leave("n3")
    c.run(until=3.0)
    new = c.add_node()
    assert c.client_nodes() == c.ids == ["n1", "n2", "n3", new]


def test_the_slot_map_names_only_the_voters_after_members_turn_over() -> None:
    """The slot map is only a routing hint in a replicated group (every node serves every key),
    but a hint naming a node that left sends smart clients to a dead address first. add_replica
    gives the new voter its even share once it votes, remove_replica hands the removed voter's
    slots to the voters holding fewest once the removal is committed (kvcore.slotmove.Hints,
    the procedure storelab cluster add-node/remove-node drive over HTTP): after n4 joins and n1
    leaves, every node's map names only n2, n3, n4, evenly, and every key is still read."""
    c = SimCluster(4, 3, replicas=3)
    lead = a_leader(c)
    for i in range(40):
        assert call(c, lead, Put(key=b"k%d" % i, value=b"v%d" % i)).ok
    new = c.add_replica()

    def names(want: list[str]) -> bool:
        return all(sorted(n.slot_map.slot_counts()) == want for n in c.nodes())

    wait_for(c, lambda: names(["n1", "n2", "n3", new]), limit=30.0)
    assert all(sorted(n.slot_map.slot_counts().values()) == [4096] * 4 for n in c.nodes())
    c.remove_replica("n1")
    wait_for(c, lambda: names(["n2", "n3", new]), limit=30.0)
    c.leave("n1")
    c.run(until=c.now + 3.0)
    voters = sorted(committed_conf(c)[1].voters)
    assert voters == ["n2", "n3", new]
    maps = [n.slot_map.to_text() for n in c.nodes()]
    assert len(set(maps)) == 1, "every live node has the same map"
    counts = c.node("n2").slot_map.slot_counts()
    assert sorted(counts) == voters and max(counts.values()) - min(counts.values()) <= 1
    assert sum(counts.values()) == 16384
    # the fewest moves: n4 took 1365 or 1366 from each; then only n1's 4096 changed hands
    assert sorted(counts.values()) == [5461, 5461, 5462]
    assert not [f for f in c.faults if f.verb.endswith("_failed")]
    for i in range(40):
        assert call(c, voters[i % 3], Get(key=b"k%d" % i)).value == b"v%d" % i


def test_fix_mends_a_map_that_names_a_node_outside_the_group() -> None:
    """A removal asked of the leader's node verb directly (not remove_replica) leaves the map
    naming the removed node; the sim's fix, as storelab cluster fix on a replicated cluster,
    hands its slots to the voters holding fewest (no key moves)."""
    c = SimCluster(5, 3, replicas=3)
    lead = a_leader(c)
    victim = next(n for n in c.ids if n != lead)
    c.node(lead).remove_voter(victim)
    wait_for(c, lambda: (conf := committed_conf(c)) is not None and victim not in conf[1].voters)
    c.run(until=c.now + 2.0)
    assert all(victim in n.slot_map.slot_counts() for n in c.nodes())  # nobody mended it
    c.fix()
    rest = sorted(n for n in c.ids if n != victim)
    wait_for(c, lambda: all(sorted(c.node(n).slot_map.slot_counts()) == rest for n in rest), limit=30.0)
    counts = c.node(rest[0]).slot_map.slot_counts()
    assert sorted(counts.values()) == [8192, 8192]
    assert [f.args for f in c.faults if f.verb == "fix"] == ["hints"]


def test_a_group_does_not_form_beside_an_unreplicated_clusters_owners_nor_claim_their_slots() -> None:
    """A group serves every slot, so it forms over every member that owns slots, never beside
    them: an audit formed a one-node group inside an unreplicated cluster through the API, where
    it answered the cluster's keys 404 from its empty store, and a ``fix`` through it then claimed
    every slot (every key lost). And should a group member meet such owners all the same (it
    formed before it learned the map), only slots of members of its group are mere hints to it: a
    node that never was in the group holds its keys alone, and the claim guard keeps them; nor
    does the group take such a node as a learner."""
    c = SimCluster(3, 3)
    for i in range(20):
        assert call(c, "n1", Put(key=b"k%d" % i, value=b"v")).ok
    n4 = c.add_node("n4")
    wait_for(c, lambda: c.node(n4) is not None and c.node(n4).slot_map.owner(0) == "n1")
    with pytest.raises(errors.Conflict, match=r"gives slots to n1, n2, n3, outside the voters \['n4'\]"):
        c.node(n4).form_group([n4])
    assert c.node(n4).replica is None

    n5 = c.add_node("n5")
    c.run(until=c.now + 0.001)
    node = c.node(n5)
    assert node is not None and node.slot_map.owner(0) != "n1", "formed before it learned the map"
    node.form_group([n5])
    wait_for(c, lambda: node.slot_map.owner(0) == "n1")
    top = node.slot_map.max_epoch()
    with pytest.raises(errors.Conflict, match=r"owned by n1 \(alive\).*orphan the keys n1 holds"):
        node.claim_slots("0-16383", top + 1)
    assert node.slot_map.owner(0) == "n1"
    # nor may it count n1 a learner: n1 runs no group, so it would switch itself off (lost_state)
    # with the only copy of its keys (the same audit)
    wait_for(c, lambda: node.replica is not None and node.replica.raft.role == "leader")
    with pytest.raises(errors.Conflict, match=r"n1 owns 5461 slots in node n5's map outside the group"):
        node.add_learner("n1")
    assert "n1" not in node.replica.raft.log.conf().learners


def test_a_member_that_lost_its_state_is_observed_as_one_that_does_not_answer() -> None:
    """It acts on nothing and never maps its own old claim, so a hint mend that waited for its
    map waited out its whole time (a review: a wiped voter, then add-node, took 30 s and said the
    hints were not mended). The sim's observer leaves it out, as realnet's snapshot does
    (tests/realnet/test_cli_checks_first.py)."""
    from sim.slotmove import observe

    c = SimCluster(6, 3, replicas=3)
    a_leader(c)
    c.node("n3").lost_group = {"from": "n1", "term": 2}
    snap = observe(c, "n1")
    assert not snap.up("n3") and snap.up("n1") and snap.up("n2")


def test_fix_takes_back_a_lost_mark_a_stray_heartbeat_set_in_an_unreplicated_cluster() -> None:
    """As ``storelab cluster fix`` does: the sender runs no group, so its vouching heartbeat was
    stray or forged; the node serves its keys again, nothing lost."""
    c = SimCluster(12, 3)
    c.run(until=2.0)
    victim = c.node("n2")
    key = next(f"k{i}" for i in range(10_000) if victim.slot_map.owner(key_slot(f"k{i}")) == "n2")
    victim.apply(Put(key=key.encode(), value=b"v"))
    victim.on_message("n1", RaftHeartbeat(term=3, src="n1", dst="n2", commit=5))
    assert victim.lost_group == {"from": "n1", "term": 3}
    c.fix(at=c.now + 0.1)
    c.run(until=c.now + 5.0)
    assert victim.lost_group is None
    assert [f.args for f in c.faults if f.verb == "fix_cleared_lost"] == ["n2 (marked by n1)"]
    got: list[Any] = []
    victim.on_client_request(Get(key=key.encode()), got.append)
    assert got and not got[0].error and got[0].value == b"v"
