"""SimRuntime: kvcore's Runtime on a SimPy environment.

One SimRuntime per node *incarnation*. A crash marks it dead: its pending timers then fire into
nothing and it can no longer send, which is how a crashed process's memory and timers vanish
while the node's ``storage`` object (kept by the cluster) survives for the next incarnation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from heapq import heappush
from typing import Any

import simpy
from simpy.events import NORMAL

from kvcore.runtime import Storage
from sim.network import SimNetwork
from sim.trace import CHUNK, Trace


class SimTimer(list):  # type: ignore[type-arg]
    """A timer: a bare SimPy event whose one callback calls ``fn`` unless cancelled.

    A list subclass holding (runtime, fn, cancelled), like the network's deliveries: built in C
    from one tuple with one attribute set, and fired by one module function (no bound method
    per timer). A node sets several timers a second, so this is one of the hottest allocations.
    """

    __slots__ = ("callbacks",)
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
    __slots__ = ("_batch", "_eid", "_net_send", "_queue", "alive", "env", "net", "node_id", "random",
                 "storage", "trace")

    def __init__(
        self,
        env: simpy.Environment,
        net: SimNetwork,
        trace: Trace,
        node_id: str,
        rng: random.Random,
        storage: Storage,
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
        self._queue = env._queue
        self._eid = env._eid

    def now(self) -> float:
        return self.env._now  # the attribute behind SimPy's ``now`` property

    def send(self, dst: str, msg: Any) -> None:
        if self.alive:
            self._net_send(self.node_id, dst, msg)

    def call_later(self, delay: float, fn: Callable[[], None]) -> SimTimer:
        # Environment.schedule inlined: (time, priority, counter, event) onto SimPy's queue
        t = SimTimer((self, fn, False))
        t.callbacks = _FIRE
        heappush(self._queue, (self.env._now + delay, NORMAL, next(self._eid), t))
        return t

    def call_at(self, when: float, fn: Callable[[], None]) -> SimTimer:
        """A timer at simulated time ``when`` exactly (a time already past: now)."""
        t = SimTimer((self, fn, False))
        t.callbacks = _FIRE
        now = self.env._now
        heappush(self._queue, (when if when > now else now, NORMAL, next(self._eid), t))
        return t
