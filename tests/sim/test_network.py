"""The simulated network's rules and verbs, on a tiny two-endpoint world."""

from __future__ import annotations

import random
from typing import Any

import pytest
import simpy

from kvcore.messages import Nack
from sim.latency import Constant, Exponential, LogNormal, Uniform, parse_latency
from sim.network import SimNetwork
from sim.trace import Trace


class Sink:
    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.got: list[tuple[float, str, Any]] = []

    def on_message(self, src: str, msg: Any) -> None:
        self.got.append((self.env.now, src, msg))


def world(codec: bool = False, latency: Any = None) -> tuple[simpy.Environment, SimNetwork, dict[str, Sink]]:
    env = simpy.Environment()
    net = SimNetwork(env, random.Random(1), Trace(keep=True), latency or Constant(0.01), codec=codec)
    sinks = {}
    for nid in ("a", "b", "c"):
        sinks[nid] = Sink(env)
        net.attach(nid).node = sinks[nid]
    return env, net, sinks


def ping(i: int = 0) -> Nack:
    return Nack(seq=i)


def test_default_latency_delivers_after_the_delay_in_send_order() -> None:
    env, net, s = world()
    for i in range(3):
        net.send("a", "b", ping(i))
    env.run()
    assert [(t, m.seq) for t, _, m in s["b"].got] == [(0.01, 0), (0.01, 1), (0.01, 2)]


def test_two_way_partition_drops_both_directions_and_heal_restores() -> None:
    env, net, s = world()
    rule = net.partition(["a"], ["b"])
    net.send("a", "b", ping())
    net.send("b", "a", ping())
    net.send("a", "c", ping())
    env.run()
    assert s["b"].got == [] and s["a"].got == [] and len(s["c"].got) == 1
    assert rule.hits == 2 and net.stats.dropped == {"partition": 2}
    assert net.heal() == 1
    net.send("a", "b", ping())
    env.run()
    assert len(s["b"].got) == 1
    assert net.rule_hits()["partition"] == 2  # evidence survives the heal


def test_one_way_partition_drops_only_one_direction() -> None:
    env, net, s = world()
    net.partition(["a"], ["b"], oneway=True)
    net.send("a", "b", ping())
    net.send("b", "a", ping())
    env.run()
    assert s["b"].got == [] and len(s["a"].got) == 1


def test_partition_against_the_rest() -> None:
    env, net, s = world()
    net.partition(["a"])
    net.send("a", "b", ping())
    net.send("a", "c", ping())
    net.send("b", "c", ping())
    env.run()
    assert not s["b"].got and len(s["c"].got) == 1


def test_loss_drops_about_the_given_fraction() -> None:
    env, net, s = world()
    net.set_loss(0.3)
    for i in range(5000):
        net.send("a", "b", ping(i))
    env.run()
    lost = net.stats.dropped["loss"]
    assert 1300 < lost < 1700
    assert len(s["b"].got) == 5000 - lost
    net.set_loss(0.0)
    assert not net.rules


def test_duplication_delivers_twice() -> None:
    env, net, s = world()
    net.set_duplicate(1.0)
    net.send("a", "b", ping(7))
    env.run()
    assert [m.seq for _, _, m in s["b"].got] == [7, 7]
    assert net.stats.duplicated == 1


def test_link_override_and_slow_node_change_latency() -> None:
    env, net, s = world()
    net.set_link("a", "b", latency=Constant(0.5))
    net.slow_node("c", Constant(1.0))
    net.send("a", "b", ping())
    net.send("b", "a", ping())  # both ways by default
    net.send("a", "c", ping())
    env.run()
    assert s["b"].got[0][0] == pytest.approx(0.5)
    assert s["a"].got[0][0] == pytest.approx(0.5)
    assert s["c"].got[0][0] == pytest.approx(1.01)
    net.clear_links()
    assert not net.rules


def test_partition_wins_over_link_override_first_rule_decides() -> None:
    env, net, s = world()
    net.set_link("a", "b", latency=Constant(0.5))
    net.partition(["a"], ["b"])  # added later, but partitions are evaluated first
    net.send("a", "b", ping())
    env.run()
    assert s["b"].got == []


def test_hold_and_release_deliver_held_messages_in_order() -> None:
    env, net, s = world()
    net.hold("a", "b")
    for i in range(3):
        net.send("a", "b", ping(i))
    env.run()
    assert s["b"].got == []
    assert net.release() == 3
    env.run()
    assert [m.seq for _, _, m in s["b"].got] == [0, 1, 2]


def test_messages_to_a_down_endpoint_are_dropped() -> None:
    env, net, _s = world()
    net.endpoints["b"].node = None
    net.send("a", "b", ping())
    env.run()
    assert net.stats.dropped == {"down": 1}


def test_codec_counts_bytes_and_malformed_payloads_are_dropped_not_raised() -> None:
    env, net, s = world(codec=True)
    net.send("a", "b", ping(3))
    net.inject("c", "b", b"\xc1garbage")
    env.run()
    assert [m.seq for _, _, m in s["b"].got] == [3]
    assert net.endpoints["a"].stats.sent_bytes["Nack"] > 0
    assert net.endpoints["b"].stats.malformed == 1


@pytest.mark.parametrize(
    "text,expected",
    [
        ("const:0.002", Constant(0.002)),
        ("uniform:0.001,0.003", Uniform(0.001, 0.003)),
        ("exp:0.002", Exponential(0.002)),
        ("lognormal:0.001,0.5", LogNormal(0.001, 0.5)),
        ("uniform:0.002,0.002", Uniform(0.002, 0.002)),
        ("lognormal:0.001,0", LogNormal(0.001, 0.0)),
        ("const:0", Constant(0.0)),
    ],
)
def test_parse_latency(text: str, expected: Any) -> None:
    assert parse_latency(text) == expected


@pytest.mark.parametrize("text", ["gauss:1", "const:", "uniform:1", "const:x", "const:-1",
                                  # each of these hung a run, crashed it, or delivered nothing
                                  "const:nan", "const:inf", "exp:0", "lognormal:0,0.5", "lognormal:0.001,nan",
                                  "uniform:2,1", "uniform:0.001,inf"])
def test_parse_latency_rejects_bad_input_with_a_sentence(text: str) -> None:
    with pytest.raises(ValueError, match=r"\."):
        parse_latency(text)


def test_latency_distributions_have_the_right_centre() -> None:
    rng = random.Random(3)
    for dist, centre in [(Uniform(1, 3), 2), (Exponential(2.0), 2), (LogNormal(1.0, 0.5), 1)]:
        xs = sorted(dist.sample(rng) for _ in range(20000))
        mean = sum(xs) / len(xs)
        median = xs[len(xs) // 2]
        got = median if isinstance(dist, LogNormal) else mean
        assert abs(got - centre) < 0.05 * centre, (dist, got)


def _schedule_mix(env: simpy.Environment, seed: int, log: list[Any]) -> None:
    """Timeouts, processes, bare events at equal and distinct times, urgent and normal, and
    callbacks that schedule more: a mixed schedule whose order of callbacks ``log`` records."""
    rng = random.Random(seed)

    def cb(tag: str) -> Any:
        def fire(ev: Any) -> None:
            log.append((env.now, tag))
            if rng.random() < 0.3:
                env.timeout(rng.choice([0, 0.5, 1.0])).callbacks.append(cb(tag + "+"))  # type: ignore[union-attr]
        return fire

    def proc(name: str) -> Any:
        for _ in range(rng.randrange(1, 4)):
            yield env.timeout(rng.choice([0, 0.25, 1.0]))
            log.append((env.now, name))

    for i in range(40):
        kind = rng.randrange(3)
        if kind == 0:
            env.timeout(rng.choice([0, 0.5, 1.0, 2.5])).callbacks.append(cb(f"t{i}"))  # type: ignore[union-attr]
        elif kind == 1:
            env.process(proc(f"p{i}"))
        else:
            ev = env.event()
            ev.callbacks.append(cb(f"e{i}"))  # type: ignore[union-attr]
            ev.succeed()


@pytest.mark.parametrize("seed", range(6))
def test_the_sims_environment_runs_the_schedule_simpys_runs(seed: int) -> None:
    from sim.network import SimEnvironment

    logs = []
    for env in (simpy.Environment(), SimEnvironment()):
        log: list[Any] = []
        _schedule_mix(env, seed, log)
        env.run(until=1.0)  # a number: the events at 1.0 wait (the until event is urgent)
        log.append(("stopped", env.now, next(env._eid)))
        done = env.timeout(1.5, value="v")
        log.append(("value", env.run(until=done), env.now))
        log.append(("again", env.run(until=done)))  # processed already: its value at once
        env.run()  # to the end of the schedule
        log.append(("end", env.now, len(env._queue), next(env._eid)))
        logs.append(log)
    assert logs[0] == logs[1]


def test_the_sims_environment_fails_and_stops_as_simpys_does() -> None:
    from sim.network import SimEnvironment

    for make in (simpy.Environment, SimEnvironment):
        env = make()
        with pytest.raises(ValueError, match="must be greater"):
            env.run(until=0)
        failed = env.event()
        failed.fail(KeyError("boom"))
        with pytest.raises(KeyError):
            env.run()
        defused = env.event()
        defused.fail(KeyError("quiet"))
        defused.defused = True
        env.run()
        never = env.event()
        with pytest.raises(RuntimeError, match="until"):
            env.run(until=never)
        # a callback that stops the run: the event's other callbacks wait for the next run
        seen: list[Any] = []
        ev = env.event()
        ev.callbacks.extend([lambda e, seen=seen: seen.append("a"), simpy.core.StopSimulation.callback,  # type: ignore[union-attr]
                             lambda e, seen=seen: seen.append("b")])
        ev.succeed("s")
        env.timeout(1).callbacks.append(lambda e, seen=seen: seen.append("later"))  # type: ignore[union-attr]
        seen.append(env.run(until=5))
        seen.append(env.now)
        env.run(until=6)
        assert seen == ["a", "s", 0, "b", "later"]
