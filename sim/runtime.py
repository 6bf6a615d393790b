"""SimRuntime: kvcore's Runtime on a SimPy environment.

One SimRuntime per node *incarnation*. A crash marks it dead: its pending timers then fire into
nothing and it can no longer send, which is how a crashed process's memory and timers vanish
while the node's ``storage`` object (kept by the cluster) survives for the next incarnation.

Clock skew (Jepsen's clock nemesis, as drift). A node's clock is the simulated time until
:meth:`SimRuntime.set_clock_rate` is called with a rate other than 1.0; from then on its ``now()``
advances ``rate`` node-seconds per simulated second (1.5: fast, 0.5: slow), and its timers are
scaled the same way: ``call_later(d)`` fires after ``d / rate`` simulated seconds, ``call_at(t)``
when its own clock reads ``t``. So the node's Raft ticks, SWIM probe periods and every timeout
drift together, as on a machine whose oscillator is off. A rate set back to 1.0 keeps the offset
the clock gathered (the clock is monotonic: it never jumps). The clock is the machine's, not the
process's: the cluster hands a restarted incarnation the clock its node had (:data:`Clock`, kept
per node), as a process restarted on a machine reads the same monotonic clock. A timer already
pending when the rate changes is moved with it, as a machine's pending timers are (they wait on
the same oscillator): what remained of it in node-seconds is what remains, at the new rate (its
handle stays the one the node holds; the order among timers due at one instant is kept). A
runtime whose rate was never set computes exactly what it did before the skew existed (no
multiplication, no float drift: same digest).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from heapq import heapify, heappush
from typing import Any

import simpy
from simpy.events import NORMAL

from kvcore.runtime import Storage
from sim.network import QueueEntry, SimNetwork
from sim.trace import CHUNK, Trace

#: A skewed clock: (simulated time, node time, rate) at its last change of rate; None for a clock
#: that was never skewed (it reads the simulated time itself)
Clock = tuple[float, float, float]


def read_clock(clock: Clock | None, now: float) -> float:
    """What ``clock`` reads at simulated time ``now``."""
    if clock is None:
        return now
    since, local, rate = clock
    return local + (now - since) * rate


def rate_of(clock: Clock | None) -> float:
    """``clock``'s rate, node-seconds per simulated second (1.0: a true clock)."""
    return 1.0 if clock is None else clock[2]


def check_rate(rate: float) -> None:
    """ValueError unless ``rate`` is a clock rate: a positive finite number."""
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"a clock rate must be a positive finite number, not {rate!r}")


def retime(clock: Clock | None, now: float, rate: float) -> Clock | None:
    """``clock`` after its rate became ``rate`` at simulated time ``now`` (it keeps the time it
    reads then); a clock never skewed set to 1.0 stays None, exactly the simulated time."""
    check_rate(rate)
    if clock is None and rate == 1.0:
        return None
    return (now, read_clock(clock, now), rate)


class SimTimer(list):  # type: ignore[type-arg]
    """A timer: a bare SimPy event whose one callback calls ``fn`` unless cancelled.

    A list subclass holding (runtime, fn, cancelled), like the network's deliveries: built in C
    from one tuple with one attribute set, and fired by one module function (no bound method
    per timer). A node sets several timers a second, so this is one of the hottest allocations.
    """

    __slots__ = ("callbacks",)
    callbacks: tuple[Callable[[SimTimer], None], ...]
    _ok = True
    _value = None

    @property
    def cancelled(self) -> bool:
        return bool(self[2])

    def cancel(self) -> None:
        self[2] = True


def _fire(t: SimTimer) -> None:
    rt, fn, cancelled = t
    if cancelled or not rt.alive:
        return
    t[2] = True
    batch = rt._batch
    batch.append((rt.env._now, "timer", rt.node_id))
    if len(batch) >= CHUNK:
        rt.trace.maybe_flush()
    fn()


_FIRE = (_fire,)


class SimRuntime:
    __slots__ = ("_batch", "_clock", "_eid", "_net_send", "_queue", "alive", "env", "net", "node_id",
                 "random", "storage", "trace")

    def __init__(
        self,
        env: simpy.Environment,
        net: SimNetwork,
        trace: Trace,
        node_id: str,
        rng: random.Random,
        storage: Storage,
        clock: Clock | None = None,
    ) -> None:
        self.env = env
        self.net = net
        self.trace = trace
        self.node_id = node_id
        self.random = rng
        self.storage = storage
        self.alive = True
        self._net_send = net.send
        #: the trace's pending batch (``Trace.record`` is its append) and SimPy's queue and event
        #: counter: the objects every timer touches, held here to spare a lookup each
        self._batch = trace._batch
        self._queue: list[QueueEntry] = env._queue
        self._eid = env._eid
        #: None: the node's clock is the simulated time; else (simulated time, node time, rate)
        #: at the last change of rate (set_clock_rate)
        self._clock = clock

    def now(self) -> float:
        clock = self._clock
        if clock is None:
            return self.env._now  # the attribute behind SimPy's ``now`` property
        since, local, rate = clock
        return local + (self.env._now - since) * rate

    @property
    def clock_rate(self) -> float:
        """Node-seconds per simulated second (1.0: a true clock)."""
        return rate_of(self._clock)

    @property
    def clock_offset(self) -> float:
        """How far the node's clock is ahead of the simulated time (negative: behind), seconds."""
        return self.now() - self.env._now

    @property
    def clock(self) -> Clock | None:
        return self._clock

    def set_clock_rate(self, rate: float) -> None:
        """From now on the node's clock runs at ``rate`` node-seconds per simulated second (see
        the module's "Clock skew"). A never-skewed runtime given 1.0 stays exactly as it was."""
        was = rate_of(self._clock)
        self._clock = retime(self._clock, self.env._now, rate)
        if rate != was:
            self._retime_pending(was / rate)

    def _retime_pending(self, factor: float) -> None:
        """Stretch what remains of this runtime's pending timers by ``factor`` (old rate / new):
        SimPy's queue is rewritten once, each entry keeping its priority and counter, and made a
        heap again (a rate changes rarely; a timer is set several times a second)."""
        now = self.env._now
        queue = self._queue
        moved = False
        for i, entry in enumerate(queue):
            t = entry[3]
            if type(t) is SimTimer and t[0] is self and not t[2]:
                queue[i] = (now + (entry[0] - now) * factor, entry[1], entry[2], t)
                moved = True
        if moved:
            heapify(queue)

    def send(self, dst: str, msg: Any) -> None:
        if self.alive:
            self._net_send(self.node_id, dst, msg)

    def call_later(self, delay: float, fn: Callable[[], None]) -> SimTimer:
        if self._clock is not None:
            delay = delay / self._clock[2]  # node-seconds to simulated seconds
        # Environment.schedule inlined: (time, priority, counter, event) onto SimPy's queue
        t = SimTimer((self, fn, False))
        t.callbacks = _FIRE
        heappush(self._queue, (self.env._now + delay, NORMAL, next(self._eid), t))
        return t

    def call_at(self, when: float, fn: Callable[[], None]) -> SimTimer:
        """A timer when the node's clock reads ``when`` (a time already past: now); without skew
        that is simulated time ``when`` exactly."""
        t = SimTimer((self, fn, False))
        t.callbacks = _FIRE
        now = self.env._now
        if self._clock is not None:
            when = now + (when - self.now()) / self._clock[2]
        heappush(self._queue, (when if when > now else now, NORMAL, next(self._eid), t))
        return t
