"""The simulated network: a chain of rules over SimPy.

Theory of operation
-------------------
``send(src, dst, msg)`` asks each rule in order what to do with the message; the first rule that
decides wins (turmoil's "first non-Pass wins"): drop it (with a reason), or deliver it after one
or more delays (more than one is a duplicate). When no rule decides, the default latency
distribution gives one delay. Rules are kept in stages, so verbs can be applied in any order and
still compose the way a network does::

    partition  →  hold  →  per-link / per-node overrides  →  loss  →  duplication  →  latency

Each rule counts what it decided (``hits``), which is the evidence that a fault fired. Deliveries
are scheduled straight onto the SimPy queue as bare events (no process, no Timeout object), so a
delivered message costs one heap push and one callback; SimPy's (time, priority, counter) key
keeps same-time events first-in first-out, which is what makes runs reproducible.

With ``codec=True`` (the default) every message is packed with :func:`kvwire.pack` when it
is sent and unpacked on delivery, so the sim carries the same bytes as the real network and the
byte counts are measured, not estimated. A payload that fails to decode is counted as malformed by
the receiver and dropped, exactly as a real node treats a bad frame.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.core import EmptySchedule, SimTime, StopSimulation
from simpy.events import NORMAL, URGENT, EventPriority

from kvcore.errors import RemoteProtocolError
from kvcore.metrics import NodeStats
from kvwire import pack, unpack
from sim.latency import Constant, Latency
from sim.trace import Trace

# A decision: None (pass), a str (drop, with this reason), or a tuple of delays (deliver).
Decision = None | str | tuple[float, ...]

#: bytes of realnet's length prefix, counted so that both worlds report the same sizes
FRAME_HEADER = 4

STAGE_PARTITION, STAGE_HOLD, STAGE_LINK, STAGE_LOSS, STAGE_DUPLICATE = range(5)


class _Call:
    """A bare SimPy-schedulable event that calls ``fn(self)`` when its time comes."""

    __slots__ = ("_ok", "_value", "callbacks")

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.callbacks: tuple[Callable[[Any], None], ...] = (fn,)
        self._ok = True
        self._value = None


class _Delivery(list):  # type: ignore[type-arg]
    """A message in flight: a bare SimPy event whose one callback delivers it.

    A list subclass holding (net, src, dst, payload, kind, size): built in C from one tuple,
    with one attribute set, which makes it about twice as cheap as a slotted object with a
    Python ``__init__`` (this is the hottest allocation of a run). SimPy reads ``callbacks`` and
    ``_ok`` only.
    """

    __slots__ = ("callbacks",)
    callbacks: tuple[Callable[[_Delivery], None], ...]
    _ok = True
    _value = None


#: an entry of SimPy's event queue as this module pushes it: (time, priority, counter, event),
#: where the event may be a bare one (a :class:`_Delivery`, a ``SimTimer``) rather than a
#: ``simpy.Event``: SimPy's loop reads only its ``callbacks``, ``_ok`` and ``_value``
QueueEntry = tuple[SimTime, EventPriority, int, Any]


def _deliver_event(ev: _Delivery) -> None:
    """SimPy's callback for a delivery: the common case inline (one call less per message)."""
    net, src, dst, payload, kind, size = ev
    if net.codec:
        net._deliver(src, dst, payload, kind, size)
        return
    ep = net.endpoints.get(dst)
    node = ep.node if ep is not None else None
    if node is None:
        net._deliver(src, dst, payload, kind, size)  # the drop, counted and traced there
        return
    net.stats.delivered += 1
    net.trace.record((net.env._now, "deliver", src, dst, kind))
    try:
        node.on_message(src, payload)
    except RemoteProtocolError:
        ep.stats.malformed += 1


_DELIVER = (_deliver_event,)


def schedule_call(env: simpy.Environment, delay: float, fn: Callable[[Any], None]) -> None:
    env.schedule(_Call(fn), NORMAL, delay)  # type: ignore[arg-type]


class SimEnvironment(simpy.Environment):
    """SimPy's Environment whose :meth:`run` takes its steps inline.

    ``Environment.run`` calls :meth:`step` once per event, a Python call per event on top of
    the event's own callback (a thousand-node join takes a million steps). This ``run`` is
    SimPy's ``run`` with ``step``'s body in its loop: the same events, in the same order, with
    the same until-event (one scheduled event, as SimPy schedules it), the same rescheduling of
    an event whose callback stopped the run, the same failure of an event nobody defused.
    ``step`` itself is SimPy's, unchanged (``tests/sim/test_network.py`` runs both on the same
    schedules)."""

    def run(self, until: float | simpy.Event | None = None) -> Any:
        if until is not None:
            if not isinstance(until, simpy.Event):
                at: float = until if isinstance(until, int) else float(until)
                if at <= self.now:
                    raise ValueError(f"until ({at}) must be greater than the current simulation time")
                # scheduled before all regular events, as SimPy does
                until = simpy.Event(self)
                until._ok = True
                until._value = None
                self.schedule(until, URGENT, at - self.now)
            elif until.callbacks is None:
                return until.value  # processed already
            until.callbacks.append(StopSimulation.callback)
        queue = self._queue
        try:
            while True:
                # Environment.step, inlined
                try:
                    self._now, _, _, event = heappop(queue)
                except IndexError:
                    raise EmptySchedule from None
                callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
                try:
                    for callback in callbacks:
                        callback(event)
                except StopSimulation:
                    event.callbacks = callbacks[callbacks.index(callback) + 1:]
                    self.schedule(event, EventPriority(-1))
                    raise
                if not event._ok and not hasattr(event, "_defused"):
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    raise exc
        except StopSimulation as exc:
            return exc.args[0]  # the until event's value
        except EmptySchedule:
            if until is not None:
                assert not until.triggered
                raise RuntimeError(
                    f'No scheduled events left but "until" event was not triggered: {until}') from None
        return None


@dataclass(eq=False)
class Rule:
    """Base rule. ``decide`` returns None to pass."""

    name: str = "rule"
    stage: int = STAGE_LINK
    hits: int = 0

    def decide(self, net: SimNetwork, src: str, dst: str) -> Decision:  # pragma: no cover
        return None


@dataclass(eq=False)
class Partition(Rule):
    """Drop messages from side ``a`` to side ``b`` (and back unless ``oneway``)."""

    a: frozenset[str] = frozenset()
    b: frozenset[str] = frozenset()
    oneway: bool = False
    stage: int = STAGE_PARTITION

    def decide(self, net: SimNetwork, src: str, dst: str) -> Decision:
        if (src in self.a and dst in self.b) or (not self.oneway and src in self.b and dst in self.a):
            self.hits += 1
            return self.name
        return None


@dataclass(eq=False)
class Hold(Rule):
    """Hold messages on matching links until :meth:`SimNetwork.release` (None matches any)."""

    src: str | None = None
    dst: str | None = None
    stage: int = STAGE_HOLD

    def decide(self, net: SimNetwork, src: str, dst: str) -> Decision:
        if (self.src is None or self.src == src) and (self.dst is None or self.dst == dst):
            self.hits += 1
            return "held"
        return None


@dataclass(eq=False)
class Link(Rule):
    """Per-link (or per-node, with ``node``) override of latency and loss."""

    src: str | None = None
    dst: str | None = None
    node: str | None = None  # matches any link touching this node
    latency: Latency | None = None
    extra: Latency | None = None  # added to the (override or default) latency
    loss: float = 0.0
    both_ways: bool = True

    def matches(self, src: str, dst: str) -> bool:
        if self.node is not None:
            return src == self.node or dst == self.node
        if self.src == src and self.dst == dst:
            return True
        return self.both_ways and self.src == dst and self.dst == src

    def decide(self, net: SimNetwork, src: str, dst: str) -> Decision:
        if not self.matches(src, dst):
            return None
        self.hits += 1
        rng = net.rng
        if self.loss and rng.random() < self.loss:
            return self.name
        d = (self.latency or net.latency).sample(rng)
        if self.extra is not None:
            d += self.extra.sample(rng)
        return (d,)


@dataclass(eq=False)
class Loss(Rule):
    probability: float = 0.0
    stage: int = STAGE_LOSS

    def decide(self, net: SimNetwork, src: str, dst: str) -> Decision:
        if net.rng.random() < self.probability:
            self.hits += 1
            return self.name
        return None


@dataclass(eq=False)
class Duplicate(Rule):
    probability: float = 0.0
    stage: int = STAGE_DUPLICATE

    def decide(self, net: SimNetwork, src: str, dst: str) -> Decision:
        rng = net.rng
        if rng.random() < self.probability:
            self.hits += 1
            return (net.latency.sample(rng), net.latency.sample(rng))
        return None


@dataclass
class Endpoint:
    """Where messages for one node id go. ``node`` is None while the node is down."""

    node_id: str
    node: Any = None
    stats: NodeStats = field(default_factory=NodeStats)


@dataclass
class NetStats:
    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class SimNetwork:
    def __init__(
        self,
        env: simpy.Environment,
        rng: random.Random,
        trace: Trace,
        latency: Latency | None = None,
        codec: bool = True,
    ) -> None:
        self.env = env
        self.rng = rng
        self.trace = trace
        self.latency: Latency = latency or Constant(0.001)
        self.codec = codec
        self.endpoints: dict[str, Endpoint] = {}
        #: peer address -> node id, for destinations written "@HOST:PORT" (seeds)
        self.addresses: dict[str, str] = {}
        self.rules: list[Rule] = []
        self.stats = NetStats()
        self._held: list[tuple[str, str, Any, int, str]] = []
        #: rules removed by heal/clear/replace, kept as evidence of what they did
        self.retired: list[Rule] = []
        self._loss: Loss | None = None
        self._dup: Duplicate | None = None
        if codec:
            self._pack: Callable[[Any], bytes] = pack
            self._unpack: Callable[[bytes], Any] = unpack

    # --- endpoints ---------------------------------------------------------------------------

    def attach(self, node_id: str, peer_addr: str | None = None) -> Endpoint:
        ep = self.endpoints.get(node_id)
        if ep is None:
            ep = self.endpoints[node_id] = Endpoint(node_id)
        if peer_addr is not None:
            self.addresses[peer_addr] = node_id
        return ep

    # --- the data path -----------------------------------------------------------------------

    def send(self, src: str, dst: str, msg: Any) -> None:
        if dst[:1] == "@":
            # a destination given by peer address (a seed): whoever listens there
            resolved = self.addresses.get(dst[1:])
            if resolved is None:
                self.stats.drop("no such address")
                self.trace.record((self.env.now, "drop", src, dst, type(msg).__name__, "no such address"))
                return
            dst = resolved
        kind = type(msg).__name__
        env = self.env
        now = env._now  # the attribute behind the ``now`` property: this is the hottest path
        stats = self.stats
        stats.sent += 1
        size = 0
        payload: Any = msg
        if self.codec:
            payload = self._pack(msg)
            size = len(payload) + FRAME_HEADER  # as realnet counts a frame: prefix included
            stats.bytes_sent += size
            src_ep = self.endpoints.get(src)
            if src_ep is not None:
                src_ep.stats.add_bytes_sent(kind, size)
        record = self.trace.record
        record((now, "send", src, dst, kind, size))
        decision: Decision = None
        if self.rules:  # most sends meet no rule at all
            for rule in self.rules:
                decision = rule.decide(self, src, dst)
                if decision is not None:
                    break
        if decision is None:
            # the common case, inlined: one delivery after the default latency, pushed straight
            # onto SimPy's queue as Environment.schedule does, (time, priority, counter, event)
            ev = _Delivery((self, src, dst, payload, kind, size))
            ev.callbacks = _DELIVER
            queue: list[QueueEntry] = env._queue
            heappush(queue, (now + self.latency.sample(self.rng), NORMAL, next(env._eid), ev))
            return
        if type(decision) is str:
            if decision == "held":
                self._held.append((src, dst, payload, size, kind))
            stats.drop(decision)
            record((now, "drop", src, dst, kind, decision))
            return
        if len(decision) > 1:
            stats.duplicated += len(decision) - 1
        schedule = self.env.schedule
        for delay in decision:
            ev = _Delivery((self, src, dst, payload, kind, size))
            ev.callbacks = _DELIVER
            schedule(ev, NORMAL, delay)  # type: ignore[arg-type]

    def _deliver(self, src: str, dst: str, payload: Any, kind: str, size: int) -> None:
        now = self.env._now
        ep = self.endpoints.get(dst)
        node = ep.node if ep is not None else None
        if node is None:
            self.stats.drop("down")
            self.trace.record((now, "drop", src, dst, kind, "down"))
            return
        if self.codec:
            ep.stats.add_bytes_received(kind, size)  # type: ignore[union-attr]
            try:
                msg = self._unpack(payload)
            except Exception:  # FrameError and RemoteProtocolError alike: count and drop
                ep.stats.malformed += 1  # type: ignore[union-attr]
                self.trace.record((now, "malformed", src, dst, kind))
                return
        else:
            msg = payload
        self.stats.delivered += 1
        self.trace.record((now, "deliver", src, dst, kind))
        try:
            node.on_message(src, msg)
        except RemoteProtocolError:
            ep.stats.malformed += 1  # type: ignore[union-attr]

    def _schedule(self, src: str, dst: str, payload: Any, kind: str, size: int, delay: float) -> None:
        ev = _Delivery((self, src, dst, payload, kind, size))
        ev.callbacks = _DELIVER
        self.env.schedule(ev, NORMAL, delay)  # type: ignore[arg-type]

    def inject(self, src: str, dst: str, payload: bytes, delay: float = 0.0) -> None:
        """Deliver raw bytes as if ``src`` had sent them (for tests of malformed input)."""
        self._schedule(src, dst, payload, "raw", len(payload), delay)

    # --- rules and verbs ---------------------------------------------------------------------

    def add_rule(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        self.rules.sort(key=lambda r: r.stage)  # stable: insertion order within a stage
        return rule

    def remove_rule(self, rule: Rule) -> None:
        if rule in self.rules:
            self.rules.remove(rule)
            self.retired.append(rule)

    def _retire(self, cls: type[Rule]) -> int:
        gone = [r for r in self.rules if isinstance(r, cls)]
        self.rules = [r for r in self.rules if not isinstance(r, cls)]
        self.retired.extend(gone)
        return len(gone)

    def partition(self, a: Iterable[str], b: Iterable[str] | None = None, oneway: bool = False) -> Partition:
        """Cut ``a`` from ``b`` (``b`` defaults to every other endpoint)."""
        sa = frozenset(a)
        sb = frozenset(b) if b is not None else frozenset(self.endpoints) - sa
        name = "partition-oneway" if oneway else "partition"
        return self.add_rule(Partition(name=name, a=sa, b=sb, oneway=oneway))  # type: ignore[return-value]

    def heal(self) -> int:
        """Remove every partition; returns how many were removed."""
        return self._retire(Partition)

    def set_loss(self, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"loss must be within 0 and 1, not {probability}")
        if self._loss is not None:
            self.remove_rule(self._loss)
            self._loss = None
        if probability > 0:
            self._loss = self.add_rule(Loss(name="loss", probability=probability))  # type: ignore[assignment]

    def set_duplicate(self, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"duplication must be within 0 and 1, not {probability}")
        if self._dup is not None:
            self.remove_rule(self._dup)
            self._dup = None
        if probability > 0:
            self._dup = self.add_rule(Duplicate(name="duplicate", probability=probability))  # type: ignore[assignment]

    def set_latency(self, latency: Latency) -> None:
        self.latency = latency

    def set_link(
        self,
        src: str,
        dst: str,
        latency: Latency | None = None,
        loss: float = 0.0,
        both_ways: bool = True,
    ) -> Link:
        return self.add_rule(  # type: ignore[return-value]
            Link(name=f"link {src}->{dst}", src=src, dst=dst, latency=latency, loss=loss, both_ways=both_ways)
        )

    def slow_node(self, node: str, extra: Latency) -> Link:
        """Add ``extra`` latency to every message to or from ``node``."""
        return self.add_rule(Link(name=f"slow {node}", node=node, extra=extra))  # type: ignore[return-value]

    def clear_links(self) -> int:
        return self._retire(Link)

    def hold(self, src: str | None = None, dst: str | None = None) -> Hold:
        return self.add_rule(Hold(name="hold", src=src, dst=dst))  # type: ignore[return-value]

    def release(self) -> int:
        """Remove every hold and deliver what was held, with the default latency, in order."""
        self._retire(Hold)
        held, self._held = self._held, []
        for src, dst, payload, size, kind in held:
            self._schedule(src, dst, payload, kind, size, self.latency.sample(self.rng))
        return len(held)

    def rule_hits(self) -> dict[str, int]:
        """What each rule decided, active and retired alike, by rule name."""
        out: dict[str, int] = {}
        for r in self.retired + self.rules:
            out[r.name] = out.get(r.name, 0) + r.hits
        return out
