"""Raft messages (registered in the codec), RaftConfig.validate, malformed input, determinism."""

from __future__ import annotations

import random

import pytest

from kvcore import codec
from kvcore.messages import REGISTRY
from kvcore.raft import MemoryRaftStorage, Raft, RaftConfig
from kvcore.raft.messages import (
    RAFT_MESSAGES,
    ConfChange,
    ConfState,
    Entry,
    HardState,
    RaftAppend,
    RaftAppendResp,
    RaftHeartbeat,
    RaftHeartbeatResp,
    RaftReadIndex,
    RaftReadIndexResp,
    RaftRemoved,
    RaftSnapshot,
    RaftSnapshotResp,
    RaftTimeoutNow,
    RaftVote,
    RaftVoteResp,
    Snapshot,
    SnapshotMeta,
)

from .harness import Network

SAMPLES = [
    RaftAppend(term=3, src="a", dst="b", prev_index=4, prev_term=2,
               entries=(Entry(term=3, index=5, data=b"x"), Entry(term=3, index=6, kind="conf", data=b"remove c")),
               commit=4),
    RaftHeartbeat(term=1, src="a", dst="b", commit=0, ctx=b"7", stamp=12),
    RaftSnapshot(term=2, src="a", dst="b", meta=SnapshotMeta(index=9, term=2, conf=ConfState(voters=("a", "b"))),
                 offset=0, data=b"\x00" * 5, done=True),
    RaftVote(term=2, src="a", dst="b", last_index=3, last_term=1, pre_vote=True),
    RaftVoteResp(term=2, src="b", dst="a", granted=False, pre_vote=True),
    RaftAppendResp(term=2, src="b", dst="a", index=7, reject=True, hint_index=3, hint_term=1),
    RaftHeartbeatResp(term=1, src="b", dst="a", ctx=b"", stamp=3),
    RaftSnapshotResp(term=1, src="b", dst="a", index=9, received=4),
    RaftTimeoutNow(term=1, src="a", dst="b"),
    RaftRemoved(term=3, src="b", dst="a", conf_index=7),
    RaftReadIndex(term=1, src="b", dst="a", ctx=b"r"),
    RaftReadIndexResp(term=1, src="a", dst="b", ctx=b"r", index=4),
    HardState(term=1, vote=None, commit=0),
    HardState(term=1, vote="a", commit=2),
    Snapshot(meta=SnapshotMeta(index=1, term=1, conf=ConfState(voters=("a",), learners=("b",))), data=b"s"),
    ConfChange(op="promote", node="b"),
]


def test_raft_messages_are_registered_in_the_codec() -> None:
    """#11 wires the group in: every Raft kind is in kvcore.messages.REGISTRY as its own class."""
    for name, cls in RAFT_MESSAGES.items():
        assert REGISTRY[name] is cls


def test_raft_messages_are_wire_kinds_once_the_node_has_replication() -> None:
    """kvcore.replica (which the node imports) registers every Raft kind with the codec."""
    import kvcore.replica  # noqa: F401

    assert set(RAFT_MESSAGES) <= set(REGISTRY)
    for m in SAMPLES:
        assert codec.decode(codec.encode(m)) == m


def test_every_raft_message_round_trips_through_the_codec() -> None:
    for m in SAMPLES:
        assert codec.decode(codec.encode(m)) == m
    kinds = {type(m).__name__ for m in SAMPLES} | {"Entry", "SnapshotMeta", "ConfState"}
    assert kinds == set(RAFT_MESSAGES)


def test_config_validate_speaks_sentences() -> None:
    problems = RaftConfig(id="", election_tick=1, heartbeat_tick=1, read_only="fast").validate()
    assert len(problems) == 3 and all(p.endswith(".") for p in problems)
    with pytest.raises(ValueError, match="election_tick"):
        Raft(RaftConfig(id="1", election_tick=1), MemoryRaftStorage(["1"]).load(), random.Random(0))


def _timeouts(cfg: RaftConfig, draws: int = 400) -> set[int]:
    r = Raft(cfg, MemoryRaftStorage(["1", "2", "3"]).load(), random.Random(7))
    seen = set()
    for _ in range(draws):
        r.become_follower(r.term, None)  # every reset draws a new randomized timeout (§5.2)
        seen.add(r.randomized_timeout)
    return seen


def test_election_timeout_range_min_max() -> None:
    """§5.2 "chosen randomly from a fixed interval": by default etcd's [T, 2T); with
    election_tick_max, the closed interval [election_tick, election_tick_max] (Figure 16's ranges)."""
    assert _timeouts(RaftConfig(id="1", election_tick=10)) == set(range(10, 20))
    assert _timeouts(RaftConfig(id="1", election_tick=10, election_tick_max=13)) == {10, 11, 12, 13}
    assert _timeouts(RaftConfig(id="1", election_tick=10, election_tick_max=10)) == {10}  # 150-150 ms
    problems = RaftConfig(id="1", election_tick=10, election_tick_max=9).validate()
    assert len(problems) == 1 and "election_tick_max" in problems[0] and problems[0].endswith(".")


def test_default_range_draws_as_before() -> None:
    """election_tick_max=0 leaves every draw of the default range unchanged (traces stay put)."""
    r = Raft(RaftConfig(id="1", election_tick=10), MemoryRaftStorage(["1"]).load(), random.Random(3))
    rng = random.Random(3)
    assert r.randomized_timeout == 10 + rng.randrange(10)


@pytest.mark.parametrize("bad", [
    RaftAppend(term=1, src="2", dst="1", prev_index=0, prev_term=0, entries=(Entry(term=1, index=5),)),
    RaftAppend(term=1, src="2", dst="1", prev_index=0, prev_term=0, entries=(Entry(term=7, index=1),)),
    RaftAppend(term=1, src="2", dst="9", prev_index=0, prev_term=0),
    RaftAppend(term=-1, src="2", dst="1", prev_index=0, prev_term=0),
    RaftSnapshot(term=1, src="2", dst="1", meta=SnapshotMeta(index=3, term=1), offset=-4, data=b"", done=True),
])
def test_malformed_messages_are_counted_and_dropped_never_crash(bad: object) -> None:
    """A node never crashes on what a peer sends (house rule; h11's RemoteProtocolError split)."""
    r = Raft(RaftConfig(id="1"), MemoryRaftStorage(["1", "2"]).load(), random.Random(0))
    r.step(bad)  # type: ignore[arg-type]
    assert r.dropped == 1 and r.log.last_index() == 0 and r.term == 0


def trace(seed: int) -> list[str]:
    lines: list[str] = []
    net = Network(["1", "2", "3", "4", "5"], seed=seed, logger=lines.append)
    net.drop_rate = 0.1
    for i in range(300):
        net.tick_all()
        if i % 7 == 0 and net.leaders():
            net.propose(net.leaders()[0], f"{i}".encode())
    return lines


def test_same_seed_same_trace() -> None:
    """Randomness comes only from injected random.Random objects: one seed, one run."""
    assert trace(4) == trace(4)
    assert trace(4) != trace(5)


def test_notable_lines_are_role_changes_not_the_chatter_of_a_server_that_lost_its_leader() -> None:
    """RaftConfig.notable (realnet logs it at INFO) hears who became what at which term; not
    votes, PreVote rounds, or a pre-candidate falling back at the same term. A follower cut off
    from the leader alone (the others still hear it, so leader stickiness refuses it) runs a
    PreVote round every election timeout: twenty timeouts, and it says nothing."""
    lines: list[str] = []
    net = Network(["1", "2", "3", "4", "5"], notable=lines.append)
    start = sorted(lines)
    assert start == [f"{i} became follower at term 0" for i in "12345"]
    del lines[:]
    net.elect("1")
    assert sorted(lines) == ["1 became candidate at term 1", "1 became leader at term 1",
                             *(f"{i} became follower at term 1" for i in "2345")]
    del lines[:]
    net.cut("1", "3")
    r3 = net.raft("3")
    for _ in range(20 * r3.cfg.election_tick):
        net.tick_all()
    assert r3.stats["campaigns"] >= 10 and net.leaders() == ["1"] and r3.term == 1
    assert lines == []
    # a real election is notable again: the leader crashes, another wins
    net.recover()
    net.crash("1")
    net.tick_all(3 * r3.cfg.election_tick)
    (new,) = net.leaders()
    term = net.raft(new).term
    assert f"{new} became candidate at term {term}" in lines and f"{new} became leader at term {term}" in lines


def test_a_pre_candidate_refused_at_the_same_term_is_not_notable() -> None:
    """Without leader stickiness the others answer a lagging server's PreVote: refused (its log
    is behind), it falls back to follower at the same term, every election timeout, silently."""
    lines: list[str] = []
    net = Network(["1", "2", "3", "4", "5"], notable=lines.append, check_quorum=False)
    net.elect("1")
    net.drop("1", "3")  # 3 no longer hears the leader; its log falls behind
    net.propose("1", b"x")
    net.stabilize()
    del lines[:]
    r3 = net.raft("3")
    for _ in range(20 * r3.cfg.election_tick):
        net.tick_all()
    assert r3.stats["campaigns"] >= 10 and net.leaders() == ["1"] and net.raft("1").term == 1
    assert lines == []
