"""The Runtime: everything a node may get from the world, and a fake one for tests.

Theory of operation
-------------------
kvcore never does I/O (ARCHITECTURE.md, "The boundary"). A node is handed one Runtime when it is built
and reaches the world only through it: ``now()`` (monotonic seconds), ``send(dst, msg)``
(fire-and-forget: the message may be lost, delayed, duplicated or reordered; ``dst`` is a node id,
or ``"@HOST:PORT"`` for "whoever listens at this peer address" — how a node reaches a seed whose
id it does not know yet), ``call_later(delay,
fn)`` (a timer with ``cancel()``), ``random`` (a ``random.Random`` the world seeded) and
``storage`` (state that survives a crash once synced: a write is durable when ``sync()`` has
returned, never before). The sim and realnet each implement it; tests use
:class:`FakeRuntime`, whose clock only moves when the test says so and which records every send,
so a test drives inputs and asserts on outputs as data (h11's and etcd/raft's testing style).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any, Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Storage(Protocol):
    """Durable key/value state that survives a crash: SWIM incarnations, and with
    ``NodeConfig.durable`` the store and open migrations, and a replicated group's Raft log
    (:class:`kvcore.replica.KVRaftStorage`).

    Durability is explicit: ``put`` and ``delete`` change what ``get`` and ``items`` return at
    once, but a write is promised to survive a crash only after a later ``sync()`` has returned
    (a world may lose unsynced writes in a crash: the sim's :class:`sim.storage.SimStorage`
    does). Every durable write in kvcore is therefore a write followed by ``sync()``.
    """

    def get(self, key: str) -> bytes | None: ...
    def put(self, key: str, value: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, sorted by key."""
        ...
    def sync(self) -> None:
        """Make every write so far durable (an fsync): after it returns, a crash keeps them
        (a world where a sync takes time may return first: see ``on_durable``)."""
        ...
    def on_durable(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once every write synced so far is durable: at once when ``sync`` completes
        inside the call (the fake, realnet's Raft log), later where a sync takes time (the sim
        with a ``sync_time``; realnet's storage log, whose one flush ends the loop turn). A crash
        first means ``fn`` never runs. What must not leave before its
        writes are durable (a Raft vote, an AppendEntries ack) waits on this."""
        ...


class MemoryStorage:
    """A Storage kept in memory; the sim keeps the object across crash and restart."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def put(self, key: str, value: bytes) -> None:
        self._data[key] = value

    def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self._data.items() if k.startswith(prefix))

    def sync(self) -> None:
        """Nothing to do: every write is kept (the object outlives a crash as it is)."""

    def on_durable(self, fn: Callable[[], None]) -> None:
        fn()


class Runtime(Protocol):
    node_id: str
    random: random.Random
    storage: Storage

    def now(self) -> float: ...
    def send(self, dst: str, msg: Any) -> None: ...
    def call_later(self, delay: float, fn: Callable[[], None]) -> TimerHandle: ...
    def call_at(self, when: float, fn: Callable[[], None]) -> TimerHandle: ...


class _FakeTimer:
    __slots__ = ("cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeRuntime:
    """A Runtime with a manual clock and recorded sends, for unit tests.

    ``advance(dt)`` moves the clock, firing due timers in (time, creation order). ``sent`` is
    the list of ``(dst, msg)`` in send order; ``take_sent()`` returns and clears it.
    """

    def __init__(self, node_id: str = "n1", seed: int = 0, start: float = 0.0) -> None:
        self.node_id = node_id
        self.random = random.Random(seed)
        self.storage: Storage = MemoryStorage()
        self.sent: list[tuple[str, Any]] = []
        self._now = start
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = 0

    def now(self) -> float:
        return self._now

    def send(self, dst: str, msg: Any) -> None:
        self.sent.append((dst, msg))

    def call_later(self, delay: float, fn: Callable[[], None]) -> _FakeTimer:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        return self.call_at(self._now + delay, fn)

    def call_at(self, when: float, fn: Callable[[], None]) -> _FakeTimer:
        """A timer at ``when`` on this clock (a time already past: now)."""
        t = _FakeTimer(max(when, self._now), fn)
        self._seq += 1
        heapq.heappush(self._timers, (t.when, self._seq, t))
        return t

    def pending_timers(self) -> int:
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def advance(self, dt: float) -> None:
        """Move the clock forward by ``dt``, firing every timer that falls due, in order."""
        end = self._now + dt
        while self._timers and self._timers[0][0] <= end:
            when, _, t = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not t.cancelled:
                t.cancelled = True
                t.fn()
        self._now = end

    def take_sent(self) -> list[tuple[str, Any]]:
        out, self.sent = self.sent, []
        return out
