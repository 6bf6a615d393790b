"""The SWIM + Lifeguard protocol of kvcore/membership/, one Membership on a FakeRuntime.

A :class:`Harness` owns node ``n1`` and knows four peers ``n2..n5`` (so N = 5: the minimum
suspicion timeout is ``4 * max(1, log10(6)) * 1 s = 4 s``, the maximum ``6 * 4 = 24 s`` and
Lifeguard expects ``k = suspicion_mult - 2 = 2`` confirmations). It feeds messages in with
``handle`` and asserts on what the node sends, with the time it sent it. When ``respond`` is on,
the peers not in ``down`` behave like healthy SWIM members at step granularity: they ack pings,
and answer a PingReq with the relayed ack (target up) or a Nack (target down). Nothing here opens
a socket or sleeps; the clock moves only in ``advance``.

Tests cite the sentence they pin: SWIM (Das, Gupta, Motivala 2002) §3.1 failure detection, §4.1
dissemination, §4.2 suspicion, §4.3 round-robin probing; Lifeguard (Dadgar, Phillips, Currey 2018)
§IV-A local health (awareness, Nacks), §IV-B dynamic suspicion, §IV-C buddy system; or memberlist's
file and function.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

import pytest

from kvcore.membership import (
    ALIVE,
    DEAD,
    INCARNATION_KEY,
    LEFT,
    STATES,
    SUSPECT,
    MemberEvent,
    Membership,
    State,
    SwimConfig,
)
from kvcore.membership.gossip import bits_of
from kvcore.messages import (
    Alive,
    Dead,
    Gossip,
    MemberState,
    Nack,
    PingReq,
    PushPull,
    Suspect,
    SwimAck,
    SwimPing,
)
from kvcore.runtime import FakeRuntime, MemoryStorage, Storage

PEERS = ("n2", "n3", "n4", "n5")
#: suspicion_timeout(4, 5, 1.0): log10(5 + 1) < 1, so the floor
MIN_T = 4 * 1.0
#: suspicion_max_timeout_mult * MIN_T
MAX_T = 6 * MIN_T
#: suspicion_mult - 2, and N - 2 = 3 >= 2 members can confirm
K = 2
#: background traffic off unless a test turns it on: no gossip rounds, no push-pull rounds
QUIET: dict[str, Any] = {"gossip_nodes": 0, "push_pull_interval": 1e6}


def after_confirmations(c: int) -> float:
    """Lifeguard §IV-B: the suspicion timeout after ``c`` independent confirmations, in seconds
    from the start of the suspicion: max - log(c+1)/log(k+1) * (max - min), floored to the ms."""
    raw = MAX_T - math.log(c + 1) / math.log(K + 1) * (MAX_T - MIN_T)
    return max(MIN_T, math.floor(1000 * raw) / 1000)


def alive(node: str, inc: int = 0, slots: str = "", epoch: int = 0) -> Alive:
    return Alive(node=node, incarnation=inc, addr=f"a-{node}", peer_addr=f"p-{node}", slots=slots,
                 epoch=epoch)


def member_state(node: str, state: str, inc: int = 0) -> MemberState:
    return MemberState(node=node, incarnation=inc, state=state, addr=f"a-{node}", peer_addr=f"p-{node}",
                       slots="", epoch=0)


@dataclass(frozen=True)
class Sent:
    t: float
    dst: str
    msg: Any


class Harness:
    def __init__(
        self,
        peers: tuple[str, ...] = PEERS,
        *,
        seed: int = 0,
        node: str = "n1",
        storage: Storage | None = None,
        respond: bool = False,
        **config: Any,
    ) -> None:
        self.rt = FakeRuntime(node, seed=seed)
        if storage is not None:
            self.rt.storage = storage
        self.log: list[Sent] = []
        self.events: list[tuple[float, str, str]] = []
        self.respond = respond
        self.down: set[str] = set()
        self._answered = 0
        self.config = SwimConfig.lan(**{**QUIET, **config})
        self.m = Membership(self.rt, self._send, self.config, f"a-{node}", f"p-{node}")
        self.m.listeners.append(lambda event, nid, _m: self.events.append((self.rt.now(), event, nid)))
        self.m.add_static([(n, f"a-{n}", f"p-{n}", "", 0) for n in (node, *peers)])

    def _send(self, dst: str, msg: Any) -> None:
        self.log.append(Sent(self.rt.now(), dst, msg))

    # --- driving ---------------------------------------------------------------------------

    def start(self, seeds: tuple[str, ...] = ()) -> Harness:
        self.m.start(seeds)
        return self

    def handle(self, src: str, msg: Any) -> None:
        self.m.handle(src, msg)

    def advance(self, dt: float, step: float = 0.01) -> None:
        """Move the clock by ``dt``; with ``respond``, let healthy peers answer every ``step``."""
        if not self.respond:
            self.rt.advance(dt)
            return
        end = self.rt.now() + dt
        while self.rt.now() < end - 1e-12:
            self.rt.advance(min(step, end - self.rt.now()))
            self._answer()

    def advance_to(self, t: float) -> None:
        self.advance(max(0.0, t - self.rt.now()))

    def _answer(self) -> None:
        while self._answered < len(self.log):
            s = self.log[self._answered]
            self._answered += 1
            if s.dst in self.down:
                continue
            if isinstance(s.msg, SwimPing):
                self.handle(s.dst, SwimAck(seq=s.msg.seq, gossip=()))
            elif isinstance(s.msg, PingReq):
                if s.msg.target not in self.down:
                    self.handle(s.dst, SwimAck(seq=s.msg.seq, gossip=()))
                elif self.config.lifeguard:
                    self.handle(s.dst, Nack(seq=s.msg.seq))

    def until(self, kind: type, dst: str | None = None, limit: float = 30.0, step: float = 0.001) -> Sent:
        """Advance in small steps until the node sends a new ``kind`` (to ``dst``); return it."""
        mark = len(self.log)
        end = self.rt.now() + limit
        while self.rt.now() < end:
            for s in self.log[mark:]:
                if isinstance(s.msg, kind) and (dst is None or s.dst == dst):
                    return s
            mark = len(self.log)
            self.advance(step, step)
        raise AssertionError(f"no {kind.__name__} to {dst or 'anyone'} within {limit}s")

    # --- looking ---------------------------------------------------------------------------

    def sent(self, kind: type, since: float = -1.0) -> list[Sent]:
        return [s for s in self.log if isinstance(s.msg, kind) and s.t > since]

    def updates_sent(self) -> list[Any]:
        """Every membership update that left the node, piggybacked or gossiped, in order."""
        out: list[Any] = []
        for s in self.log:
            if isinstance(s.msg, SwimPing | SwimAck):
                out.extend(s.msg.gossip)
            elif isinstance(s.msg, Gossip):
                out.extend(s.msg.updates)
        return out

    def queued(self) -> list[Any]:
        """The updates still waiting in the broadcast queue (takes them out)."""
        return self.m.broadcasts.take(10_000, 1)

    def event_time(self, event: str, node: str) -> float:
        times = [t for t, e, n in self.events if (e, n) == (event, node)]
        assert times, f"no {event} event for {node}: {self.events}"
        return times[0]

    def state(self, node: str) -> str | None:
        return self.m.state_of(node)


# --- probing (SWIM §3.1, §4.3; memberlist state.go probeNode) ------------------------------------


def test_probe_tick_pings_one_member_naming_it_as_target() -> None:
    h = Harness().start()
    first = h.until(SwimPing)
    assert first.t < h.config.probe_interval  # the first tick has a random phase within one interval
    assert first.dst in PEERS
    assert first.msg.target == first.dst  # so a different process at that address does not answer
    assert len(h.sent(SwimPing)) == 1


def test_every_member_is_probed_once_per_round() -> None:
    # SWIM §4.3: round-robin probe target selection over a shuffled list bounds the time to
    # first detection; memberlist resetNodes reshuffles at the end of every round.
    h = Harness(respond=True).start()
    first = h.until(SwimPing)
    h.advance(len(PEERS) * h.config.probe_interval - 0.5)
    rounds = [s.dst for s in h.sent(SwimPing)]
    assert len(rounds) == len(PEERS)
    assert sorted(rounds) == sorted(PEERS), rounds
    assert [s.t - first.t for s in h.sent(SwimPing)] == pytest.approx([0.0, 1.0, 2.0, 3.0])


def test_ack_before_the_probe_timeout_sends_no_ping_req_and_lowers_awareness() -> None:
    # Lifeguard §IV-A (memberlist probeNode: "any return statement means the probe succeeded
    # which will improve our health")
    h = Harness().start()
    h.m.awareness.apply(2)
    ping = h.until(SwimPing)
    h.advance(0.1)
    h.handle(ping.dst, SwimAck(seq=ping.msg.seq, gossip=()))
    assert h.m.awareness.score == 1
    h.advance(h.m.awareness.scale(h.config.probe_interval))
    assert h.sent(PingReq) == []
    assert h.state(ping.dst) == ALIVE


def test_an_ack_with_an_unknown_seq_is_no_success() -> None:
    h = Harness().start()
    ping = h.until(SwimPing)
    h.handle(ping.dst, SwimAck(seq=ping.msg.seq + 1, gossip=()))
    h.advance(h.config.probe_timeout)
    assert [s.msg.target for s in h.sent(PingReq)] == [ping.dst] * 3


def test_missing_ack_sends_ping_req_to_indirect_checks_distinct_other_members() -> None:
    # SWIM §3.1: after the timeout, Mi picks k members at random and sends each a ping-req(Mj);
    # memberlist probeNode: never self, never the target.
    peers = ("n2", "n3", "n4", "n5", "n6")
    h = Harness(peers).start()
    ping = h.until(SwimPing)
    h.advance_to(ping.t + h.config.probe_timeout - 0.001)
    assert h.sent(PingReq) == []
    h.advance(0.001)
    reqs = h.sent(PingReq)
    assert [s.t for s in reqs] == pytest.approx([ping.t + h.config.probe_timeout] * 3)
    helpers = [s.dst for s in reqs]
    assert len(set(helpers)) == h.config.indirect_checks == 3
    assert set(helpers) <= set(peers) - {ping.dst}
    assert all(s.msg == PingReq(seq=ping.msg.seq, target=ping.dst) for s in reqs)


@pytest.mark.parametrize("seed", range(5))
def test_suspect_members_are_not_asked_to_probe(seed: int) -> None:
    # memberlist probeNode: kRandomNodes filters "n.State != StateAlive"
    h = Harness(("n2", "n3", "n4"), seed=seed).start()
    ping = h.until(SwimPing)
    others = sorted({"n2", "n3", "n4"} - {ping.dst})
    h.m.apply(Suspect(node=others[0], incarnation=0, source="n9"))
    h.advance(h.config.probe_timeout)
    assert [s.dst for s in h.sent(PingReq)] == [others[1]]


def test_ping_req_goes_to_fewer_helpers_when_fewer_are_alive() -> None:
    h = Harness(("n2", "n3")).start()
    ping = h.until(SwimPing)
    h.advance(h.config.probe_timeout)
    assert [s.dst for s in h.sent(PingReq)] == [p for p in ("n2", "n3") if p != ping.dst]


def test_no_ack_by_the_next_tick_suspects_the_member_and_gossips_it() -> None:
    # SWIM §4.2: instead of declaring Mj failed, Mi marks it suspected and disseminates
    # {Suspect Mj: Mi suspects Mj}
    h = Harness().start()
    ping = h.until(SwimPing)
    target = ping.dst
    h.advance(h.config.probe_interval - 0.01)
    assert h.state(target) == ALIVE
    nxt = h.until(SwimPing)
    assert nxt.t == pytest.approx(ping.t + h.m.config.probe_interval)
    assert h.state(target) == SUSPECT
    assert h.event_time("suspect", target) == pytest.approx(nxt.t)
    # the Suspect rides on the very next ping (piggybacking, SWIM §4.1)
    assert Suspect(node=target, incarnation=0, source="n1") in nxt.msg.gossip


@pytest.mark.parametrize(("nacks", "raised_by"), [(0, 3), (1, 2), (2, 1), (3, 0)])
def test_missing_nacks_raise_awareness_by_the_number_missing(nacks: int, raised_by: int) -> None:
    # Lifeguard §IV-A; memberlist probeNode: awarenessDelta += expectedNacks - nackCount
    h = Harness().start()
    ping = h.until(SwimPing)
    h.advance(h.config.probe_timeout)
    helpers = [s.dst for s in h.sent(PingReq)]
    assert len(helpers) == 3
    for helper in helpers[:nacks]:
        h.handle(helper, Nack(seq=ping.msg.seq))
    h.until(SwimPing)  # the next tick concludes the probe
    assert h.m.awareness.score == raised_by
    assert h.state(ping.dst) == SUSPECT


def test_a_failed_probe_without_helpers_raises_awareness_by_one() -> None:
    # memberlist probeNode: "If we don't have peers who will send nacks then we penalize for any
    # failed probe"
    h = Harness(("n2",)).start()
    h.until(SwimPing)
    h.advance(h.config.probe_timeout)
    assert h.sent(PingReq) == []
    h.until(SwimPing)
    assert h.m.awareness.score == 1


def test_without_lifeguard_failed_probes_leave_awareness_alone() -> None:
    h = Harness(lifeguard=False).start()
    h.until(SwimPing)
    h.until(SwimPing)
    assert h.m.awareness.score == 0


def test_a_relayed_ack_counts_as_success() -> None:
    # SWIM §3.1: a helper that gets the target's ack forwards it to Mi, with Mi's own seq
    h = Harness().start()
    h.m.awareness.apply(1)
    ping = h.until(SwimPing)
    req = h.until(PingReq)
    h.handle(req.dst, SwimAck(seq=ping.msg.seq, gossip=()))
    h.until(SwimPing)
    assert h.state(ping.dst) == ALIVE
    assert h.m.awareness.score == 0


@pytest.mark.parametrize("lifeguard", [True, False])
def test_lifeguard_scales_probe_interval_and_timeout_by_awareness(lifeguard: bool) -> None:
    # Lifeguard §IV-A (LHA-Probe): with score s, wait (s+1) times as long. memberlist scales only
    # the interval ("we don't scale this timeout based on awareness"); we scale both.
    h = Harness(lifeguard=lifeguard).start()
    h.m.awareness.apply(2)
    ping = h.until(SwimPing)
    req = h.until(PingReq)
    factor = 3 if lifeguard else 1
    assert req.t - ping.t == pytest.approx(factor * h.config.probe_timeout)
    nxt = h.until(SwimPing)
    assert nxt.t - ping.t == pytest.approx(factor * h.config.probe_interval)


# --- serving probes (SWIM §3.1; memberlist net.go handlePing, handleIndirectPing) ------------


def test_a_ping_naming_us_is_acked_with_its_seq_and_piggybacked_gossip() -> None:
    h = Harness()
    h.m.set_slots("0-9", 1)
    h.handle("n2", SwimPing(seq=42, target="n1", gossip=(alive("n7"),)))
    assert [(s.dst, s.msg.seq) for s in h.sent(SwimAck)] == [("n2", 42)]
    assert alive("n1", 1, "0-9", 1) in h.sent(SwimAck)[0].msg.gossip
    assert h.state("n7") == ALIVE  # the ping's own gossip was applied


def test_a_ping_whose_target_is_not_us_is_not_answered() -> None:
    h = Harness()
    h.handle("n2", SwimPing(seq=42, target="n9", gossip=(alive("n7"),)))
    assert h.log == []
    assert h.state("n7") is None
    assert h.m.counters["misdirected_pings"] == 1


def test_serving_a_ping_req_pings_the_target_and_relays_its_ack_with_the_requesters_seq() -> None:
    h = Harness()
    h.handle("n2", PingReq(seq=77, target="n3"))
    [ping] = h.sent(SwimPing)
    assert ping.dst == "n3"
    assert ping.msg.target == "n3"
    assert ping.msg.seq != 77  # our own seq, so the target's ack is ours to match
    h.advance(0.1)
    h.handle("n3", SwimAck(seq=ping.msg.seq, gossip=()))
    assert [(s.dst, s.msg) for s in h.sent(SwimAck)] == [("n2", SwimAck(seq=77, gossip=()))]
    h.advance(h.config.probe_interval)
    assert h.sent(Nack) == []  # the ack came in time


def test_a_ping_req_naming_us_is_acked_directly() -> None:
    h = Harness()
    h.handle("n2", PingReq(seq=77, target="n1"))
    assert [(s.dst, s.msg) for s in h.log] == [("n2", SwimAck(seq=77, gossip=()))]


def test_serving_a_ping_req_without_an_ack_sends_a_nack_after_80_percent_of_the_probe_timeout() -> None:
    # Lifeguard §IV-A: the helper tells the asker it heard nothing, so the asker can tell a dead
    # target from its own trouble. memberlist nacks after the full ProbeTimeout; we nack at 80%
    # so that the Nack reaches the asker before its probe is concluded.
    h = Harness()
    h.handle("n2", PingReq(seq=77, target="n3"))
    h.advance(0.8 * h.config.probe_timeout - 0.001)
    assert h.sent(Nack) == []
    h.advance(0.001)
    [nack] = h.sent(Nack)
    assert (nack.dst, nack.msg) == ("n2", Nack(seq=77))
    assert nack.t == pytest.approx(0.8 * h.config.probe_timeout)
    # a late ack is not relayed any more
    h.handle("n3", SwimAck(seq=h.sent(SwimPing)[0].msg.seq, gossip=()))
    assert h.sent(SwimAck) == []


def test_serving_a_ping_req_without_lifeguard_sends_no_nack() -> None:
    h = Harness(lifeguard=False)
    h.handle("n2", PingReq(seq=77, target="n3"))
    h.advance(10.0)
    assert h.sent(Nack) == []


def test_a_nack_for_an_unknown_seq_is_ignored() -> None:
    h = Harness().start()
    h.handle("n2", Nack(seq=12345))
    h.handle("n2", SwimAck(seq=12345, gossip=()))
    assert h.sent(SwimAck) == []


# --- suspicion (SWIM §4.2; Lifeguard §IV-B; memberlist suspicion.go) ---------------------------


def suspected_at(h: Harness, node: str = "n2", source: str = "n3") -> float:
    h.start()
    h.advance(0.5)
    h.handle(source, Gossip(updates=(Suspect(node=node, incarnation=0, source=source),)))
    assert h.state(node) == SUSPECT
    return h.rt.now()


def test_a_suspicion_without_confirmations_lasts_the_maximum_timeout() -> None:
    # Lifeguard §IV-B: the timer starts at max = suspicion_max_timeout_mult * min
    h = Harness(respond=True)
    t0 = suspected_at(h)
    h.advance(MAX_T - 0.05)
    assert h.state("n2") == SUSPECT
    h.advance(0.1)
    assert h.state("n2") == DEAD
    assert h.event_time("dead", "n2") == pytest.approx(t0 + MAX_T)
    # SWIM §4.2: when the timeout expires, Mj is declared failed and {Confirm Mj} disseminated
    assert Dead(node="n2", incarnation=0, source="n1") in h.updates_sent() + h.queued()


def test_an_independent_confirmation_shortens_the_suspicion() -> None:
    # Lifeguard §IV-B: each independent suspicion brings the timeout down log(c+1)/log(k+1) of
    # the way from max to min
    h = Harness(respond=True)
    t0 = suspected_at(h)
    h.advance(2.0)
    h.handle("n4", Gossip(updates=(Suspect(node="n2", incarnation=0, source="n4"),)))
    h.advance(MAX_T)
    assert after_confirmations(1) == pytest.approx(11.381)
    assert h.event_time("dead", "n2") == pytest.approx(t0 + after_confirmations(1))
    # the confirmation is gossiped on (memberlist suspectNode: "If the info is new to us we
    # will go ahead and re-gossip it")
    assert Suspect(node="n2", incarnation=0, source="n4") in h.updates_sent()


def test_k_confirmations_bring_the_suspicion_down_to_the_minimum() -> None:
    h = Harness(respond=True)
    t0 = suspected_at(h)
    for source in ("n4", "n5"):
        h.advance(1.0)
        h.handle(source, Gossip(updates=(Suspect(node="n2", incarnation=0, source=source),)))
    h.advance(MAX_T)
    assert after_confirmations(2) == MIN_T
    assert h.event_time("dead", "n2") == pytest.approx(t0 + MIN_T)
    assert h.m.counters["confirmations"] == 2


def test_a_confirmation_past_the_new_deadline_declares_dead_at_once() -> None:
    h = Harness(respond=True)
    t0 = suspected_at(h)
    h.advance(12.0)  # past the one-confirmation deadline (11.381 s) already
    h.handle("n4", Gossip(updates=(Suspect(node="n2", incarnation=0, source="n4"),)))
    h.advance(0.01)
    assert h.event_time("dead", "n2") == pytest.approx(t0 + 12.0)


def test_a_repeated_confirmation_from_the_same_source_does_not_shorten_the_suspicion() -> None:
    # memberlist suspicion.go Confirm: "Only allow one confirmation from each possible peer"
    h = Harness(respond=True)
    t0 = suspected_at(h, source="n3")
    for _ in range(3):
        h.advance(1.0)
        h.handle("n3", Gossip(updates=(Suspect(node="n2", incarnation=0, source="n3"),)))
    h.advance(MAX_T)
    assert h.event_time("dead", "n2") == pytest.approx(t0 + MAX_T)
    assert h.m.counters.get("confirmations", 0) == 0


def test_our_own_suspicion_is_shortened_by_the_first_confirmation_from_another_member() -> None:
    # memberlist newSuspicion: the suspecter is excluded from confirmations, so the first other
    # member that suspects too counts as confirmation number one (n = 1)
    h = Harness(respond=True)
    h.down.add("n2")
    h.start()
    h.advance(6.0)  # our probes reach n2 within one round: it fails
    ts = h.event_time("suspect", "n2")
    assert Suspect(node="n2", incarnation=0, source="n1") in h.updates_sent() + h.queued()
    h.handle("n3", Gossip(updates=(Suspect(node="n2", incarnation=0, source="n3"),)))
    h.advance(MAX_T)
    assert h.event_time("dead", "n2") == pytest.approx(ts + after_confirmations(1))


def test_our_failed_probe_of_a_suspect_confirms_the_suspicion_and_gossips_it() -> None:
    # memberlist suspectNode: "This allows for multiple independent confirmations to flow even
    # when a node probes a node that's already suspect" (our probe failing is our confirmation)
    h = Harness(respond=True)
    h.down.add("n2")
    t0 = suspected_at(h, source="n3")
    h.advance(6.0)  # our probe of n2 fails within one round
    assert h.m.counters["confirmations"] == 1
    assert Suspect(node="n2", incarnation=0, source="n1") in h.updates_sent() + h.queued()
    h.advance(MAX_T)
    assert h.event_time("dead", "n2") == pytest.approx(t0 + after_confirmations(1))


def test_without_lifeguard_a_suspicion_lasts_the_fixed_minimum() -> None:
    # SWIM §4.2: a fixed, prespecified time-out
    h = Harness(respond=True, lifeguard=False)
    t0 = suspected_at(h)
    h.advance(1.0)
    h.handle("n4", Gossip(updates=(Suspect(node="n2", incarnation=0, source="n4"),)))
    h.advance(MAX_T)
    assert h.event_time("dead", "n2") == pytest.approx(t0 + MIN_T)


def test_a_refuting_alive_with_a_higher_incarnation_cancels_the_suspicion() -> None:
    # SWIM §4.2: "{Alive Ml, inc=i} overrides {Suspect Ml, inc=j}, i > j"
    h = Harness(respond=True)
    suspected_at(h)
    h.advance(1.0)
    h.handle("n2", Gossip(updates=(alive("n2", 1),)))
    assert h.state("n2") == ALIVE
    h.advance(2 * MAX_T)
    assert h.state("n2") == ALIVE
    assert h.m.members["n2"].incarnation == 1
    assert alive("n2", 1) in h.updates_sent() + h.queued()  # the refutation is passed on


def test_an_alive_at_the_suspected_incarnation_does_not_cancel_the_suspicion() -> None:
    h = Harness(respond=True)
    t0 = suspected_at(h)
    h.handle("n2", Gossip(updates=(alive("n2", 0),)))
    h.advance(MAX_T + 0.1)
    assert h.event_time("dead", "n2") == pytest.approx(t0 + MAX_T)


def test_a_suspect_with_a_higher_incarnation_restarts_the_suspicion() -> None:
    # SWIM §4.2: {Suspect Ml, inc=i} overrides {Suspect Ml, inc=j}, i > j. (memberlist
    # suspectNode only confirms the running timer here and keeps the old incarnation.)
    h = Harness(respond=True)
    suspected_at(h)
    h.advance(10.0)
    h.handle("n4", Gossip(updates=(Suspect(node="n2", incarnation=1, source="n4"),)))
    t1 = h.rt.now()
    h.advance(2 * MAX_T)
    assert h.event_time("dead", "n2") == pytest.approx(t1 + MAX_T)
    assert h.m.members["n2"].incarnation == 1


def test_a_suspect_about_an_unknown_member_is_ignored() -> None:
    h = Harness()
    h.m.apply(Suspect(node="n9", incarnation=0, source="n2"))
    h.m.apply(Dead(node="n9", incarnation=0, source="n2"))
    assert h.state("n9") is None
    assert h.queued() == []


# --- refutation and incarnations (SWIM §4.2) ------------------------------------------------


@pytest.mark.parametrize("rumour_inc", [0, 3])
def test_hearing_itself_suspected_refutes_with_the_next_incarnation(rumour_inc: int) -> None:
    # SWIM §4.2: a member that hears itself suspected raises its incarnation and disseminates
    # {Alive Mj, inc}; Lifeguard §IV-A and memberlist refute(): refuting raises awareness.
    h = Harness()
    h.m.set_slots("0-9", 2)  # incarnation 1
    h.queued()
    h.m.apply(Suspect(node="n1", incarnation=max(rumour_inc, 1), source="n2"))
    assert h.m.me.incarnation == max(rumour_inc, 1) + 1
    assert h.state("n1") == ALIVE
    assert h.queued() == [alive("n1", max(rumour_inc, 1) + 1, "0-9", 2)]
    assert h.m.awareness.score == 1
    assert h.rt.storage.get(INCARNATION_KEY) == str(max(rumour_inc, 1) + 1).encode()


def test_hearing_itself_dead_refutes_with_the_next_incarnation() -> None:
    h = Harness()
    h.m.apply(Dead(node="n1", incarnation=4, source="n2"))
    assert h.m.me.incarnation == 5
    assert h.state("n1") == ALIVE
    assert h.queued() == [alive("n1", 5)]
    assert ("refute", "n1") in [(e, n) for _, e, n in h.events]


def test_an_old_rumour_about_itself_is_not_refuted() -> None:
    h = Harness()
    h.m.apply(Suspect(node="n1", incarnation=2, source="n2"))  # incarnation 3 now
    h.queued()
    h.m.apply(Suspect(node="n1", incarnation=2, source="n4"))
    h.m.apply(Dead(node="n1", incarnation=1, source="n4"))
    assert h.m.me.incarnation == 3
    assert h.queued() == []


def test_without_lifeguard_refuting_leaves_awareness_alone() -> None:
    h = Harness(lifeguard=False)
    h.m.apply(Suspect(node="n1", incarnation=0, source="n2"))
    assert h.m.me.incarnation == 1
    assert h.m.awareness.score == 0


def test_an_alive_about_itself_at_a_higher_incarnation_is_refuted() -> None:
    # we restarted without our storage and the cluster still holds our old, higher incarnation
    h = Harness()
    h.m.apply(alive("n1", 7, slots="stale"))
    assert h.m.me.incarnation == 8
    assert h.queued() == [alive("n1", 8)]


def test_incarnation_is_persisted_and_a_restart_starts_one_higher() -> None:
    storage = MemoryStorage()
    first = Harness(storage=storage)
    assert first.m.me.incarnation == 0
    assert storage.get(INCARNATION_KEY) == b"0"
    first.m.apply(Suspect(node="n1", incarnation=3, source="n2"))
    assert storage.get(INCARNATION_KEY) == b"4"
    again = Harness(storage=storage)
    assert again.m.me.incarnation == 5
    assert storage.get(INCARNATION_KEY) == b"5"
    again.start()
    assert alive("n1", 5) in again.queued()  # announced at start


# --- dead, left, reaping, buddy system --------------------------------------------------------


def test_dead_from_the_member_itself_means_it_left() -> None:
    # memberlist deadNode: "If the dead message was send by the node itself, mark it is left"
    h = Harness()
    h.m.apply(Dead(node="n2", incarnation=0, source="n2"))
    h.m.apply(Dead(node="n3", incarnation=0, source="n4"))
    assert (h.state("n2"), h.state("n3")) == (LEFT, DEAD)
    assert h.m.num_live() == 3


def test_dead_and_left_members_are_not_probed() -> None:
    h = Harness(respond=True)
    h.m.apply(Dead(node="n2", incarnation=0, source="n4"))
    h.m.apply(Dead(node="n3", incarnation=0, source="n3"))
    h.start()
    h.advance(10.0)
    assert {s.dst for s in h.sent(SwimPing)} == {"n4", "n5"}
    assert len(h.sent(SwimPing)) == 10


def test_dead_members_are_reaped_after_reap_time() -> None:
    h = Harness(respond=True, reap_time=10.0)
    h.start()
    h.m.apply(Dead(node="n2", incarnation=0, source="n4"))
    h.m.apply(Dead(node="n3", incarnation=0, source="n3"))
    h.advance(9.5)
    assert {"n2", "n3"} <= set(h.m.members)
    h.advance(5.0)  # a probe round ends after reap_time
    assert "n2" not in h.m.members
    assert "n3" not in h.m.members
    assert {n for _, e, n in h.events if e == "reap"} == {"n2", "n3"}


def test_the_ping_to_a_suspect_carries_the_suspicion_first() -> None:
    # Lifeguard §IV-C (buddy system); memberlist probeNode: "If this node looks like it's
    # suspect or dead, also tack on a suspect message so that it has a chance to refute"
    h = Harness(respond=True)
    suspected_at(h)
    ping = h.until(SwimPing, dst="n2", limit=8.5)  # within two rounds
    assert ping.msg.gossip[0] == Suspect(node="n2", incarnation=0, source="n1")


def test_without_lifeguard_the_ping_to_a_suspect_carries_no_suspicion_of_ours() -> None:
    h = Harness(respond=True, lifeguard=False, suspicion_mult=10)  # so n2 stays suspect 10 s
    suspected_at(h)
    ping = h.until(SwimPing, dst="n2", limit=8.5)  # within two rounds
    assert Suspect(node="n2", incarnation=0, source="n1") not in ping.msg.gossip


# --- dissemination (SWIM §4.1; memberlist state.go gossip) -----------------------------------


def test_each_update_is_sent_at_most_retransmit_limit_times() -> None:
    # SWIM §4.1 / memberlist: retransmit_mult * ceil(log10(N+1)) = 4 * ceil(log10(7)) = 4 here
    h = Harness(respond=True, gossip_nodes=3)
    h.start()
    h.handle("n2", Gossip(updates=(alive("n7"),)))
    h.advance(20.0)
    assert h.updates_sent().count(alive("n7")) == 4


def test_gossip_rounds_send_queued_updates_to_gossip_nodes_distinct_members() -> None:
    h = Harness(respond=True, gossip_nodes=3)
    h.start()
    first = h.until(Gossip)
    same_round = [s for s in h.sent(Gossip) if s.t == first.t]
    assert len(same_round) == 3
    assert len({s.dst for s in same_round}) == 3
    assert {s.dst for s in same_round} <= set(PEERS)
    assert all(alive("n1") in s.msg.updates for s in same_round)


def test_gossip_reaches_the_recently_dead_but_not_the_long_dead_or_left() -> None:
    # memberlist gossip(): alive, suspect, or dead for less than GossipToTheDeadTime, so a
    # member declared dead by mistake hears it and refutes
    h = Harness(("n2", "n3"), gossip_nodes=3, gossip_to_the_dead_time=5.0)
    h.m.apply(Dead(node="n2", incarnation=0, source="n4"))
    h.m.apply(Dead(node="n3", incarnation=0, source="n3"))
    h.start()
    h.advance(1.0)
    assert {s.dst for s in h.sent(Gossip)} == {"n2"}
    h.advance(5.0)
    since = h.rt.now()
    h.m.set_slots("0-9", 1)  # something new to say
    h.advance(1.0)
    assert h.sent(Gossip, since=since) == []


# --- push-pull (memberlist state.go pushPull, mergeState; net.go mergeRemoteState) ------------


def test_a_push_pull_is_answered_with_our_state_from_before_the_merge() -> None:
    # the sender sees its own stale entry in our reply, and so refutes it
    h = Harness()
    h.m.apply(Suspect(node="n2", incarnation=0, source="n3"))
    remote = (member_state("n2", ALIVE, 1), member_state("n7", ALIVE, 0))
    h.handle("n2", PushPull(join=False, reply=False, members=remote))
    [reply] = h.sent(PushPull)
    assert reply.dst == "n2"
    assert (reply.msg.join, reply.msg.reply) == (False, True)
    got = {s.node: (s.state, s.incarnation) for s in reply.msg.members}
    assert got == {"n1": (ALIVE, 0), "n2": (SUSPECT, 0), "n3": (ALIVE, 0), "n4": (ALIVE, 0),
                   "n5": (ALIVE, 0)}
    # ... and then merged
    assert (h.state("n2"), h.m.members["n2"].incarnation) == (ALIVE, 1)
    assert h.state("n7") == ALIVE


def test_a_push_pull_reply_is_merged_and_not_answered() -> None:
    h = Harness()
    h.handle("n2", PushPull(join=False, reply=True, members=(member_state("n7", ALIVE, 2),)))
    assert h.log == []
    assert h.m.members["n7"].incarnation == 2


def test_a_remote_dead_is_merged_as_suspect_and_a_remote_left_as_left() -> None:
    # memberlist state.go mergeState: "If the remote node believes a node is dead, we prefer to
    # suspect that node instead of declaring it dead instantly"
    h = Harness()
    remote = (member_state("n2", DEAD), member_state("n3", LEFT), member_state("n4", SUSPECT))
    h.handle("n5", PushPull(join=False, reply=True, members=remote))
    assert (h.state("n2"), h.state("n3"), h.state("n4")) == (SUSPECT, LEFT, SUSPECT)
    assert Suspect(node="n2", incarnation=0, source="n1") in h.queued()


def test_a_remote_view_of_us_as_dead_or_suspect_is_refuted() -> None:
    h = Harness()
    h.handle("n2", PushPull(join=False, reply=True, members=(member_state("n1", DEAD, 2),)))
    assert h.m.me.incarnation == 3
    assert alive("n1", 3) in h.queued()


def test_the_push_pull_round_exchanges_full_state_with_one_member() -> None:
    h = Harness(respond=True, push_pull_interval=30.0)
    h.start()
    first = h.until(PushPull, limit=30.0)
    assert first.dst in PEERS
    assert (first.msg.join, first.msg.reply) == (False, False)
    assert {s.node for s in first.msg.members} == {"n1", *PEERS}
    second = h.until(PushPull, limit=31.0)
    assert second.t - first.t == pytest.approx(30.0)  # push_pull_scale(30, 5) == 30


def test_the_push_pull_partner_may_be_a_dead_member_not_yet_reaped() -> None:
    # Serf-style reconnect, so two sides of a healed partition re-merge (module doc)
    h = Harness(("n2",), push_pull_interval=30.0)
    h.m.apply(Dead(node="n2", incarnation=0, source="n3"))
    h.start()
    assert h.until(PushPull, limit=30.0).dst == "n2"


# --- joining (memberlist Join) -------------------------------------------------------------


SEEDS = ("@s1:1", "@s2:2", "@s3:3")


def join_attempts(h: Harness) -> list[Sent]:
    return [s for s in h.sent(PushPull) if s.msg.join]


def test_joining_tries_the_seeds_one_at_a_time() -> None:
    h = Harness(())
    h.start(SEEDS)
    assert not h.m.joined
    h.advance(2.5)
    attempts = join_attempts(h)
    assert [s.t for s in attempts] == pytest.approx([0.0, 1.0, 2.0])  # join_timeout apart
    assert sorted(s.dst for s in attempts) == sorted(SEEDS)
    assert all(not s.msg.reply and {m.node for m in s.msg.members} == {"n1"} for s in attempts)


def test_joining_tries_the_seeds_in_a_random_order() -> None:
    orders = set()
    for seed in range(20):
        h = Harness((), seed=seed)
        h.start(SEEDS)
        h.advance(2.5)
        orders.add(tuple(s.dst for s in join_attempts(h)))
    assert len(orders) > 1


def test_joining_backs_off_after_every_seed_failed() -> None:
    # doubling from join_backoff_min, bounded by join_backoff_max, each with jitter in [0.5, 1]
    h = Harness(())
    h.start(("@s1:1",))
    h.advance(60.0)
    times = [s.t for s in join_attempts(h)]
    assert len(times) >= 8
    c = h.config
    for r, (a, b) in enumerate(itertools.pairwise(times)):
        bound = min(c.join_backoff_max, c.join_backoff_min * 2**r)
        pause = b - a - c.join_timeout
        assert 0.5 * bound - 1e-9 <= pause <= bound + 1e-9, (r, pause, bound)
    assert h.m.joined is False


def test_a_push_pull_reply_marks_us_joined_and_ends_the_attempts() -> None:
    h = Harness(())
    h.start(SEEDS)
    first = join_attempts(h)[0]
    h.advance(0.3)
    h.handle(first.dst, PushPull(join=False, reply=True, members=(member_state("n7", ALIVE, 0),)))
    assert h.m.joined is True
    assert h.state("n7") == ALIVE
    h.advance(30.0)
    assert len(join_attempts(h)) == 1


def test_seeds_naming_ourselves_are_skipped() -> None:
    h = Harness(())
    h.start(("n1", "@p-n1", "@s2:2"))
    h.advance(0.5)
    assert [s.dst for s in join_attempts(h)] == ["@s2:2"]


@pytest.mark.parametrize("seeds", [(), ("n1", "@p-n1")])
def test_without_other_seeds_we_are_joined_at_once(seeds: tuple[str, ...]) -> None:
    h = Harness(())
    h.start(seeds)
    h.advance(5.0)
    assert h.m.joined is True
    assert join_attempts(h) == []


# --- slots, leaving, stopping ----------------------------------------------------------------


def test_set_slots_raises_the_incarnation_and_queues_an_alive_with_the_claim() -> None:
    h = Harness()
    h.m.set_slots("0-5460", 3)
    assert h.m.me.incarnation == 1
    assert h.rt.storage.get(INCARNATION_KEY) == b"1"
    assert h.queued() == [alive("n1", 1, "0-5460", 3)]
    assert ("update", "n1") in [(e, n) for _, e, n in h.events]


def test_an_alive_with_a_new_claim_updates_the_member_and_tells_listeners() -> None:
    h = Harness()
    h.m.apply(alive("n2", 1, "0-99", 4))
    assert (h.m.members["n2"].slots, h.m.members["n2"].epoch) == ("0-99", 4)
    assert ("update", "n2") in [(e, n) for _, e, n in h.events]


def test_leave_queues_dead_about_ourselves_and_sends_it_to_gossip_targets() -> None:
    # memberlist Leave: a dead message about ourselves, from ourselves (so: left)
    h = Harness(gossip_nodes=3)
    h.start()
    h.m.leave()
    bye = Dead(node="n1", incarnation=1, source="n1")
    sent = h.sent(Gossip)
    assert {s.dst for s in sent} == set(PEERS)  # up to 2 * gossip_nodes = 6 targets; 4 exist
    assert all(s.msg == Gossip(updates=(bye,)) for s in sent)
    assert bye in h.queued()
    assert h.state("n1") == LEFT
    assert h.m.num_live() == 4
    # a leaving node does not refute what it hears about itself
    h.m.apply(Suspect(node="n1", incarnation=5, source="n2"))
    h.m.apply(Dead(node="n1", incarnation=5, source="n2"))
    h.m.apply(alive("n1", 9))
    assert h.m.me.incarnation == 1
    assert h.queued() == []


def test_stop_cancels_every_timer() -> None:
    h = Harness(respond=True, gossip_nodes=3, push_pull_interval=30.0)
    h.start(SEEDS)
    h.handle("n3", Gossip(updates=(Suspect(node="n2", incarnation=0, source="n3"),)))
    h.handle("n3", Gossip(updates=(Suspect(node="n2", incarnation=1, source="n3"),)))  # restarted
    h.handle("n4", PingReq(seq=1, target="n5"))
    h.advance(0.7)
    h.m.stop()
    assert h.rt.pending_timers() == 0
    before = len(h.log)
    h.advance(60.0)
    assert len(h.log) == before


# --- peer input ------------------------------------------------------------------------------


def test_odd_peer_input_is_ignored_without_a_crash() -> None:
    # STYLE: a node never crashes on peer input
    h = Harness().start()
    h.handle("n2", object())
    h.handle("n2", Gossip(updates=("junk",)))  # type: ignore[arg-type]
    h.handle("n2", PushPull(join=False, reply=True, members=(member_state("n3", "zombie", 9),)))
    h.handle("n2", SwimAck(seq=-1, gossip=()))
    h.handle("n2", Nack(seq=-1))
    assert h.log == []
    assert h.state("n3") == ALIVE


# --- listeners and determinism -----------------------------------------------------------------


def test_listeners_hear_join_suspect_dead_left_and_refute() -> None:
    h = Harness()
    h.m.apply(alive("n7"))
    h.m.apply(Suspect(node="n2", incarnation=0, source="n3"))
    h.m.apply(Dead(node="n2", incarnation=0, source="n3"))
    h.m.apply(Dead(node="n3", incarnation=0, source="n3"))
    h.m.apply(Suspect(node="n1", incarnation=0, source="n4"))
    h.m.apply(alive("n3", 1))
    events = [(e, n) for _, e, n in h.events]
    start = events.index(("join", "n7"))
    assert events[start:] == [
        ("join", "n7"),
        ("suspect", "n2"),
        ("dead", "n2"),
        ("left", "n3"),
        ("refute", "n1"),
        ("alive", "n3"),  # back from the dead
    ]
    assert events[:start] == [("update", "n1"), ("join", "n2"), ("join", "n3"), ("join", "n4"),
                              ("join", "n5")]


def run_scenario(seed: int) -> list[tuple[float, str, str]]:
    h = Harness(seed=seed, respond=True, gossip_nodes=3, push_pull_interval=10.0)
    h.down.add("n3")
    h.start()
    h.advance(40.0)
    return [(s.t, s.dst, repr(s.msg)) for s in h.log]


def test_the_same_seed_gives_the_same_trace() -> None:
    # madsim-style determinism self-check: all randomness comes from the Runtime
    assert run_scenario(7) == run_scenario(7)
    assert run_scenario(7) != run_scenario(8)


def test_a_silent_member_is_declared_dead_within_the_expected_time() -> None:
    # the whole loop: probe, indirect probe (the helpers nack), suspicion, and, since only we
    # suspect and our later failed probes are no confirmations of our own suspicion, dead after
    # the maximum timeout
    h = Harness(respond=True)
    h.down.add("n3")
    h.start()
    h.advance(60.0)
    ts = h.event_time("suspect", "n3")
    assert ts < len(PEERS) * h.config.probe_interval + 1.0  # SWIM §4.3: within one round
    assert h.event_time("dead", "n3") - ts == pytest.approx(MAX_T)
    assert h.m.awareness.score == 0  # helpers nacked: not our fault


# --- the message tables and the named states ---------------------------------------------------


def test_handles_is_derived_from_the_message_table() -> None:
    assert Membership.HANDLES == frozenset(Membership.HANDLERS)
    assert Membership.HANDLES == {SwimPing, SwimAck, PingReq, Nack, Gossip, PushPull}
    assert set(Membership.UPDATE_HANDLERS) == {Alive, Suspect, Dead}
    m = Harness().m
    # every name in the tables is a method of Membership, bound per instance
    assert m._dispatch.handles == Membership.HANDLES
    assert frozenset(m._update_fns) == frozenset(Membership.UPDATE_HANDLERS)
    assert all(fn == getattr(m, Membership.UPDATE_HANDLERS[cls]) for cls, fn in m._update_fns.items())


@pytest.mark.parametrize(
    "msg",
    [MemberState(node="n2", incarnation=0, state="alive", addr="a", peer_addr="p", slots="", epoch=0),
     "junk", None, 42],
    ids=["member-state", "str", "none", "int"],
)
def test_an_unknown_message_kind_is_counted_malformed_and_dropped(msg: Any) -> None:
    h = Harness().start()
    before = list(h.log)
    h.handle("n2", msg)
    assert h.m.counters.get("malformed") == 1
    assert h.log == before and h.state("n2") == ALIVE


def test_an_unknown_update_kind_in_gossip_is_counted_malformed_and_the_rest_applied() -> None:
    h = Harness().start()
    h.handle("n3", Gossip(updates=(Nack(seq=1), Suspect(node="n2", incarnation=0, source="n3"))))  # type: ignore[arg-type]
    assert h.m.counters.get("malformed") == 1
    assert h.state("n2") == SUSPECT
    h.m.apply(SwimAck(seq=1, gossip=()))  # type: ignore[arg-type]
    assert h.m.counters.get("malformed") == 2


def test_states_and_listener_events_are_the_named_enums() -> None:
    h = Harness().start()
    assert {e for _, e, _n in h.events} == {MemberEvent.UPDATE, MemberEvent.JOIN}  # the static view
    h.events.clear()
    h.handle("n3", Gossip(updates=(Suspect(node="n2", incarnation=0, source="n3"),)))
    h.handle("n3", Gossip(updates=(Dead(node="n2", incarnation=0, source="n3"),)))
    h.handle("n3", Gossip(updates=(alive("n6"),)))
    assert h.m.state_of("n2") is State.DEAD and h.m.members["n6"].state is State.ALIVE
    events = [(e, n) for _, e, n in h.events]
    assert events == [(MemberEvent.SUSPECT, "n2"), (MemberEvent.DEAD, "n2"), (MemberEvent.JOIN, "n6")]
    assert all(type(e) is MemberEvent for e, _ in events)
    assert (ALIVE, SUSPECT, DEAD, LEFT) == (State.ALIVE, State.SUSPECT, State.DEAD, State.LEFT)
    assert STATES == (State.ALIVE, State.SUSPECT, State.DEAD, State.LEFT)
    # what leaves the node keeps the exact text: the view, and the wire's MemberState
    assert [v["state"] for v in h.m.view() if v["id"] == "n2"] == ["dead"]
    state = next(s for s in h.m._local_state() if s.node == "n2")
    assert type(state.state) is str and state.state == "dead"


class _OtherDraws(random.Random):
    """A generator whose randrange does not draw by getrandbits (gossip.bits_of: None)."""

    def _randbelow(self, n: int) -> int:  # type: ignore[override]
        return int(self.random() * n)


@pytest.mark.parametrize("rng_cls", [random.Random, _OtherDraws])
@pytest.mark.parametrize("peers", [8, 40, 300])
def test_gossip_targets_are_the_draws_randrange_gives(rng_cls: type[random.Random], peers: int) -> None:
    """_gossip_targets draws as ``randrange(total)`` one target at a time (the inlined getrandbits
    loop, reading the live pool's own list past the hidden self, gives the same members and
    leaves the generator in the same state)."""
    h = Harness(tuple(f"p{i:03d}" for i in range(peers)), node="p005")
    m = h.m
    m.rt.random = rng_cls(7)
    m._rng = m.rt.random
    m._bits = bits_of(m._rng)
    twin = rng_cls(7)
    live = list(m._live_ids)
    for count in (1, 3, 4, 9):
        got = m._gossip_targets(count)
        want: list[str] = []
        tries = 0
        while len(want) < min(count, len(live)) and tries < 4 * count + 8:
            tries += 1
            nid = live[twin.randrange(len(live))]
            if nid not in want:
                want.append(nid)
        assert got == want
    assert m._rng.getstate() == twin.getstate()
