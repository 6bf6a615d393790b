"""Paper-sentence tests: log replication, the commit rule, Figure 8, and the persistence
contract (Raft §5.3, §5.4, Figure 2, Figure 8; "persist before send")."""

from __future__ import annotations

import dataclasses
import random

from kvcore.raft import LEADER, MemoryRaftStorage, Raft, RaftConfig
from kvcore.raft.messages import (
    Entry,
    HardState,
    RaftAppend,
    RaftAppendResp,
    RaftHeartbeat,
    RaftHeartbeatResp,
    RaftVote,
    RaftVoteResp,
)

from .harness import Network, SafetyChecker

PLAIN = {"pre_vote": False, "check_quorum": False}


def follower_with(entries: list[tuple[int, int]], term: int = 9) -> Raft:
    """Node 2 whose synced log holds entries given as (term, index)."""
    storage = MemoryRaftStorage(["1", "2", "3"])
    storage.save(HardState(term=term), [Entry(term=t, index=i, data=b"x") for t, i in entries], None)
    storage.sync()
    return Raft(RaftConfig(id="2", **PLAIN), storage.load(), random.Random(0))  # type: ignore[arg-type]


def append(term: int, prev: tuple[int, int], entries: list[tuple[int, int]], commit: int = 0) -> RaftAppend:
    return RaftAppend(term=term, src="1", dst="2", prev_term=prev[0], prev_index=prev[1], commit=commit,
                      entries=tuple(Entry(term=t, index=i, data=b"y") for t, i in entries))


def resp(r: Raft) -> RaftAppendResp:
    return next(m for m in r.ready().messages if isinstance(m, RaftAppendResp))


def test_follower_rejects_when_prev_entry_does_not_match_and_hints_the_conflict() -> None:
    """"Reply false if log doesn't contain an entry at prevLogIndex whose term matches
    prevLogTerm" — with the hint: "the term of the conflicting entry and the first index it
    stores for that term". Reference: Figure 2 AppendEntries receiver rule 2, §5.3."""
    r = follower_with([(1, 1), (2, 2), (2, 3), (2, 4)])
    r.step(append(9, (3, 4), []))
    m = resp(r)
    assert (m.reject, m.index, m.hint_term, m.hint_index) == (True, 4, 2, 2)
    r = follower_with([(1, 1)])
    r.step(append(9, (3, 4), []))
    m = resp(r)
    assert (m.reject, m.hint_term, m.hint_index) == (True, 0, 2)  # "my log ends at 1"


def test_conflicting_entries_are_deleted_and_new_ones_appended() -> None:
    """"If an existing entry conflicts with a new one (same index but different terms), delete
    the existing entry and all that follow it"; "Append any new entries not already in the
    log". Reference: Figure 2 AppendEntries receiver rules 3 and 4."""
    r = follower_with([(1, 1), (1, 2), (1, 3)])
    r.step(append(9, (1, 1), [(1, 2), (3, 3), (3, 4)]))
    assert [(e.term, e.index) for e in r.log.entries] == [(1, 1), (1, 2), (3, 3), (3, 4)]
    assert r.log.entry(2).data == b"x"  # a matching entry is kept, not rewritten
    rd = r.ready()
    assert [(e.term, e.index) for e in rd.entries] == [(3, 3), (3, 4)] and rd.must_sync


def test_commit_is_min_of_leader_commit_and_last_new_entry() -> None:
    """"If leaderCommit > commitIndex, set commitIndex = min(leaderCommit, index of last new
    entry)". Reference: Figure 2 AppendEntries receiver rule 5."""
    r = follower_with([(1, 1), (1, 2), (1, 3)])
    r.step(append(9, (1, 1), [(1, 2)], commit=3))
    assert r.log.committed == 2  # entry 3 is not known to match the leader's
    r.step(append(9, (1, 2), [(1, 3)], commit=3))
    assert r.log.committed == 3


def test_leader_backs_off_a_whole_term_per_round_trip() -> None:
    """"the leader can decrement nextIndex to bypass all of the conflicting entries in that
    term; one AppendEntries RPC will be required for each term with conflicting entries, rather
    than one RPC per entry." Reference: §5.3."""
    net = Network(["1", "2", "3"], **PLAIN)
    net.elect("1")
    net.isolate("1")
    for i in range(30):
        net.propose("1", f"lost{i}".encode())  # 30 entries of term 1 that only 1 holds
    net.stabilize()
    net.elect("2")  # term 2 with 3; entries 2.. of term 1 on 1 conflict with 2's log
    for i in range(5):
        net.propose("2", f"kept{i}".encode())
    net.stabilize()
    net.elect("3")  # term 3: 3 starts with next = 9 for 1, far past the divergence at 2
    net.recover()
    rejects = []
    net.on_apply = None
    orig = net.deliver

    def count(m):  # type: ignore[no-untyped-def]
        if isinstance(m, RaftAppendResp) and m.reject:
            rejects.append(m)
        orig(m)

    net.deliver = count  # type: ignore[method-assign]
    net.tick_all(3)
    net.stabilize()
    assert [e.term for e in net.raft("1").log.entries] == [e.term for e in net.raft("2").log.entries]
    assert 1 <= len(rejects) <= 2, rejects


def test_leader_commits_an_entry_once_on_a_majority() -> None:
    """"A log entry is committed once the leader that created the entry has replicated it on a
    majority of the servers." Reference: §5.3."""
    net = Network(["1", "2", "3", "4", "5"], **PLAIN)
    net.elect("1")
    net.cut("1", "4")
    net.cut("1", "5")
    net.cut("1", "3")
    _, idx = net.propose("1", b"a")
    net.stabilize()
    assert net.raft("1").log.committed == idx - 1
    net.recover()
    net.cut("1", "4")
    net.cut("1", "5")
    net.tick("1")
    net.stabilize()
    assert net.raft("1").log.committed == idx


def test_the_leader_counts_its_own_copy_only_after_it_is_synced() -> None:
    """Entries are "stored on a majority" only once on stable storage: the leader's own copy
    counts at advance(), after save and sync. Reference: §5.3, the persist-before-send contract."""
    net = Network(["1", "2", "3"], **PLAIN)
    net.elect("1")
    leader = net.raft("1")
    net.propose("1", b"a")
    rd = leader.ready()
    net.nodes["1"].storage.save(rd.hard_state, rd.entries, None)  # not synced, not advanced
    for m in rd.messages:
        net.send(m)
    net.deliver_all("2")
    net.process_ready("2")
    net.deliver_all("1")  # 2 acked: 2 of 3 hold it, but 1's copy is not stable yet
    assert leader.log.committed == 1
    net.nodes["1"].storage.sync()
    leader.advance(rd)
    assert leader.log.committed == 2


def test_a_vote_is_persisted_before_its_response_is_sent() -> None:
    """"Respond to RPCs only after updating stable storage": the Ready holding a vote response
    holds the HardState with that vote, and must_sync. Reference: Figure 2, §5.1."""
    r = follower_with([])
    r.step(RaftVote(term=10, src="3", dst="2", last_index=0, last_term=0))
    rd = r.ready()
    assert any(isinstance(m, RaftVoteResp) and m.granted for m in rd.messages)
    assert rd.hard_state == HardState(term=10, vote="3", commit=0) and rd.must_sync


def test_a_candidate_persists_its_term_and_self_vote_before_requesting_votes() -> None:
    """Term and vote are synced before a vote is requested. Reference: Figure 2 (Candidates)."""
    r = follower_with([])
    r.campaign()
    rd = r.ready()
    assert any(isinstance(m, RaftVote) for m in rd.messages)
    assert rd.hard_state == HardState(term=10, vote="2", commit=0) and rd.must_sync


def test_an_ack_leaves_with_the_entries_it_acknowledges() -> None:
    """A follower's AppendEntries reply is in the Ready that carries the entries to sync first."""
    r = follower_with([(1, 1)])
    r.step(append(9, (1, 1), [(9, 2)]))
    rd = r.ready()
    assert [e.index for e in rd.entries] == [2] and rd.must_sync
    assert any(isinstance(m, RaftAppendResp) and m.index == 2 for m in rd.messages)


def test_ready_persist_saves_the_writes_and_syncs_only_when_it_must() -> None:
    """``rd.persist(storage)`` is step 1 of the contract: after it, a crash keeps the Ready's
    entries and HardState when ``must_sync``; without ``must_sync`` it saves but does not sync."""
    r = follower_with([(1, 1)])
    r.step(append(9, (1, 1), [(9, 2)], commit=1))
    rd = r.ready()
    assert rd.must_sync
    storage = MemoryRaftStorage(["1", "2", "3"])
    storage.save(HardState(term=9), [Entry(term=1, index=1, data=b"x")], None)
    storage.sync()
    rd.persist(storage)
    assert (storage.saves, storage.syncs) == (2, 2) and not storage.has_unsynced()
    storage.crash()
    got = storage.load()
    assert [(e.term, e.index) for e in got.entries] == [(1, 1), (9, 2)] and got.hard_state == rd.hard_state
    dataclasses.replace(rd, must_sync=False, hard_state=HardState(term=10)).persist(storage)
    assert (storage.saves, storage.syncs) == (3, 2) and storage.has_unsynced()


def test_a_crash_loses_unsynced_writes_and_the_node_restarts_from_synced_state() -> None:
    """Durability is an explicit sync; a crash keeps only what was synced."""
    storage = MemoryRaftStorage(["1"])
    storage.save(HardState(term=1, vote="1"), [Entry(term=1, index=1)], None)
    storage.sync()
    storage.save(HardState(term=2, vote="1"), [Entry(term=2, index=2)], None)
    assert storage.has_unsynced()
    storage.crash()
    got = storage.load()
    assert got.hard_state == HardState(term=1, vote="1") and [e.index for e in got.entries] == [1]


def test_heartbeat_commit_is_capped_at_the_followers_match() -> None:
    """A heartbeat carries no entries, so it may only commit what the follower is known to hold
    (Log Matching cannot be checked without prev entries). Reference: §5.3 (etcd-io/raft)."""
    net = Network(["1", "2", "3"], **PLAIN)
    net.elect("1")
    net.drop("1", "3")
    net.propose("1", b"a")
    net.stabilize()
    net.recover()
    net.tick("1")
    hb = [m for m in net.raft("1").ready().messages if isinstance(m, RaftHeartbeat)]
    assert {m.dst: m.commit for m in hb} == {"2": 2, "3": 1}


def test_large_proposals_are_split_by_max_size_per_msg() -> None:
    net = Network(["1", "2"], max_size_per_msg=10, **PLAIN)
    net.elect("1")
    for _ in range(4):
        net.propose("1", b"x" * 8)
    apps = [m for m in net.raft("1").ready().messages if isinstance(m, RaftAppend)]
    net.stabilize()
    assert all(len(m.entries) <= 1 or sum(len(e.data) for e in m.entries) <= 10 for m in apps)
    assert net.raft("2").log.committed == 5


# --- Figure 8 ----------------------------------------------------------------------------------


def figure8_until_c() -> tuple[Network, SafetyChecker, int]:
    """Figure 8 (a)-(c) on five servers, with the no-op each leader appends (§8)."""
    net = Network(["1", "2", "3", "4", "5"], **PLAIN)
    chk = SafetyChecker()
    net.elect("5")  # term 1: the no-op 1/1 is committed everywhere
    # (a) S1 leads term 2 and replicates its entry at index 2 to S2 only
    net.campaign_round("1", "2345")
    assert net.raft("1").role == LEADER and net.raft("1").term == 2
    for n in "345":
        net.cut("1", n)
    net.stabilize()
    chk.check(net)
    # (b) S1 crashes; S5 is elected for term 3 by S3, S4 and itself, appends 3/2, then crashes
    net.crash("1")
    net.recover()
    net.cut("5", "2")
    net.campaign_round("5", "34")
    assert net.raft("5").role == LEADER and net.raft("5").term == 3
    net.process_ready("5")  # 3/2 on S5's disk only: its messages are lost with it
    net.crash("5")
    net.inflight.clear()
    chk.check(net)
    # (c) S1 restarts, is elected for term 4 by S2, S3, S4; its term-2 entry reaches S3: now on a
    # majority (S1, S2, S3) but of an older term; S1's own no-op 4/3 reaches nobody
    net.restart("1")
    net.recover()
    while net.raft("1").role != LEADER:
        net.campaign_round("1", "234")
    net.cut("1", "4")
    net.cut("1", "2")
    for _ in range(4):  # a probe, a rejection with its hint, the entry at 2, an ack
        net.process_ready("1")
        net.inflight = [dataclasses.replace(m, entries=tuple(e for e in m.entries if e.index <= 2))
                        if isinstance(m, RaftAppend) else m
                        for m in net.inflight]  # whatever follows index 2 is lost on the way
        net.deliver_all("3")
        net.process_ready("3")
        net.deliver_all("1")
    chk.check(net)
    assert [net.raft(n).log.term(2) for n in "123"] == [2, 2, 2]
    return net, chk, net.raft("1").term


def test_figure8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    """"a leader cannot immediately conclude that an entry from a previous term is committed
    once it is stored on a majority of servers" ... "Raft never commits log entries from
    previous terms by counting replicas." Reference: §5.4.2, Figure 8 (c)."""
    net, _, term = figure8_until_c()
    assert term == 4 and net.raft("1").log.committed == 1


def test_figure8_d_the_uncommitted_entry_may_be_overwritten() -> None:
    """"If S1 crashes as in (d), S5 could be elected leader ... and overwrite the entry with its
    own entry from term 3." Reference: §5.4.2, Figure 8 (d)."""
    net, chk, _ = figure8_until_c()
    net.crash("1")
    net.inflight.clear()
    net.restart("5")
    for _ in range(5):
        if net.raft("5").role == LEADER:
            break
        net.raft("5").campaign()
        net.stabilize()
        chk.check(net)
    assert net.raft("5").role == LEADER
    assert [net.raft(n).log.term(2) for n in "2345"] == [3, 3, 3, 3]
    chk.check(net)


def test_figure8_e_an_entry_of_the_current_term_on_a_majority_commits_the_older_ones() -> None:
    """"if S1 replicates an entry from its current term on a majority of the servers before
    crashing, as in (e), then this entry is committed (S5 cannot win an election)." Reference:
    §5.4.2, Figure 8 (e)."""
    net, chk, _ = figure8_until_c()
    net.recover()
    net.cut("1", "4")
    net.tick("1")
    net.stabilize()
    assert net.raft("1").log.committed >= 3  # 4/3 on S1, S2, S3: committed, and 2/2 with it
    net.crash("1")
    net.inflight.clear()
    net.restart("5")
    for _ in range(5):
        net.raft("5").campaign()
        net.stabilize()
        chk.check(net)
    assert net.raft("5").role != LEADER
    assert [net.raft(n).log.term(2) for n in "23"] == [2, 2]


def test_leader_sends_heartbeats_every_heartbeat_tick() -> None:
    """"Leaders send periodic heartbeats (AppendEntries RPCs that carry no log entries) to all
    followers in order to maintain their authority." Reference: §5.2."""
    net = Network(["1", "2", "3"], heartbeat_tick=2, **PLAIN)
    net.elect("1")
    r = net.raft("1")
    r.tick()
    assert not r.ready().messages
    r.tick()
    assert sorted(m.dst for m in r.ready().messages if isinstance(m, RaftHeartbeat)) == ["2", "3"]


def test_the_leader_retries_until_every_follower_has_every_entry() -> None:
    """"If followers crash or run slowly, or if network packets are lost, the leader retries
    AppendEntries RPCs indefinitely ... until all followers eventually store all log entries."
    Reference: §5.3."""
    net = Network(["1", "2", "3"], seed=9, **PLAIN)
    net.elect("1")
    net.drop_rate = 0.5
    for i in range(20):
        net.propose("1", f"e{i}".encode())
        net.tick_all()
    net.drop_rate = 0
    net.tick_all(3)
    logs = [[(e.term, e.index, e.data) for e in net.raft(n).log.entries] for n in "123"]
    assert logs[0] == logs[1] == logs[2] and len(logs[0]) == 21


def test_duplicated_messages_are_harmless() -> None:
    """"Raft RPCs are idempotent, so this causes no harm": every message delivered twice.
    Reference: §5.5."""
    net = Network(["1", "2", "3"], **PLAIN)
    net.elect("1")
    orig = net.send

    def twice(m):  # type: ignore[no-untyped-def]
        orig(m)
        orig(m)

    net.send = twice  # type: ignore[method-assign]
    for i in range(5):
        net.propose("1", f"e{i}".encode())
        net.stabilize()
    assert [[e.data for e in net.nodes[n].applied] for n in "123"] == [[b"", b"e0", b"e1", b"e2", b"e3", b"e4"]] * 3


def test_a_follower_restarted_after_a_full_window_of_lost_appends_catches_up() -> None:
    """"the leader retries AppendEntries RPCs indefinitely" (§5.3), also when a whole window of
    appends (max_inflight) was lost while the follower was down: its heartbeat reply frees a slot
    (etcd-io/raft's Inflights.FreeFirstOne), the append that goes out is rejected, the leader
    probes back. Without it the window stayed full and the follower never caught up (found on
    real processes: a follower killed under load and restarted). Reference: §5.3."""
    net = Network(["1", "2", "3"], seed=4, max_inflight=4, **PLAIN)
    net.elect("1")
    net.propose("1", b"before")
    net.stabilize()
    net.crash("3")
    for i in range(12):  # each proposal goes out at once: far more than 4 appends to the dead 3
        net.propose("1", f"e{i}".encode())
        net.stabilize()
    assert len(net.raft("1").prs["3"].inflight) == 4  # the window is full
    net.restart("3")
    for _ in range(10):
        net.tick_all()
        net.stabilize()
    assert net.raft("3").log.last_index() == net.raft("1").log.last_index()
    assert [e.data for e in net.nodes["3"].applied][-1] == b"e11"


def test_a_follower_that_lost_acknowledged_entries_is_probed_once_per_heartbeat_not_in_a_storm() -> None:
    """Outside the model (a disk that lost synced writes): the leader's match for a follower is
    above the follower's log, so every probe is rejected without moving ``next``. Without a
    brake the reject/probe pair ping-pongs at network speed and each heartbeat reply starts
    another such loop (a sim run grew to 150,000 appends a second); with it, one probe per
    heartbeat, counted."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    for i in range(5):
        net.propose("1", b"v%d" % i)
        net.stabilize()
    lead = net.raft("1")
    pr = lead.prs["2"]
    assert pr.match == lead.log.last_index()
    pr.become_probe()  # as after a rejected append in replicate state
    pr.probe_sent = True
    reject = RaftAppendResp(term=lead.term, src="2", dst="1", index=pr.next - 1, reject=True,
                            hint_index=2, hint_term=0)
    lead.step(reject)
    assert not [m for m in lead.msgs if isinstance(m, RaftAppend)], "no immediate re-probe"
    assert lead.stats["append_rejected_below_match"] == 1
    lead.step(RaftHeartbeatResp(term=lead.term, src="2", dst="1", ctx=b"", stamp=0))
    assert len([m for m in lead.msgs if isinstance(m, RaftAppend) and m.dst == "2"]) <= 1
