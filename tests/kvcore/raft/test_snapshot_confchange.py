"""Snapshots, log compaction, InstallSnapshot in chunks (Raft §7, Figure 13) and membership
changes one server at a time with learners (thesis §4.1, §4.2)."""

from __future__ import annotations

import pytest

from kvcore.raft import FOLLOWER, LEADER, MemoryRaftStorage, ProposalRefused
from kvcore.raft.log import RaftLog
from kvcore.raft.messages import CONF, ConfChange, Entry, RaftSnapshot, Snapshot

from .harness import Network, SafetyChecker


def image(net: Network, node: str) -> bytes:
    n = net.nodes[node]
    return n.snapshot_data + b"|" + b",".join(e.data for e in n.applied if e.data)


def test_compaction_replaces_the_applied_prefix_with_a_snapshot() -> None:
    """"the entire current system state is written to a snapshot on stable storage, then the
    entire log up to that point is discarded." Reference: §7."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    for i in range(5):
        net.propose("1", f"v{i}".encode())
    net.stabilize()
    r = net.raft("1")
    r.compact(4, b"state@4")
    rd = net.process_ready("1")
    assert rd is not None and rd.compacted is not None and rd.compacted.meta.index == 4
    stored = net.nodes["1"].storage.load()
    assert stored.snapshot.meta.index == 4 and [e.index for e in stored.entries] == [5, 6]
    assert r.log.first_index() == 5 and r.log.term(4) == 1 and r.log.term(3) is None
    with pytest.raises(ValueError, match="not applied"):
        r.compact(99, b"")


def test_a_lagging_follower_gets_the_snapshot_in_chunks_that_fit_a_frame() -> None:
    """"the leader must occasionally send snapshots to followers that lag behind" ... in chunks
    (Figure 13: offset, data, done), each at most max_snapshot_chunk bytes. Reference: §7."""
    net = Network(["1", "2", "3"], max_snapshot_chunk=100)
    net.elect("1")
    net.isolate("3")
    for i in range(10):
        net.propose("1", f"v{i}".encode())
    net.stabilize()
    big = bytes(range(256)) * 3  # 768 bytes: 8 chunks
    net.raft("1").compact(net.raft("1").log.applied, big)
    net.stabilize()
    net.recover()
    chunks: list[RaftSnapshot] = []
    orig = net.deliver

    def spy(m):  # type: ignore[no-untyped-def]
        if isinstance(m, RaftSnapshot):
            chunks.append(m)
        orig(m)

    net.deliver = spy  # type: ignore[method-assign]
    net.tick_all(3)
    assert len(chunks) >= 8 and all(len(c.data) <= 100 for c in chunks)
    assert net.raft("1").stats["snapshot_chunks_sent"] == len(chunks)
    assert net.raft("3").stats["snapshots_installed"] == 1
    assert net.nodes["3"].snapshot_data == big
    assert net.raft("3").log.snapshot.meta.index == net.raft("1").log.snapshot.meta.index
    net.propose("1", b"after")
    net.stabilize()
    assert net.nodes["3"].applied[-1].data == b"after"
    assert net.nodes["3"].storage.load().snapshot.data == big


def test_a_lost_chunk_is_resent() -> None:
    """Chunks lost on the way are sent again from what the follower holds."""
    net = Network(["1", "2", "3"], max_snapshot_chunk=10)
    net.elect("1")
    net.isolate("3")
    net.propose("1", b"x")
    net.stabilize()
    net.raft("1").compact(2, b"0123456789" * 5)
    net.stabilize()
    net.recover()
    net.drop_rate = 0.3
    for _ in range(200):
        net.tick_all()
        if net.nodes["3"].snapshot_data:
            break
    assert net.nodes["3"].snapshot_data == b"0123456789" * 5
    # 50 bytes in chunks of 10 are 5 chunks: more were sent, so a lost one went again
    assert net.raft("1").stats["snapshot_chunks_sent"] > 5
    assert net.raft("3").stats["snapshots_installed"] == 1


def test_a_snapshot_the_follower_already_agrees_with_keeps_the_following_entries() -> None:
    """"If existing log entry has same index and term as snapshot's last included entry, retain
    log entries following it and reply." Reference: Figure 13, InstallSnapshot rule 6."""
    net = Network(["1", "2"])
    net.elect("1")
    for i in range(4):
        net.propose("1", f"v{i}".encode())
    net.stabilize()
    snap = Snapshot(meta=net.raft("1").log.snapshot.meta, data=b"")
    meta = type(snap.meta)(index=3, term=1, conf=snap.meta.conf)
    r2 = net.raft("2")
    r2.log.committed = 2  # pretend 2 knows less
    r2.step(RaftSnapshot(term=1, src="1", dst="2", meta=meta, offset=0, data=b"img", done=True))
    assert r2.log.committed == 3 and r2.log.last_index() == 5 and r2.pending_snapshot is None


def test_a_node_restarts_from_its_snapshot() -> None:
    net = Network(["1", "2", "3"])
    net.elect("1")
    for i in range(3):
        net.propose("1", f"v{i}".encode())
    net.stabilize()
    net.raft("2").compact(3, b"img3")
    net.process_ready("2")
    net.crash("2")
    net.restart("2")
    r = net.raft("2")
    assert r.log.snapshot.data == b"img3" and r.log.applied == 3 and r.log.committed >= 3


def test_storage_snapshot_keeps_a_matching_suffix_and_drops_a_conflicting_log() -> None:
    s = MemoryRaftStorage(["1"])
    s.save(None, [Entry(term=1, index=i) for i in (1, 2, 3)], None)
    meta = s.load().snapshot.meta
    s.save(None, [], Snapshot(meta=type(meta)(index=2, term=1, conf=meta.conf)))
    s.sync()
    assert [e.index for e in s.load().entries] == [3]
    s.save(None, [], Snapshot(meta=type(meta)(index=5, term=4, conf=meta.conf)))
    s.sync()
    assert s.load().entries == [] and s.load().snapshot.meta.index == 5


# --- membership ----------------------------------------------------------------------------------


def conf_change(net: Network, leader: str, op: str, node: str) -> None:
    net.raft(leader).propose_conf_change(op, node)
    net.stabilize()


def test_no_configuration_change_before_the_leader_commits_an_entry_of_its_term() -> None:
    """The no-op-first fix: "a leader may not append a new configuration entry until it has
    committed an entry from its current term" (Ongaro, raft-dev, 2015). Reference: thesis §4.1
    (errata)."""
    net = Network(["1", "2", "3"])
    net.lead_before_noop_commits("1")
    assert net.raft("1").role == LEADER and not net.raft("1").committed_in_term()
    with pytest.raises(ProposalRefused, match="not committed an entry of its term"):
        net.raft("1").propose_conf_change("add-learner", "4")


def test_one_change_at_a_time() -> None:
    """"the leader ... does not allow any further configuration changes until the previous one
    has committed." Reference: thesis §4.1."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.raft("1").propose_conf_change("add-learner", "4")
    with pytest.raises(ProposalRefused, match="one server at a time"):
        net.raft("1").propose_conf_change("add-learner", "5")


def test_a_learner_catches_up_without_voting_then_is_promoted() -> None:
    """"new servers join the cluster as non-voting members ... the leader replicates log entries
    to them, but they are not yet counted towards majorities" and are promoted once caught up.
    Reference: thesis §4.2.1."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    for i in range(5):
        net.propose("1", f"v{i}".encode())
    net.stabilize()
    net.add_node("4", MemoryRaftStorage(["1", "2", "3"]))  # a fresh server, empty log
    net.cut("1", "4")
    conf_change(net, "1", "add-learner", "4")
    assert net.raft("1").log.conf().learners == ("4",)
    with pytest.raises(ProposalRefused, match="has not caught up"):
        net.raft("1").propose_conf_change("promote", "4")
    net.recover()
    net.tick_all(2)
    assert net.raft("4").log.committed == net.raft("1").log.committed
    conf_change(net, "1", "promote", "4")
    assert set(net.raft("1").log.conf().voters) == {"1", "2", "3", "4"}
    net.cut("1", "2")
    net.cut("1", "3")
    _, idx = net.propose("1", b"needs 3 of 4")
    net.stabilize()
    assert net.raft("1").log.committed < idx  # 1 and 4 are not a majority of four
    net.recover()
    net.tick_all(2)
    assert net.raft("1").log.committed >= idx


def test_a_learner_never_campaigns_or_counts() -> None:
    """Learners receive the log but are not counted and do not start elections. Reference:
    thesis §4.2.1."""
    net = Network(["1", "2", "3"], learners=["4"])
    net.elect("1")
    net.isolate("4")
    for _ in range(50):
        net.tick("4")
        net.stabilize()
    assert net.raft("4").role == FOLLOWER and net.raft("4").term <= 1
    net.recover()
    net.cut("1", "2")
    net.cut("1", "3")
    _, idx = net.propose("1", b"x")
    net.stabilize()
    assert net.raft("1").log.committed < idx


def test_promoting_a_non_learner_is_refused() -> None:
    net = Network(["1", "2", "3"])
    net.elect("1")
    with pytest.raises(ProposalRefused, match="add it as a learner first"):
        net.raft("1").propose_conf_change("promote", "9")
    with pytest.raises(ValueError, match="unknown configuration change"):
        net.raft("1").propose_conf_change("add-voter", "9")


def test_a_removed_leader_steps_down_once_the_change_commits() -> None:
    """"the leader steps down (returns to follower state) once the Cnew entry is committed";
    until then it manages a cluster that does not include itself. Reference: thesis §4.2.2."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    conf_change(net, "1", "remove", "1")
    assert net.raft("1").role == FOLLOWER and not net.raft("1").promotable()
    for _ in range(40):
        net.tick_all()
        if net.leaders():
            break
    assert net.leaders() and net.leaders()[0] in ("2", "3")
    net.propose(net.leaders()[0], b"without 1")
    net.stabilize()


def test_a_configuration_takes_effect_on_append_and_rolls_back_with_truncation() -> None:
    """"a server always uses the latest configuration in its log, regardless of whether that
    entry is committed" — so a truncated configuration entry takes its configuration with it.
    Reference: thesis §4.1."""
    s = MemoryRaftStorage(["1", "2", "3"]).load()
    log = RaftLog(s.snapshot)
    log.append([Entry(term=1, index=1),
                Entry(term=1, index=2, kind=CONF, data=ConfChange(op="add-learner", node="4").encode())])
    assert log.conf().learners == ("4",)
    log.commit_to(1)
    assert log.maybe_append(1, 1, 1, [Entry(term=2, index=2)]) == 2
    assert log.conf().learners == () and log.last_conf_index() == 0


def test_membership_changes_under_random_faults_keep_figure3() -> None:
    """Add a learner, promote it and remove a voter while messages are lost; safety holds."""
    chk = SafetyChecker()
    net = Network(["1", "2", "3"], seed=5)
    net.add_node("4", MemoryRaftStorage(["1", "2", "3"]))
    net.elect("1")
    net.drop_rate = 0.2
    steps = [("add-learner", "4"), ("promote", "4"), ("remove", "2")]
    for _ in range(400):
        net.tick_all()
        chk.check(net)
        leaders = net.leaders()
        if steps and leaders:
            try:
                net.raft(leaders[0]).propose_conf_change(*steps[0])
                steps.pop(0)
            except ProposalRefused:
                pass
    net.drop_rate = 0
    net.tick_all(20)
    chk.check(net)
    assert not steps
    leader = net.leaders()[0]
    assert set(net.raft(leader).log.conf().voters) == {"1", "3", "4"}


# --- a removed server that missed its removal (thesis §4.2.3) -----------------------------------


def _removed_while_cut_off(**cfg: object) -> Network:
    """Four voters; 4 is cut off while the leader removes it, and comes back knowing nothing."""
    net = Network(["1", "2", "3", "4"], **cfg)
    net.elect("1")
    net.isolate("4")
    conf_change(net, "1", "remove", "4")
    net.recover()
    assert "4" in net.raft("4").log.conf().voters and net.raft("4").promotable()
    return net


def test_a_removed_server_that_missed_its_removal_is_told_and_stops_campaigning() -> None:
    """"servers that are removed from the cluster ... will not receive heartbeats, so they will
    time out and start new elections" — PreVote and leader stickiness keep them from disrupting
    the cluster, and the members that know the removal committed tell them, so they also stop
    trying. Reference: thesis §4.2.3."""
    net = _removed_while_cut_off()
    r4 = net.raft("4")
    for _ in range(20 * r4.cfg.election_tick):  # twenty election timeouts
        net.tick("4")
        net.stabilize()
    assert r4.stats["campaigns"] == 1 and r4.removed() and r4.removed_at == 2
    assert not r4.promotable() and r4.role == FOLLOWER
    assert sum(net.raft(i).stats["removed_told"] for i in "123") == 3
    assert net.leaders() == ["1"] and net.raft("1").term == 1  # nobody was disrupted
    # it no longer counts itself: a campaign asked of it is refused
    r4.campaign()
    assert r4.stats["campaigns"] == 1 and not r4.msgs


def test_the_removal_and_the_notice_are_notable_lines_and_the_campaigns_are_not() -> None:
    """What realnet logs at INFO (RaftConfig.notable): the removal as each side learns it; not
    the removed server's PreVote rounds, nor the members' refusals of them."""
    lines: list[str] = []
    net = _removed_while_cut_off(notable=lines.append)
    del lines[:]
    r4 = net.raft("4")
    for _ in range(20 * r4.cfg.election_tick):
        net.tick("4")
        net.stabilize()
    assert sorted(lines) == [
        f"{i} told 4 that the configuration committed at index 2 does not include it" for i in "123"
    ] + ["4 learned from 1 that the configuration committed at index 2 removed it, and stops campaigning"]


def test_without_the_notice_a_removed_server_campaigns_forever() -> None:
    """The baseline the notice changes: the same run with RaftRemoved lost on the way."""
    net = _removed_while_cut_off()
    r4 = net.raft("4")
    orig = net.deliver

    def lose_notices(m):  # type: ignore[no-untyped-def]
        if type(m).__name__ != "RaftRemoved":
            orig(m)

    net.deliver = lose_notices  # type: ignore[method-assign]
    for _ in range(20 * r4.cfg.election_tick):
        net.tick("4")
        net.stabilize()
    assert r4.stats["campaigns"] >= 10 and not r4.removed()
    assert net.leaders() == ["1"] and net.raft("1").term == 1


def test_a_notice_older_than_the_servers_own_configuration_is_ignored() -> None:
    """A member behind on configuration must not silence a server added by an entry it has not
    received yet: the notice names its committed configuration's index, and a server whose log
    holds a newer configuration ignores it."""
    net = Network(["1", "2", "3"])
    net.add_node("4", MemoryRaftStorage(["1", "2", "3"]))
    net.elect("1")
    net.isolate("3")
    conf_change(net, "1", "add-learner", "4")
    conf_change(net, "1", "promote", "4")
    r3, r4 = net.raft("3"), net.raft("4")
    assert "4" in r4.log.conf().voters and r3.log.last_conf_index() == 0
    net.recover()
    net.cut("1", "3")  # 3 hears 4's pre-vote before the leader catches it up
    r4.campaign()
    net.process_ready("4")
    net.deliver_all("3")
    net.process_ready("3")
    told = [m for m in net.inflight if type(m).__name__ == "RaftRemoved"]
    assert [(m.src, m.dst, m.conf_index) for m in told] == [("3", "4", 0)]
    net.deliver_all("4")
    assert not r4.removed() and r4.promotable()


def test_a_configuration_not_yet_committed_is_not_told() -> None:
    """The leader appended "remove 4" but cannot commit it (cut off from 2 and 3): the change may
    yet be rolled back, so 4's pre-vote gets no notice."""
    net = Network(["1", "2", "3", "4"])
    net.elect("1")
    net.cut("1", "2")
    net.cut("1", "3")
    net.cut("1", "4")
    net.raft("1").propose_conf_change("remove", "4")
    net.stabilize()
    r1 = net.raft("1")
    assert "4" not in r1.log.conf().voters and r1.log.last_conf_index() > r1.log.committed
    net.recover()
    net.cut("1", "2")
    net.cut("1", "3")
    net.raft("4").campaign()
    net.process_ready("4")
    net.deliver_all("1")
    net.process_ready("1")
    assert r1.stats["removed_told"] == 0
    assert not [m for m in net.inflight if type(m).__name__ == "RaftRemoved"]


def test_a_server_that_applied_its_own_removal_knows_it() -> None:
    """A removed leader commits and applies its own removal (thesis §4.2.2), so it knows without
    a notice. (A removed follower usually does not: the leader stops sending to it once the
    change is appended; the notice is how it learns.)"""
    net = Network(["1", "2", "3"])
    net.elect("1")
    conf_change(net, "1", "remove", "1")
    r1 = net.raft("1")
    assert r1.removed() and r1.removed_at == r1.log.last_conf_index() == 2
    assert net.raft("2").removed_at is None and net.raft("3").removed_at is None
    # a restart finds it again among the committed entries, once the commit index was synced
    # (a commit index alone need not be: then it is volatile, like a notice)
    net.nodes["1"].storage.sync()
    net.restart("1")
    assert net.raft("1").removed() and net.raft("1").removed_at == 2
