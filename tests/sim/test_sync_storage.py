"""SimStorage (sim.storage): writes are volatile until synced, a sync may take simulated time
(group commit), a crash loses what was not synced; the cluster's ``power_loss`` verb and the
``powerloss`` nemesis; a durable node syncs every durable write, so a crash keeps it as before."""

from __future__ import annotations

import pytest
import simpy

from kvcore.config import NodeConfig
from kvcore.membership.protocol import INCARNATION_KEY
from kvcore.messages import Delete, Forward, ForwardReply, Get, Put, Reply
from kvcore.node.migration import Migration
from kvcore.node.routing import Router
from kvcore.slots import key_slot
from kvcore.store import JOURNAL_PREFIX
from sim.cluster import SimCluster
from sim.latency import Constant
from sim.nemesis import ALIASES, Nemesis, parse_kinds
from sim.rand import stream
from sim.storage import SimStorage
from sim.sweep import RunConfig
from sim.sweepcli import main as check_main


def _timed(delay: float = 0.01) -> tuple[simpy.Environment, SimStorage]:
    env = simpy.Environment()
    return env, SimStorage(env, Constant(delay), stream(1, "test"))


def test_unsynced_writes_are_seen_then_lost_in_a_crash_synced_ones_kept() -> None:
    s = SimStorage()
    s.put("a", b"1")
    s.sync()
    s.put("b", b"2")
    s.delete("a")
    assert s.get("b") == b"2" and s.get("a") is None  # the node sees its own writes at once
    assert s.unsynced == 2
    assert s.crash() == 2
    assert s.get("a") == b"1" and s.get("b") is None  # only the synced write survived
    assert s.items("") == [("a", b"1")]
    assert s.stats.lost_writes == 2 and s.stats.crashes == 1


def test_a_synced_delete_survives_a_crash() -> None:
    s = SimStorage()
    s.put("a", b"1")
    s.sync()
    s.delete("a")
    s.sync()
    assert s.crash() == 0
    assert s.get("a") is None and s.durable == {}


def test_zero_sync_time_schedules_nothing_and_makes_writes_durable_at_once() -> None:
    env = simpy.Environment()
    s = SimStorage(env)
    s.put("a", b"1")
    s.sync()
    assert s.durable == {"a": b"1"} and not env._queue and env.now == 0
    assert (s.stats.sync_calls, s.stats.flushes, s.stats.writes_flushed) == (1, 1, 1)
    s.sync()  # nothing dirty: a call, no flush
    assert (s.stats.sync_calls, s.stats.flushes) == (2, 1)


def test_a_crash_during_a_sync_loses_its_writes() -> None:
    env, s = _timed(0.01)
    s.put("a", b"1")
    s.sync()
    assert s.durable == {} and s.get("a") == b"1"  # the node believes it; the disk has not got it
    env.run(until=0.005)
    assert s.crash() == 1
    env.run(until=0.1)  # the flush completes into nothing
    assert s.durable == {} and s.get("a") is None and s.stats.flushes == 0


def test_after_the_sync_completes_the_writes_survive() -> None:
    env, s = _timed(0.01)
    s.put("a", b"1")
    s.sync()
    env.run(until=0.011)
    assert s.durable == {"a": b"1"}
    s.put("b", b"2")  # written, never synced
    assert s.crash() == 1
    assert s.items("") == [("a", b"1")]


def test_syncs_during_a_flush_join_the_next_one_group_commit() -> None:
    env, s = _timed(0.01)
    s.put("k0", b"0")
    s.sync()  # starts flush 1
    for i in range(1, 6):
        s.put(f"k{i}", b"x")
        s.sync()  # in flight: all five join flush 2
    env.run(until=0.015)
    assert s.stats.flushes == 1 and "k5" not in s.durable
    env.run(until=0.025)
    st = s.stats
    assert (st.sync_calls, st.flushes, st.writes_flushed, st.max_group) == (6, 2, 6, 5)
    assert st.syncs_per_flush == 3.0 and st.writes_per_flush == 3.0
    assert sorted(s.durable) == [f"k{i}" for i in range(6)]


def test_a_crash_loses_the_waiting_group_too_and_later_syncs_work() -> None:
    env, s = _timed(0.01)
    s.put("a", b"1")
    s.sync()
    s.put("b", b"2")
    s.sync()  # waits for the next flush
    assert s.crash() == 2
    s.put("c", b"3")
    s.sync()
    env.run(until=1.0)
    assert s.durable == {"c": b"3"}


def test_a_sync_time_needs_the_environment_and_parses_the_latency_syntax() -> None:
    with pytest.raises(ValueError, match="environment"):
        SimStorage(None, "const:0.002")
    env = simpy.Environment()
    s = SimStorage(env, "uniform:0.001,0.002", stream(1, "x"))
    s.put("a", b"1")
    s.sync()
    env.run(until=0.01)
    assert s.durable == {"a": b"1"}
    with pytest.raises(ValueError, match="Unknown latency"):
        SimStorage(env, "fast:1", stream(1, "x"))


# --- the cluster ------------------------------------------------------------------------------


def _call(c: SimCluster, node_id: str, op: object, wait: float = 1.0) -> Reply:
    out: list[Reply] = []
    assert c.submit(node_id, op, out.append)
    c.run(until=c.now + wait)
    assert out, f"no reply from {node_id} to {op}"
    return out[0]



def test_a_durable_node_syncs_every_durable_write() -> None:
    c = SimCluster(3, 3, NodeConfig(durable=True))
    seen: list[int] = []

    def sample() -> object:
        while True:
            seen.append(sum(c.storage(n).unsynced for n in c.ids))
            yield c.env.timeout(0.005)

    c.env.process(sample())
    for i in range(20):
        assert _call(c, "n1", Put(key=f"k{i}".encode(), value=b"v"), wait=0.05).error == ""
    c.crash("n2")
    c.run(until=c.now + 1.0)
    c.restart("n2")
    c.reshard(range(0, 50), "n3")
    c.run(until=c.now + 5.0)
    assert len(seen) > 100 and not any(seen)
    assert all(c.storage(n).stats.lost_writes == 0 for n in c.ids)
    assert all(c.storage(n).stats.flushes > 0 for n in c.ids)


def test_power_loss_of_every_node_keeps_what_a_durable_store_synced() -> None:
    c = SimCluster(5, 3, NodeConfig(durable=True))
    keys = [f"p{i}".encode() for i in range(15)]
    for k in keys:
        assert _call(c, "n1", Put(key=k, value=k), wait=0.05).error == ""
    incarnations = {n: c.storage(n).get(INCARNATION_KEY) for n in c.ids}
    c.power_loss(c.ids)
    assert c.alive() == [] and c.faults[-1].verb == "powerloss" and c.faults[-1].args == "n1,n2,n3"
    c.run(until=c.now + 0.5)
    for n in c.ids:
        assert c.storage(n).get(INCARNATION_KEY) == incarnations[n]
        c.restart(n)
    c.run(until=c.now + 3.0)
    for k in keys:
        r = _call(c, "n2", Get(key=k))
        assert r.error == "" and r.value == k


@pytest.mark.parametrize("broken", [False, True])
def test_with_a_sync_time_a_durable_node_acknowledges_a_write_once_it_is_durable(
    broken: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's promise (an fsync per write, Redis's ``appendfsync always``) holds when a
    sync takes time: the answer waits for the flush, so a power loss before it takes back only
    a write nobody was told of. ``broken`` answers at once, as the node did before: the power
    loss then takes back an acknowledged write (the test's teeth)."""
    if broken:
        monkeypatch.setattr(Router, "settle", lambda self, r, reply: reply(r))
    c = SimCluster(5, 1, NodeConfig(durable=True), sync_time="const:0.5")
    c.run(until=1.0)
    out: list[Reply] = []
    c.submit("n1", Put(key=b"x", value=b"1"), out.append)
    c.run(until=c.now + 0.01)
    assert JOURNAL_PREFIX + b"x".hex() not in c.storage("n1").durable  # the flush is under way
    if broken:
        assert out and out[0].error == ""  # acknowledged before it was durable
    else:
        assert out == []  # not yet
    c.power_loss(["n1"])
    assert c.storage("n1").stats.lost_writes >= 1
    c.restart("n1")
    c.run(until=c.now + 1.0)
    assert _call(c, "n1", Get(key=b"x")).value is None  # lost, and told (broken) or not
    # once acknowledged, a write survives the power loss
    out.clear()
    c.submit("n1", Put(key=b"y", value=b"2"), out.append)
    c.run(until=c.now + 0.6)
    assert out and out[0].error == ""
    c.power_loss(["n1"])
    c.restart("n1")
    c.run(until=c.now + 1.0)
    assert _call(c, "n1", Get(key=b"y")).value == b"2"


def test_a_read_of_a_write_not_yet_durable_waits_for_its_flush() -> None:
    c = SimCluster(5, 1, NodeConfig(durable=True), sync_time="const:0.5")
    c.run(until=1.0)
    put: list[Reply] = []
    got: list[Reply] = []
    c.submit("n1", Put(key=b"x", value=b"1"), put.append)
    c.submit("n1", Get(key=b"x"), got.append)
    c.run(until=c.now + 0.4)
    assert put == [] and got == []  # the read saw the write: it waits as the write does
    c.run(until=c.now + 0.2)
    assert put[0].error == "" and got[0].value == b"1"
    got.clear()
    c.submit("n1", Get(key=b"x"), got.append)
    c.run(until=c.now + 0.001)
    assert got and got[0].value == b"1"  # nothing pending: answered at once


def test_without_a_sync_time_a_durable_node_answers_at_once() -> None:
    c = SimCluster(5, 1, NodeConfig(durable=True))
    c.run(until=1.0)
    out: list[Reply] = []
    c.submit("n1", Put(key=b"x", value=b"1"), out.append)
    assert out and out[0].error == ""  # within the call: the sync completed in it


def test_power_loss_names_only_known_nodes() -> None:
    c = SimCluster(1, 2)
    with pytest.raises(ValueError, match="unknown node"):
        c.power_loss(["n9"])


# --- the nemesis ------------------------------------------------------------------------------


def test_powerloss_is_a_kind_outside_all() -> None:
    assert parse_kinds("powerloss") == ("powerloss",)
    assert "powerloss" not in ALIASES["all"]


def test_powerloss_nemesis_fires_restarts_and_keeps_evidence() -> None:
    c = SimCluster(11, 5, NodeConfig(durable=True))
    plan = Nemesis("powerloss", 11).plan(c.ids, 0.5, 20.0)
    assert plan and any(len(r.nodes) == 5 for r in plan)
    run = Nemesis("powerloss", 11).apply(c, 0.5, 20.0)
    c.run(until=22.0)
    fired = [r for r in run.records if r.fired is not None]
    assert fired and all(r.undone is not None and r.downtime > 0 for r in fired)
    assert all(r.lost_writes == 0 for r in fired)  # durable, instantaneous syncs: nothing lost
    assert "lost 0 unsynced writes" in fired[0].describe()
    assert sorted(c.alive()) == sorted(c.ids)
    assert [f.verb for f in c.faults].count("powerloss") == len(fired)
    assert all(f.end is not None for f in c.faults if f.verb == "powerloss")


def test_check_runs_the_powerloss_nemesis(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main(["--nemesis", "powerloss", "--seeds", "2", "--no-progress", "--processes", "1"]) == 0
    out = capsys.readouterr().out
    assert "powerloss" in out and "powerloss lost 0 unsynced writes" in out


def test_check_refuses_a_bad_sync_time(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        check_main(["--sync-time", "soon", "--seeds", "1", "--no-progress"])
    assert e.value.code == 2
    assert "sync time" in capsys.readouterr().err
    assert RunConfig(sync_time="const:0.002").cli_args() == "--sync-time const:0.002"


def _busy(seed: int, sync_time: str | None) -> SimCluster:
    from sim.clients import Workload

    c = SimCluster(seed, 3, NodeConfig(durable=True), sync_time=sync_time)
    # twenty closed-loop clients (each waits for its answer, which waits for a flush)
    c.add_clients(20, Workload(ops=60, keys=20, think=0.0005, pace=0.0, timeout=1.0))
    c.run(until=10.0)
    return c


def test_group_commit_pays_off_with_a_sync_time_and_runs_stay_deterministic() -> None:
    instant, slow = _busy(2, None).sync_stats(), _busy(2, "const:0.005").sync_stats()
    assert instant.sync_calls == instant.flushes and instant.max_group == 1
    # the node syncs about as often (its answers wait for the flushes, which moves the clients'
    # timing a little); the disk flushes far less
    assert abs(slow.sync_calls - instant.sync_calls) <= instant.sync_calls // 50
    assert slow.flushes < slow.sync_calls and slow.max_group > 1 and slow.syncs_per_flush > 1.5
    a, b = _busy(3, "uniform:0.001,0.004"), _busy(3, "uniform:0.001,0.004")
    assert a.trace.digest() == b.trace.digest() and a.sync_stats() == b.sync_stats()


def test_a_key_written_again_while_its_sync_is_in_flight_counts_once() -> None:
    _env, s = _timed(0.01)
    s.put("a", b"1")
    s.sync()  # in flight until 0.01
    s.put("a", b"2")  # dirty again, the same key
    s.put("b", b"3")
    assert s.unsynced == 2  # distinct keys: a (in flight and dirty) and b
    assert s.crash() == 2 and s.stats.lost_writes == 2


@pytest.mark.parametrize("broken", [False, True])
def test_a_moved_batch_is_acknowledged_once_the_target_holds_it_durably(
    broken: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source deletes a batch's keys on the target's ack; with a sync time the target acks
    only once the batch is durable, so its power loss meanwhile loses no key. ``broken`` acks at
    once (as before): the power loss then takes keys the source has already deleted."""
    if broken:
        monkeypatch.setattr(Migration, "_ack_durably", lambda self, src, ack: self.send(src, ack))
    c = SimCluster(7, 2, NodeConfig(durable=True), sync_time="const:0.3")
    c.run(until=1.0)
    tag = next(t for t in "abcdefghijklmnopqrstuvwxyz" if c.node("n1").slot_map.owner(key_slot(t)) == "n1")
    keys = [f"{{{tag}}}k{i}".encode() for i in range(5)]
    for k in keys:
        assert _call(c, "n1", Put(key=k, value=k)).error == ""
    c.reshard([key_slot(tag)], "n2", at=c.now + 0.01, batch=10)
    c.run(until=c.now + 0.1)
    n2 = c.node("n2")
    assert all(n2.store.get(k) == k for k in keys)  # the batch arrived (not yet durable)
    held_by_source = [k for k in keys if c.node("n1").store.get(k) is not None]
    assert held_by_source == ([] if broken else keys)
    c.power_loss(["n2"])
    c.restart("n2", at=c.now + 0.2)  # without its import mark (not durable either)
    c.run(until=c.now + 5.0)  # the source's resent batch is refused: it keeps the keys
    found = {k for k in keys for n in c.nodes() if n.store.get(k) == k}
    if broken:
        assert found != set(keys), "the broken variant should lose keys (the test's teeth)"
    else:
        assert found == set(keys)


def test_a_duplicate_forward_while_the_answer_waits_gets_the_same_answer() -> None:
    """A forwarded Delete and its duplicate (the forwarding node resent it) both arrive while the
    first answer waits for the flush: both get the first answer (ok), not a second delete's
    not_found, and both only once the delete is durable."""
    c = SimCluster(5, 2, NodeConfig(durable=True), sync_time="const:0.5")
    c.run(until=1.0)
    owned = c.node("n1").slot_map.owner
    key = next(k for k in (f"k{i}".encode() for i in range(100)) if owned(key_slot(k)) == "n1")
    assert _call(c, "n1", Put(key=key, value=b"v")).error == ""
    node = c.node("n1")
    sent: list[ForwardReply] = []
    send = node.router.send
    node.router.send = lambda dst, msg: (sent.append(msg) if isinstance(msg, ForwardReply) else None, send(dst, msg))
    node.on_message("n2", Forward(request_id=77, op=Delete(key=key)))
    node.on_message("n2", Forward(request_id=77, op=Delete(key=key)))
    assert sent == []  # neither answered before the delete is durable
    c.run(until=c.now + 0.6)
    assert [(m.request_id, m.reply.error) for m in sent] == [(77, ""), (77, "")]
