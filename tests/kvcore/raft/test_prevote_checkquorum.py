"""PreVote, CheckQuorum and leader stickiness (thesis §9.6, §6.2, §4.2.3), including the
partial-partition case of the November 2020 Cloudflare outage: etcd with PreVote but without
CheckQuorum lost its leader over and over when one node could reach some peers but not the
leader; with both, the cut-off node cannot depose a healthy leader."""

from __future__ import annotations

import pytest

from kvcore.raft import FOLLOWER, LEADER, PRE_CANDIDATE
from kvcore.raft.messages import RaftAppendResp, RaftVote, RaftVoteResp

from .harness import Network, SafetyChecker


def test_pre_vote_does_not_change_the_term() -> None:
    """"a candidate would first ask other servers whether its log was up-to-date enough to get
    their vote. Only if the candidate believed it could get votes from a majority of the
    cluster would it increment its term and start a normal election." Reference: thesis §9.6."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.isolate("3")
    for _ in range(100):
        net.tick("3")
        net.stabilize()
    r = net.raft("3")
    assert r.term == 1 and r.role == PRE_CANDIDATE
    net.recover()
    net.tick_all(3)
    assert net.leaders() == ["1"] and net.raft("1").term == 1  # rejoining disrupts nothing


def test_without_pre_vote_a_rejoining_node_disrupts_the_leader() -> None:
    """The contrast: with plain elections the isolated node's term grows and its return forces
    an election. Reference: thesis §9.6 (the problem PreVote solves)."""
    net = Network(["1", "2", "3"], pre_vote=False, check_quorum=False)
    net.elect("1")
    net.isolate("3")
    for _ in range(100):
        net.tick("3")
        net.stabilize()
    assert net.raft("3").term > 5
    net.recover()
    net.tick_all(30)
    assert net.raft("1").term > 1 or net.raft("1").role != LEADER


def test_pre_vote_is_granted_without_recording_a_vote() -> None:
    """A PreVote grant changes neither the voter's term nor its vote. Reference: thesis §9.6."""
    net = Network(["1", "2", "3"], check_quorum=False)
    r = net.raft("2")
    r.step(RaftVote(term=1, src="3", dst="2", last_index=0, last_term=0, pre_vote=True))
    out = [m for m in r.ready().messages if isinstance(m, RaftVoteResp)]
    assert out[0].granted and out[0].pre_vote and out[0].term == 1
    assert r.term == 0 and r.vote is None


def test_check_quorum_leader_steps_down_without_a_majority() -> None:
    """"a leader ... steps down if an election timeout elapses without a successful round of
    heartbeats to a majority of its cluster." Reference: thesis §6.2."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.isolate("1")
    for _ in range(2 * 10):
        net.tick("1")
    assert net.raft("1").role == FOLLOWER
    assert net.raft("1").stats["check_quorum_stepdowns"] == 1


def test_stickiness_a_voter_ignores_votes_while_it_hears_from_a_leader() -> None:
    """"if a server receives a RequestVote request within the minimum election timeout of
    hearing from a current leader, it does not update its term or grant its vote." Reference:
    thesis §4.2.3, §9.6."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    r = net.raft("2")
    for pre in (True, False):
        r.step(RaftVote(term=5, src="3", dst="2", last_index=9, last_term=9, pre_vote=pre))
    assert r.term == 1 and r.vote == "1"
    assert not [m for m in r.ready().messages if isinstance(m, RaftVoteResp)]


def test_a_stale_leader_learns_the_newer_term_from_a_follower() -> None:
    """A leader back from a partition whose term was outgrown hears the new term in a reply to
    its AppendEntries and steps down (etcd-io/raft; needed once PreVote hides terms)."""
    net = Network(["1", "2", "3"])
    net.elect("1")
    net.raft("2").step(RaftAppendResp(term=7, src="3", dst="2", index=0))  # 2 jumps to term 7
    net.process_ready("2")
    net.tick("1")
    net.stabilize()
    assert net.raft("1").role == FOLLOWER and net.raft("1").term == 7


def partial_partition(writes: bool, **cfg: object) -> tuple[Network, list[int]]:
    """Three servers; 3 can reach 2 but not the leader 1 — a node on the wrong side of a partial
    partition. Returns the highest term seen at each tick."""
    net = Network(["1", "2", "3"], seed=3, **cfg)
    net.elect("1")
    net.cut("3", "1")
    terms = []
    chk = SafetyChecker()
    for i in range(300):
        net.tick_all()
        chk.check(net)
        if writes and i % 10 == 0 and net.leaders():
            net.propose(net.leaders()[0], f"w{i}".encode())
        terms.append(max(n.raft.term for n in net.nodes.values()))
    return net, terms


@pytest.mark.parametrize("writes", [False, True])
def test_partial_partition_cannot_depose_a_healthy_leader_with_prevote_and_check_quorum(writes: bool) -> None:
    """The 2020 Cloudflare outage: with PreVote and CheckQuorum together, 2 (which hears from
    the leader) ignores 3's pre-votes, 3 never bumps the term, and the leader stays, whether or
    not writes keep 3's log behind. Reference: thesis §9.6."""
    net, terms = partial_partition(writes, pre_vote=True, check_quorum=True)
    assert net.leaders() == ["1"] and set(terms) == {1}
    if writes:
        assert net.raft("1").log.committed >= 30  # and it kept committing writes


def test_partial_partition_with_prevote_alone_deposes_the_healthy_leader() -> None:
    """The contrast, the outage's configuration: PreVote without CheckQuorum (no stickiness).
    3 wins a pre-vote from 2 (3's log is as up to date as 2's), takes the term up and becomes
    leader; 1, healthy and reachable from 2, loses its leadership. Reference: thesis §9.6."""
    net, terms = partial_partition(False, pre_vote=True, check_quorum=False)
    assert max(terms) > 1 and net.leaders() != ["1"]
