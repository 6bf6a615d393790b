"""ReadIndex and lease reads (thesis §6.4, §6.4.1) and leadership transfer (thesis §3.10)."""

from __future__ import annotations

import pytest

from kvcore.raft import FOLLOWER, LEADER, NotLeader, ProposalRefused, RaftConfig, ReadState
from kvcore.raft.messages import RaftHeartbeat, RaftTimeoutNow, RaftVote

from .harness import Network


def elect_by_ticks(net: Network) -> str:
    for _ in range(100):
        net.tick_all()
        if net.leaders():
            return net.leaders()[0]
    raise AssertionError("no leader")


def read_states(net: Network, node: str) -> list[ReadState]:
    got: list[ReadState] = []
    for _ in range(100):
        rd = net.process_ready(node)
        if rd is not None:
            got.extend(rd.read_states)
        if not net.inflight and not net.raft(node).has_ready():
            break
        net.deliver_all()
        for n in net.nodes:
            if n != node:
                net.process_ready(n)
    return got


def test_read_index_is_the_commit_index_confirmed_by_a_heartbeat_round() -> None:
    """"1. If the leader has not yet marked an entry from its current term committed, it waits
    until it has done so. 2. The leader saves its current commit index in a local variable
    readIndex. 3. The leader needs to make sure it hasn't been superseded ... it issues a new
    round of heartbeats and waits for their acknowledgments from a majority." Reference:
    thesis §6.4."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.propose("1", b"a")
    net.stabilize()
    net.raft("1").read_index(b"r1")
    hb = [m for m in net.raft("1").ready().messages if isinstance(m, RaftHeartbeat)]
    assert len({m.ctx for m in hb}) == 1 and hb[0].ctx  # the leader's tag for this read
    assert read_states(net, "1") == [ReadState(2, b"r1")]


def test_read_waits_for_a_commit_in_the_leaders_term() -> None:
    """Step 1 of §6.4: a new leader's commit index may be stale until its no-op commits."""
    net = Network(["1", "2", "3"])
    net.lead_before_noop_commits("1")
    r = net.raft("1")
    assert r.role == LEADER and not r.committed_in_term()
    r.read_index(b"early")
    assert not r.read_queue and r.reads_waiting
    assert read_states(net, "1") == [ReadState(1, b"early")]
    assert r.committed_in_term() and not r.reads_waiting


def test_an_isolated_leader_cannot_confirm_a_read() -> None:
    """A deposed-but-unaware leader gets no majority of heartbeat acks, so it never answers a
    read from stale state. Reference: thesis §6.4 step 3."""
    net = Network(["1", "2", "3"], check_quorum=False)
    net.elect("1")
    net.isolate("1")
    net.raft("1").read_index(b"stale?")
    assert read_states(net, "1") == []


def test_a_follower_read_goes_through_the_leader() -> None:
    """"followers can also offload the processing of read-only queries ... the follower issues
    a request to the leader to get the current readIndex." Reference: thesis §6.4."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.raft("2").read_index(b"f1")
    states: list[ReadState] = []
    for _ in range(10):
        for n in net.nodes:
            rd = net.process_ready(n)
            if rd is not None and n == "2":
                states.extend(rd.read_states)
        net.deliver_all()
    assert states == [ReadState(1, b"f1")]


def test_equal_contexts_from_two_askers_are_both_answered() -> None:
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.raft("1").read_index(b"same")
    net.raft("2").read_index(b"same")
    got: dict[str, list[ReadState]] = {"1": [], "2": []}
    for _ in range(10):
        for n in net.nodes:
            rd = net.process_ready(n)
            if rd is not None and n in got:
                got[n].extend(rd.read_states)
        net.deliver_all()
    assert got == {"1": [ReadState(1, b"same")], "2": [ReadState(1, b"same")]}


def test_read_index_without_a_leader_raises_not_leader() -> None:
    net = Network(["1", "2", "3"])
    with pytest.raises(NotLeader, match="no leader is known"):
        net.raft("1").read_index(b"x")


def test_lease_read_answers_without_a_round_trip_while_the_lease_holds() -> None:
    """§6.4.1: with a lease the leader answers from its commit index without heartbeats while a
    majority acked a heartbeat sent less than election_tick - lease_drift_ticks ticks ago."""
    net = Network(["1", "2", "3"], read_only="lease", lease_drift_ticks=2)
    leader = elect_by_ticks(net)
    net.tick_all(1)  # one heartbeat round: acked by the two others
    r = net.raft(leader)
    r.read_index(b"fast")
    assert r.read_states == [ReadState(1, b"fast")]
    net.isolate(leader)
    for _ in range(8):  # election_tick 10 - drift 2: the lease is gone after 8 ticks
        r.tick()
        net.stabilize()
    r.read_index(b"slow")
    assert ReadState(1, b"slow") not in r.read_states
    assert [v[2] for v in r.read_queue.values()] == [b"slow"]


def test_in_lease_mode_a_restarted_follower_waits_an_election_timeout_before_voting() -> None:
    """A follower that acked the lease holder and crashed must not vote at once on restart,
    or the lease would be broken by a new leader. Reference: thesis §6.4.1."""
    net = Network(["1", "2", "3"], read_only="lease")
    leader = elect_by_ticks(net)
    f, other = [n for n in "123" if n != leader]
    net.crash(f)
    net.restart(f)
    r = net.raft(f)
    r.step(RaftVote(term=5, src=other, dst=f, last_index=9, last_term=9, pre_vote=True))
    assert not r.ready().messages
    for _ in range(10):
        r.tick()
    r.step(RaftVote(term=5, src=other, dst=f, last_index=9, last_term=9, pre_vote=True))
    assert r.ready().messages


def test_lease_reads_require_check_quorum() -> None:
    problems = RaftConfig(id="1", read_only="lease", check_quorum=False).validate()
    assert problems and "requires check_quorum" in problems[0]


def test_transfer_to_an_up_to_date_follower_sends_timeout_now() -> None:
    """"the prior leader sends it a TimeoutNow request. This request has the same effect as the
    target server's election timer firing: the target server starts a new election." Reference:
    thesis §3.10."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.raft("1").transfer_leader("2")
    assert any(isinstance(m, RaftTimeoutNow) for m in net.raft("1").ready().messages)
    net.stabilize()
    assert net.leaders() == ["2"] and net.raft("2").term == 2


def test_transfer_first_brings_a_lagging_target_up_to_date() -> None:
    """"the prior leader sends it AppendEntries ... until the target server has all of the
    prior leader's entries" before TimeoutNow. Reference: thesis §3.10 step 2."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.cut("1", "3")
    for i in range(5):
        net.propose("1", f"p{i}".encode())
    net.stabilize()
    net.recover()
    net.raft("1").transfer_leader("3")
    assert not any(isinstance(m, RaftTimeoutNow) for m in net.raft("1").ready().messages)
    net.stabilize()
    assert net.leaders() == ["3"] and net.raft("3").log.last_index() >= 6


def test_proposals_are_refused_during_a_transfer() -> None:
    """"the prior leader stops accepting new client requests" during a transfer. Reference:
    thesis §3.10 step 1."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.cut("1", "2")
    net.raft("1").transfer_leader("2")
    with pytest.raises(ProposalRefused, match="transferred to 2"):
        net.propose("1", b"x")


def test_a_transfer_that_does_not_happen_is_abandoned_after_an_election_timeout() -> None:
    """"If the transfer does not complete within about one election timeout, the prior leader
    aborts the transfer and resumes accepting client requests." Reference: thesis §3.10."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.cut("1", "2")
    net.raft("1").transfer_leader("2")
    for _ in range(10):
        net.tick("1")
        net.stabilize()
    assert net.raft("1").lead_transferee is None
    net.propose("1", b"accepted again")


def test_timeout_now_overrides_stickiness() -> None:
    """Voters that just heard from the leader still vote in a transfer's election (a vote
    flagged ``transfer``). Reference: thesis §3.10 with §9.6."""
    net = Network(["1", "2", "3"], pre_vote=True, check_quorum=True)
    net.elect("1")
    net.raft("1").transfer_leader("3")
    net.stabilize()
    assert net.leaders() == ["3"]
    assert net.raft("1").role == FOLLOWER


def test_transfer_to_a_non_voter_is_refused() -> None:
    net = Network(["1", "2"])
    net.elect("1")
    with pytest.raises(ValueError, match="not a voter"):
        net.raft("1").transfer_leader("9")
