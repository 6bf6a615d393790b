"""SimStorage: a node's storage whose writes are volatile until synced.

Theory of operation
-------------------
kvcore's :class:`kvcore.runtime.Storage` promises durability only after ``sync()``. The sim
keeps two pictures of one node's storage:

* what the node *believes* (``get`` and ``items``): every ``put`` and ``delete`` at once, as a
  process sees its own writes in the page cache;
* what *survives a crash* (``durable``): only writes whose sync has *completed*.

A write is **dirty** until a ``sync()`` takes it. With ``sync_time=None`` (the default) a sync
completes inside the call: no simulated time passes and no event is scheduled, so a node that
syncs after every durable write (kvcore does) loses nothing in a crash, exactly as before.

With a ``sync_time`` distribution (the sim's latency syntax, ``const:0.002``...), a sync takes
simulated time, but kvcore is synchronous and cannot wait for it: ``sync()`` returns at once
and the node *believes* its writes durable, while they are only **syncing**. One flush is in
flight at a time; it starts when ``sync()`` finds none running, draws its duration, and makes
its writes durable when it completes. Syncs called while a flush is in flight join the *next*
flush (group commit): it starts when the current one completes and carries every write synced
meanwhile. ``stats`` counts sync calls, flushes and writes per flush, so a run shows group
commit paying off (many sync calls, few flushes).

:meth:`crash` (the cluster's ``crash`` and ``power_loss`` verbs) drops every dirty or syncing
write and cancels the flush in flight; the node's next incarnation sees only ``durable``. A
node that answered before its sync completed would therefore lose a write it acknowledged, so
kvcore waits for :meth:`on_durable` before it answers (a Raft group's Ready, a durable node's
``Router.settle``, a migration target's ack).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import simpy

from sim.latency import Latency, parse_latency
from sim.network import schedule_call

#: a write not yet durable: the new value, or None for a delete
_Pending = dict[str, "bytes | None"]


@dataclass
class SyncStats:
    """What one node's storage did, over all its incarnations."""

    #: ``sync()`` calls, and how many found writes to make durable
    sync_calls: int = 0
    #: flushes (fsyncs) that completed, and the writes (distinct keys) they made durable
    flushes: int = 0
    writes_flushed: int = 0
    #: the most syncs that one flush served (group commit)
    max_group: int = 0
    #: crashes, and the dirty or syncing writes they lost
    crashes: int = 0
    lost_writes: int = 0

    @property
    def writes_per_flush(self) -> float:
        return self.writes_flushed / self.flushes if self.flushes else 0.0

    @property
    def syncs_per_flush(self) -> float:
        return self.sync_calls / self.flushes if self.flushes else 0.0


class SimStorage:
    """A :class:`kvcore.runtime.Storage` that loses what was not synced when it crashes."""

    def __init__(
        self,
        env: simpy.Environment | None = None,
        sync_time: Latency | str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(sync_time, str):
            sync_time = parse_latency(sync_time)
        if sync_time is not None and (env is None or rng is None):
            raise ValueError("a sync time needs the simulation's environment and a random stream")
        self.env = env
        self.sync_time = sync_time
        self.rng = rng
        #: what the node sees
        self._view: dict[str, bytes] = {}
        #: what survives a crash
        self.durable: dict[str, bytes] = {}
        self._dirty: _Pending = {}
        #: synced while a flush was in flight: the next flush's writes, and its sync calls
        self._waiting: _Pending = {}
        self._waiting_syncs = 0
        #: the flush in flight (None: none)
        self._inflight: _Pending | None = None
        #: bumped by a crash, so a flush in flight completes into nothing
        self._generation = 0
        #: on_durable callbacks: those of the flush in flight, and of the next one
        self._inflight_waiters: list[Callable[[], None]] = []
        self._next_waiters: list[Callable[[], None]] = []
        self.stats = SyncStats()

    # --- the Storage protocol ------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self._view.get(key)

    def put(self, key: str, value: bytes) -> None:
        self._view[key] = value
        self._dirty[key] = value

    def delete(self, key: str) -> None:
        self._view.pop(key, None)
        self._dirty[key] = None

    def items(self, prefix: str) -> list[tuple[str, bytes]]:
        return sorted((k, v) for k, v in self._view.items() if k.startswith(prefix))

    def sync(self) -> None:
        """Make every write so far durable: now (no sync time), or when a flush completes."""
        st = self.stats
        st.sync_calls += 1
        dirty = self._dirty
        if self.sync_time is None:
            if dirty:
                if len(dirty) == 1 and None not in dirty.values():
                    # _apply for one write (a member learned: a thousand joins sync a million
                    # times), inlined
                    self.durable.update(cast("dict[str, bytes]", dirty))  # no None: just checked
                    st.flushes += 1
                    st.writes_flushed += 1
                    if st.max_group < 1:
                        st.max_group = 1
                else:
                    self._apply(dirty, 1)
                dirty.clear()  # (applied: nothing else holds it)
            return
        if not dirty:
            return
        self._waiting.update(dirty)
        self._waiting_syncs += 1
        self._dirty = {}
        if self._inflight is None:
            self._start_flush()

    def on_durable(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when every write synced so far is durable: at once when none is still
        waiting for or in a flush; else when the flush that carries the last of them completes
        (never, if the node crashes first)."""
        if self._waiting:
            self._next_waiters.append(fn)
        elif self._inflight is not None:
            self._inflight_waiters.append(fn)
        else:
            fn()

    # --- the sim's side ------------------------------------------------------------------------

    @property
    def unsynced(self) -> int:
        """Writes (distinct keys) a crash now would lose: dirty, waiting or in flight."""
        return len(self._dirty.keys() | self._waiting.keys() | (self._inflight or {}).keys())

    def crash(self) -> int:
        """The machine loses its volatile state: every write not yet durable. Returns how many."""
        lost = self.unsynced
        self._dirty, self._waiting, self._inflight = {}, {}, None
        self._waiting_syncs = 0
        self._inflight_waiters, self._next_waiters = [], []
        self._generation += 1
        self._view = dict(self.durable)
        self.stats.crashes += 1
        self.stats.lost_writes += lost
        return lost

    def _apply(self, writes: _Pending, syncs: int) -> None:
        durable = self.durable
        if None in writes.values():
            for key, value in writes.items():
                if value is None:
                    durable.pop(key, None)
                else:
                    durable[key] = value
        else:
            # no delete among them (the common case): in one call
            durable.update(cast("dict[str, bytes]", writes))
        st = self.stats
        st.flushes += 1
        st.writes_flushed += len(writes)
        if syncs > st.max_group:
            st.max_group = syncs

    def _start_flush(self) -> None:
        assert self.env is not None and self.sync_time is not None and self.rng is not None
        batch, syncs = self._waiting, self._waiting_syncs
        self._inflight = batch
        self._waiting, self._waiting_syncs = {}, 0
        self._inflight_waiters, self._next_waiters = self._next_waiters, []
        generation = self._generation

        def done(_e: Any = None) -> None:
            if generation != self._generation:
                return  # crashed meanwhile: the flush never reached the disk
            self._apply(batch, syncs)
            self._inflight = None
            waiters, self._inflight_waiters = self._inflight_waiters, []
            if self._waiting:
                self._start_flush()
            for fn in waiters:
                fn()

        schedule_call(self.env, self.sync_time.sample(self.rng), done)
