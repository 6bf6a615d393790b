"""Automatic rebalancing: the node-side loop that decides when to rebalance, and the drain.

Theory of operation
-------------------
With ``[cluster] auto_rebalance = true`` or ``--auto-rebalance`` (the same option on every node),
``realnet.node`` starts one :class:`AutoRebalancer` per process. It only *decides when*; what a
rebalance does is :func:`realnet.admin.auto_rebalance` (and :meth:`realnet.admin.Admin.drain`),
the same library as ``storelab cluster``, driven over the HTTP API.

- When a member *joins* (or comes back after having left) or *leaves gracefully*, the node waits
  ``auto_rebalance_settle`` seconds (default 1; every further event restarts the wait), then, if
  it is the alive member with the lowest id in its view, runs :func:`realnet.admin.auto_rebalance`:
  the rebalance plan with empty nodes taking part, carried out over the HTTP API like
  ``storelab cluster rebalance --use-empty``. Crashes (dead members) are ignored: a dead node's
  keys cannot move. The run happens in a daemon thread (:func:`run_in_thread`: the admin library
  is blocking HTTP, partly to this very node), never on the event loop, and one at a time: an
  event during a run schedules one more run after it. A cluster that is not quiet (open
  migration, nodes that disagree, a member not alive) is tried again after the settle time, up
  to ``AUTO_REBALANCE_RETRIES`` times.
- A node with the option that is asked to leave (``/cluster/leave``) and owns slots first moves
  them to the other alive members (:meth:`AutoRebalancer.drain`), then leaves: a graceful leave
  loses no key. A signal (SIGTERM, SIGINT) only stops the process: stopping is not leaving, so
  nothing is drained, and the member comes back with its slots when it restarts; its peers hold
  it dead meanwhile, which the rebalancer ignores (a dead node's keys cannot move). A run of the rebalancer in progress stops after its
  current move first. If the cluster is not quiet within ``DRAIN_STABLE_TIMEOUT`` (10 s; a dead
  member, say) or the drain fails, the node logs it and leaves anyway, with its keys.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from kvcore.membership import ALIVE, LEFT, Member, MemberEvent
from kvcore.node import Node
from realnet import admin
from realnet.settings import AUTO_REBALANCE_SETTLE

log = logging.getLogger("realnet.autorebalance")

#: how many times an automatic rebalance is tried again while the cluster is not quiet
AUTO_REBALANCE_RETRIES = 20
#: how long a node leaving with auto_rebalance waits for a quiet cluster before it drains
DRAIN_STABLE_TIMEOUT = 10.0


def run_in_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], name: str) -> asyncio.Future[Any]:
    """Run blocking ``fn`` in a daemon thread (it never holds up the process's exit); its result
    or exception resolves the returned future on ``loop``."""
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def run() -> None:
        try:
            result: tuple[bool, Any] = (True, fn())
        except BaseException as e:  # handed to the loop, which logs it
            result = (False, e)
        try:
            loop.call_soon_threadsafe(settle, *result)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut


class AutoRebalancer:
    """Rebalances the cluster when members join or leave gracefully (module docstring)."""

    def __init__(self, node: Node, addr: str, loop: asyncio.AbstractEventLoop,
                 settle: float = AUTO_REBALANCE_SETTLE, token: str | None = None) -> None:
        self.node = node
        #: the admin token the nodes require (the same on every node), or None
        self.token = token
        self.addr = addr
        self.loop = loop
        self.settle = settle
        #: one orchestration at a time in this process (a rebalance run, the drain before leaving)
        self.lock = threading.Lock()
        #: set when the node is leaving: a run stops after its current move
        self.cancel = threading.Event()
        self.runs = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._again = False
        self._retries = 0
        self._last: dict[str, str] = {}
        node.membership.listeners.append(self.on_event)

    def on_event(self, event: MemberEvent, node_id: str, m: Member) -> None:
        if node_id == self.node.id:
            return
        before = self._last.get(node_id)
        self._last[node_id] = m.state
        if self.cancel.is_set() or self.node.membership.leaving:
            return
        joined = (event == MemberEvent.JOIN and m.state == ALIVE) or (event == MemberEvent.ALIVE and before == LEFT)
        if joined or event == MemberEvent.LEFT:  # a crash ("dead") is not a reason: its keys cannot move
            log.info("member %s %s; rebalancing in %gs if this node leads", node_id,
                     "joined" if joined else "left", self.settle)
            self._retries = 0
            self.schedule()

    def schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.settle, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.cancel.is_set():
            return
        if self._running:
            self._again = True
            return
        if getattr(self.node, "replica", None) is not None:
            return  # a replicated group serves every slot on every node: nothing to move (#11)
        ms = self.node.membership
        alive = sorted(m.node for m in ms.members.values() if m.state == ALIVE)
        if not alive or alive[0] != self.node.id:
            return  # the alive member with the lowest id does it
        self._running = True
        run_in_thread(self.loop, self._run, "auto-rebalance").add_done_callback(self._done)

    def _run(self) -> str:
        with self.lock:
            if self.cancel.is_set():
                return "not rebalancing: this node is leaving"
            return admin.auto_rebalance(self.addr, self.node.id, self.cancel, log=log.info,
                                        token=self.token)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._running = False
        self.runs += 1
        exc = fut.exception()
        if isinstance(exc, admin.Refused) and self._retries < AUTO_REBALANCE_RETRIES:
            self._retries += 1
            log.info("automatic rebalance postponed (%s: %s); trying again in %gs", exc.message,
                     "; ".join(exc.problems[:3]), self.settle)
            self.schedule()
        elif exc is not None:
            log.warning("automatic rebalance failed: %s", getattr(exc, "message", None) or repr(exc))
        else:
            log.info("automatic rebalance: %s", fut.result())
        if self._again and not self.cancel.is_set():
            self._again = False
            self.schedule()

    async def drain(self) -> None:
        """Before leaving: stop rebalancing, and move this node's slots to the others."""
        self.cancel.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        node = self.node
        owned = node.slot_map.slot_counts().get(node.id, 0)
        if not owned or not node.membership.live_members() or getattr(node, "replica", None) is not None:
            return
        log.info("moving this node's %d slots to the other members before leaving", owned)

        def run() -> list[Any]:
            with self.lock, admin.Admin(log=log.info, token=self.token) as a:
                return a.drain(self.addr, node.id, stable_timeout=DRAIN_STABLE_TIMEOUT)

        try:
            moves = await run_in_thread(self.loop, run, "drain")
        except Exception as e:
            log.error("could not move this node's slots away (%s); leaving anyway, with its keys",
                      getattr(e, "message", None) or repr(e))
            return
        log.info("moved %d slots away in %d moves", sum(m.count for m in moves), len(moves))


__all__ = [
    "AUTO_REBALANCE_RETRIES",
    "AUTO_REBALANCE_SETTLE",
    "DRAIN_STABLE_TIMEOUT",
    "AutoRebalancer",
    "run_in_thread",
]
