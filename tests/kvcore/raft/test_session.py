"""Client sessions (thesis §6.3): a write retried with the same (client, seq) applies once."""

from __future__ import annotations

import pytest

from kvcore.raft.session import SessionExpired, SessionTable, StaleRequest


def counter() -> tuple[list[int], object]:
    calls: list[int] = []

    def run() -> bytes:
        calls.append(1)
        return f"applied#{len(calls)}".encode()

    return calls, run


def test_a_retry_is_answered_from_the_session_and_not_applied_again() -> None:
    """"If it receives a command whose serial number has already been executed, it responds
    immediately without re-executing the request." Reference: thesis §6.3."""
    t = SessionTable(timeout=100)
    t.register("c1", now=0)
    calls, run = counter()
    first = t.apply("c1", 1, 0, 1, run)  # type: ignore[arg-type]
    again = t.apply("c1", 1, 0, 2, run)  # type: ignore[arg-type]
    assert first == again == b"applied#1" and len(calls) == 1
    assert t.apply("c1", 2, 0, 3, run) == b"applied#2"  # type: ignore[arg-type]


def test_acknowledged_answers_are_discarded_and_a_late_retry_is_refused() -> None:
    """The client tells the lowest seq it has no answer for; older answers can be dropped.
    Reference: thesis §6.3."""
    t = SessionTable(timeout=100)
    t.register("c1", now=0)
    _, run = counter()
    t.apply("c1", 1, 0, 1, run)  # type: ignore[arg-type]
    t.apply("c1", 2, 2, 2, run)  # type: ignore[arg-type]
    assert set(t.sessions["c1"].answers) == {2}
    with pytest.raises(StaleRequest, match="already acknowledged seq 1"):
        t.apply("c1", 1, 0, 3, run)  # type: ignore[arg-type]


def test_expiry_uses_the_log_timestamp_so_every_replica_agrees() -> None:
    """"servers must agree on when a session expires": expiry by the leader's timestamp in the
    entries; an expired client is refused (never re-applied). Reference: thesis §6.3."""
    replicas = [SessionTable(timeout=10) for _ in range(3)]
    calls, run = counter()
    for t in replicas:
        t.register("c1", now=0)
        t.apply("c1", 1, 0, 5, run)  # type: ignore[arg-type]
    for t in replicas:
        t.register("other", now=16)  # an entry stamped 16 expires c1 (idle since 5) everywhere
        assert "c1" not in t.sessions
        with pytest.raises(SessionExpired, match="not applied"):
            t.apply("c1", 1, 0, 16, run)  # type: ignore[arg-type]
    assert len(calls) == 3


def test_unregistered_clients_are_refused() -> None:
    t = SessionTable(timeout=10)
    _, run = counter()
    with pytest.raises(SessionExpired):
        t.apply("nobody", 1, 0, 0, run)  # type: ignore[arg-type]


def test_the_least_recently_used_session_is_evicted_at_the_cap() -> None:
    t = SessionTable(timeout=1000, max_sessions=2)
    t.register("a", 0)
    t.register("b", 1)
    _, run = counter()
    t.apply("a", 1, 0, 2, run)  # type: ignore[arg-type]
    t.register("c", 3)
    assert sorted(t.sessions) == ["a", "c"]


def test_sessions_survive_a_snapshot_round_trip() -> None:
    t = SessionTable(timeout=10)
    t.register("c1", 0)
    t.apply("c1", 4, 0, 1, lambda: b"\x00\xffanswer")
    u = SessionTable.from_bytes(t.to_bytes())
    assert u.to_bytes() == t.to_bytes()
    assert u.apply("c1", 4, 0, 2, lambda: b"twice!") == b"\x00\xffanswer"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        SessionTable(timeout=0)


def test_a_retry_after_a_leader_crash_is_applied_once_on_every_replica() -> None:
    """End to end over the core: the write commits, the leader crashes before answering, the
    client retries with the same seq on the new leader; every replica applies it once.
    Reference: thesis §6.3 with §5."""
    from .harness import Network, Node

    net = Network(["1", "2", "3"])
    tables: dict[str, SessionTable] = {}
    applied: dict[str, list[str]] = {}

    def on_apply(node: Node, e: object) -> None:
        data = e.data.decode()  # type: ignore[attr-defined]
        if not data:
            return
        t = tables.setdefault(node.id, SessionTable(timeout=100))
        verb, client, *rest = data.split()
        if verb == "register":
            t.register(client, float(rest[0]))
            return
        seq, now, value = int(rest[0]), float(rest[1]), rest[2]
        t.apply(client, seq, 0, now, lambda: applied.setdefault(node.id, []).append(value) or b"ok")

    net.on_apply = on_apply
    net.elect("1")
    net.propose("1", b"register c1 0")
    net.stabilize()
    net.propose("1", b"write c1 1 1 x=1")
    net.stabilize()
    net.crash("1")  # the answer never reached the client
    for _ in range(50):
        net.tick_all()
        if net.leaders():
            break
    new = net.leaders()[0]
    net.propose(new, b"write c1 1 2 x=1")  # the retry
    net.stabilize()
    assert applied == {"1": ["x=1"], "2": ["x=1"], "3": ["x=1"]}
