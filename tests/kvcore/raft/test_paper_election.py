"""Paper-sentence tests: leader election and terms (Raft §5.1, §5.2, §5.4.1, Figure 2).

Each test quotes the sentence it pins and ends with its reference, as etcd-io/raft's
raft_paper_test.go does. PreVote and CheckQuorum are off here unless a test says otherwise, so
the plain paper rules are visible.
"""

from __future__ import annotations

import random

from kvcore.raft import CANDIDATE, FOLLOWER, LEADER, MemoryRaftStorage, Raft, RaftConfig
from kvcore.raft.messages import RaftAppend, RaftVote, RaftVoteResp

from .harness import Network

PLAIN = {"pre_vote": False, "check_quorum": False}


def single(node: str = "1", voters: tuple[str, ...] = ("1", "2", "3"), seed: int = 0, **cfg: object) -> Raft:
    storage = MemoryRaftStorage(voters)
    return Raft(RaftConfig(id=node, **{**PLAIN, **cfg}), storage.load(), random.Random(seed))  # type: ignore[arg-type]


def test_follower_campaigns_after_its_randomized_election_timeout() -> None:
    """"If a follower receives no communication over a period of time called the election
    timeout, then it assumes there is no viable leader and begins an election to choose a new
    leader." Reference: §5.2, Figure 2 (Followers)."""
    r = single()
    timeout = r.randomized_timeout
    assert r.cfg.election_tick <= timeout < 2 * r.cfg.election_tick
    for _ in range(timeout - 1):
        r.tick()
    assert r.role == FOLLOWER and r.term == 0
    r.tick()
    assert r.role == CANDIDATE and r.term == 1 and r.vote == "1"
    votes = [m for m in r.ready().messages if isinstance(m, RaftVote)]
    assert sorted(m.dst for m in votes) == ["2", "3"]
    assert all(m.term == 1 and not m.pre_vote for m in votes)


def test_election_timeouts_are_randomized_from_the_injected_rng() -> None:
    """"Raft uses randomized election timeouts to ensure that split votes are rare" — drawn from
    [election_tick, 2 * election_tick); the randomness is injected, so one seed, one run.
    Reference: §5.2."""
    seen = {single(seed=s).randomized_timeout for s in range(50)}
    assert len(seen) > 3 and min(seen) >= 10 and max(seen) < 20
    assert [single(seed=7).randomized_timeout for _ in range(3)] == [single(seed=7).randomized_timeout] * 3


def test_candidate_becomes_leader_with_votes_from_a_majority() -> None:
    """"A candidate wins an election if it receives votes from a majority of the servers in the
    full cluster for the same term." Reference: §5.2."""
    for granted, role in ((0, CANDIDATE), (1, LEADER)):
        r = single(voters=("1", "2", "3"))
        r.campaign()
        for n in range(granted):
            r.step(RaftVoteResp(term=1, src=str(n + 2), dst="1", granted=True))
        assert r.role == role


def test_candidate_loses_when_a_majority_rejects() -> None:
    """A candidate that can no longer win goes back to follower. Reference: §5.2."""
    r = single(voters=("1", "2", "3"))
    r.campaign()
    r.step(RaftVoteResp(term=1, src="2", dst="1", granted=False))
    r.step(RaftVoteResp(term=1, src="3", dst="1", granted=False))
    assert r.role == FOLLOWER and r.term == 1


def test_vote_request_with_stale_term_is_rejected() -> None:
    """"Reply false if term < currentTerm." Reference: Figure 2, RequestVote receiver rule 1."""
    r = single()
    r.step(RaftVote(term=2, src="2", dst="1", last_index=0, last_term=0))
    r.step(RaftVote(term=1, src="3", dst="1", last_index=5, last_term=1))
    out = r.ready().messages
    assert [(m.dst, m.granted) for m in out if isinstance(m, RaftVoteResp)] == [("2", True)]


def test_one_vote_per_term_first_come_first_served() -> None:
    """"Each server will vote for at most one candidate in a given term, on a first-come-first-
    served basis." Reference: §5.2, Figure 2 RequestVote receiver rule 2."""
    r = single()
    r.step(RaftVote(term=1, src="2", dst="1", last_index=0, last_term=0))
    r.step(RaftVote(term=1, src="3", dst="1", last_index=0, last_term=0))
    r.step(RaftVote(term=1, src="2", dst="1", last_index=0, last_term=0))  # a retry: granted again
    grants = [(m.src, m.dst, m.granted) for m in r.ready().messages if isinstance(m, RaftVoteResp)]
    assert grants == [("1", "2", True), ("1", "3", False), ("1", "2", True)]
    assert r.vote == "2"


def test_vote_granted_only_to_an_up_to_date_log() -> None:
    """"The voter denies its vote if its own log is more up-to-date than that of the candidate
    ... If the logs have last entries with different terms, then the log with the later term is
    more up-to-date. If the logs end with the same term, then whichever log is longer is more
    up-to-date." Reference: §5.4.1."""
    net = Network(["1", "2", "3"], **PLAIN)
    net.elect("1")
    net.propose("1", b"a")
    net.stabilize()  # every log: 1/1 (no-op), 1/2 "a"
    cases = [((2, 1), True), ((3, 1), True), ((1, 1), False), ((5, 0), False), ((1, 2), True)]
    for (last_index, last_term), granted in cases:
        r = Raft(net.config("2"), net.nodes["2"].storage.load(), random.Random(0))
        r.step(RaftVote(term=9, src="3", dst="2", last_index=last_index, last_term=last_term))
        resp = next(m for m in r.ready().messages if isinstance(m, RaftVoteResp))
        assert resp.granted is granted, (last_index, last_term)


def test_higher_term_converts_any_server_to_follower() -> None:
    """"If RPC request or response contains term T > currentTerm: set currentTerm = T, convert
    to follower." Reference: §5.1, Figure 2 (All Servers)."""
    net = Network(["1", "2", "3"], **PLAIN)
    net.elect("1")
    r = net.raft("1")
    r.step(RaftVoteResp(term=5, src="2", dst="1", granted=False))
    assert (r.role, r.term, r.vote) == (FOLLOWER, 5, None)


def test_candidate_steps_down_on_append_from_the_new_leader() -> None:
    """"If AppendEntries RPC received from new leader: convert to follower." Reference:
    Figure 2 (Candidates), §5.2."""
    r = single()
    r.campaign()
    r.step(RaftAppend(term=1, src="2", dst="1", prev_index=0, prev_term=0))
    assert r.role == FOLLOWER and r.lead == "2" and r.term == 1


def test_leader_appends_a_no_op_at_the_start_of_its_term() -> None:
    """"Raft handles this by having each leader commit a blank no-op entry into the log at the
    start of its term." Reference: §8, thesis §6.4."""
    net = Network(["1", "2", "3"], **PLAIN)
    net.elect("1")
    entries = [n.raft.log.entry(1) for n in net.nodes.values()]
    assert all(e.term == 1 and e.data == b"" for e in entries)
    assert all(n.raft.log.committed == 1 for n in net.nodes.values())


def test_split_vote_resolves_by_a_new_randomized_timeout() -> None:
    """Two candidates in one term split the vote; the randomized timeouts make a later election
    succeed. Reference: §5.2."""
    net = Network(["1", "2", "3", "4"], **PLAIN)
    net.raft("1").campaign()
    net.raft("2").campaign()
    net.cut("1", "3")
    net.cut("2", "4")
    net.stabilize()
    assert not net.leaders()
    net.recover()
    for _ in range(60):
        net.tick_all()
        if net.leaders():
            break
    assert len(net.leaders()) == 1


def test_single_voter_elects_itself_and_commits_after_its_own_sync() -> None:
    """A one-server cluster: the vote is its own; its entries commit once on its stable storage.
    Reference: §5.2, §5.3 ("stored on a majority")."""
    net = Network(["1"], **PLAIN)
    net.raft("1").campaign()
    r = net.raft("1")
    assert r.role == LEADER and r.log.committed == 0
    rd = net.process_ready("1")
    assert rd is not None and rd.entries and not rd.committed_entries
    assert r.log.committed == 1  # counted at advance(), after the save and sync


def test_a_leader_asked_to_campaign_stays_leader() -> None:
    net = Network(["1", "2", "3"], **PLAIN)
    net.elect("1")
    net.raft("1").campaign()
    assert net.raft("1").role == LEADER and net.raft("1").term == 1
