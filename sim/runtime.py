"""SimRuntime: kvcore's Runtime on a SimPy environment.

One SimRuntime per node *incarnation*. A crash marks it dead: its pending timers then fire into
nothing and it can no longer send, which is how a crashed process's memory and timers vanish
while the node's ``storage`` object (kept by the cluster) survives for the next incarnation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import simpy
from simpy.events import NORMAL

from kvcore.runtime import Storage
from sim.network import SimNetwork
from sim.trace import Trace


class SimTimer:
    __slots__ = ("_ok", "_value", "callbacks", "cancelled", "fn", "rt")

    def __init__(self, rt: SimRuntime, fn: Callable[[], None]) -> None:
        self.callbacks = (self._fire,)
        self._ok = True
        self._value = None
        self.fn = fn
        self.rt = rt
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def _fire(self, _event: Any) -> None:
        rt = self.rt
        if self.cancelled or not rt.alive:
            return
        self.cancelled = True
        trace = rt.trace
        trace.record((rt.env.now, "timer", rt.node_id))
        trace.maybe_flush()
        self.fn()


class SimRuntime:
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

    def now(self) -> float:
        return self.env.now

    def send(self, dst: str, msg: Any) -> None:
        if self.alive:
            self._net_send(self.node_id, dst, msg)

    def call_later(self, delay: float, fn: Callable[[], None]) -> SimTimer:
        t = SimTimer(self, fn)
        self.env.schedule(t, NORMAL, delay)  # type: ignore[arg-type]
        return t
