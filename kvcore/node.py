"""The node: routes each client operation to its slot's owner, applies it, answers.

Theory of operation
-------------------
Input arrives through three doors only (DESIGN.md): :meth:`Node.on_client_request`,
:meth:`Node.on_message`, and the timers the node set through its Runtime. Output leaves through
``runtime.send`` and the ``reply`` callbacks. Nothing else, so one seed reproduces a sim run.

Routing (Redis Cluster's model, one hop):

1. Validate the operation (empty key → 400, key or value over the limit → 413).
2. Look up the key's slot in the slot map. Unowned → 503 ``slot_unassigned``.
3. Owned here → apply to the :class:`~kvcore.store.LocalStore` and reply at once.
4. Owned by a peer the health check says is unreachable → 503 ``owner_down``, without sending.
5. Otherwise send :class:`~kvcore.messages.Forward` with a fresh request id and start a timer;
   the owner's :class:`~kvcore.messages.ForwardReply` is relayed to the client; if the timer
   fires first, the client gets 504 ``forward_timeout`` (outcome unknown) and a late reply is
   counted and dropped.

A Forward is never forwarded again: a receiver that does not own the slot answers ``wrong_node``
(the maps disagree; the request was not applied), so disagreeing maps cannot loop.

The network may duplicate messages. The owner remembers the reply to each (sender, request id)
for ``dedup_window`` seconds and answers a duplicate from memory instead of applying it twice: a
duplicated Put delivered after a newer Put would otherwise bring an old value back. Only writes
are remembered (a duplicated Get is simply read again and its answer dropped by the forwarder, so
values of up to 1 MiB are never held), and at most ``DEDUP_MAX_ENTRIES`` of them, oldest evicted
first, so a burst cannot grow memory without bound. Request ids
start at a random 48-bit offset drawn from the Runtime's random, so a restarted node does not
reuse the ids of its previous life.

Peer input is never trusted: a message of an unexpected kind is counted as malformed and dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvcore import errors
from kvcore.config import ClusterConfig, NodeConfig
from kvcore.health import REACHABLE, UNKNOWN, UNREACHABLE, PeerHealth
from kvcore.messages import Delete, Forward, ForwardReply, Get, Ping, Pong, Put, Reply
from kvcore.metrics import NodeStats
from kvcore.runtime import Runtime, TimerHandle
from kvcore.slots import SlotMap, key_slot
from kvcore.store import LocalStore

ReplyFn = Callable[[Reply], None]

OK = Reply()

#: most forwarded writes whose replies the owner remembers for dedup (each entry is small)
DEDUP_MAX_ENTRIES = 100_000


def error_reply(err: errors.StoreError) -> Reply:
    return Reply(error=err.code, message=err.message)


@dataclass(slots=True)
class _Pending:
    reply: ReplyFn
    timer: TimerHandle
    dst: str
    op_name: str


class Node:
    """One storelab node. Build it with a Runtime, then call :meth:`start`."""

    def __init__(
        self,
        runtime: Runtime,
        config: NodeConfig | None = None,
        cluster: ClusterConfig | None = None,
    ) -> None:
        self.rt = runtime
        self.id = runtime.node_id
        self.config = (config or NodeConfig()).validate()
        self.cluster = cluster
        if cluster is None:
            # The standalone node: a one-node cluster that owns every slot.
            self.slot_map = SlotMap.single_owner(self.id)
            peers: list[str] = []
        else:
            cluster.validate(self.id)
            self.slot_map = cluster.slot_map()
            peers = sorted(n.id for n in cluster.nodes if n.id != self.id)
        self.peers: dict[str, PeerHealth] = {p: PeerHealth(p) for p in peers}
        self.store = LocalStore()
        self.stats = NodeStats()
        self.running = False
        self._pending: dict[int, _Pending] = {}
        self._next_rid = runtime.random.getrandbits(48)
        self._ping_seq = 0
        self._ping_timer: TimerHandle | None = None
        # (src, request_id) -> (expires_at, reply), oldest first
        self._recent: OrderedDict[tuple[str, int], tuple[float, Reply]] = OrderedDict()
        #: observers of peer state changes: fn(peer_id, old_state, new_state)
        self.on_peer_state: list[Callable[[str, str, str], None]] = []

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        if self.peers:
            # A random phase spreads the nodes' ping ticks over the interval.
            first = self.rt.random.uniform(0, self.config.ping_interval)
            self._ping_timer = self.rt.call_later(first, self._ping_tick)

    def stop(self) -> None:
        """Stop timers and fail pending forwards (the outcome is unknown to us)."""
        self.running = False
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.timer.cancel()
            p.reply(error_reply(errors.Internal(f"node {self.id} is shutting down")))

    # --- client requests ---------------------------------------------------------------------

    def on_client_request(self, op: Any, reply: ReplyFn) -> None:
        """Handle a client operation; ``reply`` is called exactly once, now or later."""
        name = type(op).__name__
        try:
            key = self._validate(op)
        except errors.StoreError as err:
            self.stats.count_op(name, err.code)
            reply(error_reply(err))
            return
        slot = key_slot(key)
        owner = self.slot_map.owner(slot)
        if owner == self.id:
            r = self.apply(op)
            self.stats.count_op(name, r.error or "ok")
            reply(r)
            return
        if owner is None:
            e: errors.StoreError = errors.SlotUnassigned(f"slot {slot} has no owner")
        elif owner not in self.peers:
            e = errors.OwnerDown(f"slot {slot} is owned by {owner}, which is not a known peer")
        elif self._peer_state(owner) == UNREACHABLE:
            e = errors.OwnerDown(f"slot {slot} is owned by {owner}, which is unreachable")
        else:
            self._forward(owner, op, name, reply)
            return
        self.stats.count_op(name, e.code)
        reply(error_reply(e))

    def _validate(self, op: Any) -> bytes:
        t = type(op)
        if t is not Get and t is not Put and t is not Delete:
            raise errors.BadRequest(f"unknown operation {t.__name__}")
        key = op.key
        if not isinstance(key, bytes) or not key:
            raise errors.BadRequest("the key must be a non-empty byte string")
        if len(key) > self.config.max_key_bytes:
            raise errors.TooLarge(
                f"key of {len(key)} bytes is over the limit of {self.config.max_key_bytes}"
            )
        if t is Put:
            if not isinstance(op.value, bytes):
                raise errors.BadRequest("the value must be a byte string")
            if len(op.value) > self.config.max_value_bytes:
                raise errors.TooLarge(
                    f"value of {len(op.value)} bytes is over the limit of {self.config.max_value_bytes}"
                )
        return key

    def apply(self, op: Get | Put | Delete) -> Reply:
        """Apply an operation to the local store (the caller checked ownership)."""
        t = type(op)
        if t is Get:
            v = self.store.get(op.key)
            if v is None:
                return error_reply(errors.NotFound(f"key {op.key!r} not found"))
            return Reply(value=v)
        if t is Put:
            self.store.set(op.key, op.value)  # type: ignore[union-attr]
            return OK
        if self.store.delete(op.key):
            return OK
        return error_reply(errors.NotFound(f"key {op.key!r} not found"))

    def _forward(self, owner: str, op: Any, name: str, reply: ReplyFn) -> None:
        rid = self._next_rid
        self._next_rid += 1
        timer = self.rt.call_later(self.config.forward_timeout, lambda: self._forward_timed_out(rid))
        self._pending[rid] = _Pending(reply, timer, owner, name)
        self.stats.forwards_sent += 1
        self._send(owner, Forward(request_id=rid, op=op))

    def _forward_timed_out(self, rid: int) -> None:
        p = self._pending.pop(rid, None)
        if p is None:
            return
        self.stats.forward_timeouts += 1
        e = errors.ForwardTimeout(
            f"node {p.dst} did not answer within {self.config.forward_timeout:g}s"
        )
        self.stats.count_op(p.op_name, e.code)
        p.reply(error_reply(e))

    # --- peer messages -----------------------------------------------------------------------

    def on_message(self, src: str, msg: Any) -> None:
        """Handle a message from peer ``src``. Never raises on what a peer sends."""
        t = type(msg)
        self.stats.count_received(t.__name__)
        if t is Forward:
            self._on_forward(src, msg)
        elif t is ForwardReply:
            self._on_forward_reply(src, msg)
        elif t is Ping:
            self._send(src, Pong(seq=msg.seq, sent_at=msg.sent_at))
        elif t is Pong:
            self._on_pong(src, msg)
        else:
            self.stats.malformed += 1

    def _on_forward(self, src: str, msg: Forward) -> None:
        self.stats.forwards_received += 1
        now = self.rt.now()
        self._expire_recent(now)
        key = (src, msg.request_id)
        seen = self._recent.get(key)
        if seen is not None:
            self.stats.forward_duplicates += 1
            self._send(src, ForwardReply(request_id=msg.request_id, reply=seen[1]))
            return
        op = msg.op
        name = type(op).__name__
        try:
            k = self._validate(op)
        except errors.StoreError as e:
            r = error_reply(e)
        else:
            slot = key_slot(k)
            owner = self.slot_map.owner(slot)
            if owner == self.id:
                r = self.apply(op)
            else:
                # Never forward a forwarded request: the maps disagree; say so.
                r = error_reply(
                    errors.WrongNode(
                        f"node {self.id} does not own slot {slot}; its map says {owner or 'nobody'}"
                    )
                )
        self.stats.count_op(f"{name}(forwarded)", r.error or "ok")
        if type(op) is not Get:
            recent = self._recent
            recent[key] = (now + self.config.dedup_window, r)
            if len(recent) > DEDUP_MAX_ENTRIES:
                recent.popitem(last=False)
        self._send(src, ForwardReply(request_id=msg.request_id, reply=r))

    def _expire_recent(self, now: float) -> None:
        recent = self._recent
        while recent:
            k, (expires, _) = next(iter(recent.items()))
            if expires > now:
                break
            del recent[k]

    def _on_forward_reply(self, src: str, msg: ForwardReply) -> None:
        p = self._pending.get(msg.request_id)
        if p is None or p.dst != src:
            # late (after the timeout), duplicated, or from the wrong peer: drop
            self.stats.late_replies += 1
            return
        del self._pending[msg.request_id]
        p.timer.cancel()
        self.stats.count_op(p.op_name, msg.reply.error or "ok")
        p.reply(msg.reply)

    # --- health check ------------------------------------------------------------------------

    def _ping_tick(self) -> None:
        if not self.running:
            return
        now = self.rt.now()
        for pid, h in self.peers.items():
            self._update_state(h, now)
            self._ping_seq += 1
            if h.first_ping_at is None:
                h.first_ping_at = now
            h.last_ping_sent = now
            h.pings_sent += 1
            self._send(pid, Ping(seq=self._ping_seq, sent_at=now))
        self._ping_timer = self.rt.call_later(self.config.ping_interval, self._ping_tick)

    def _on_pong(self, src: str, msg: Pong) -> None:
        h = self.peers.get(src)
        if h is None:
            self.stats.malformed += 1
            return
        now = self.rt.now()
        h.observe_pong(now, msg.sent_at)
        self._update_state(h, now)

    def _peer_state(self, pid: str) -> str:
        h = self.peers[pid]
        return self._update_state(h, self.rt.now())

    def _update_state(self, h: PeerHealth, now: float) -> str:
        new = h.evaluate(now, self.config.down_after)
        if new != h.state:
            old, h.state = h.state, new
            for fn in self.on_peer_state:
                fn(h.peer_id, old, new)
        return new

    def peer_states(self) -> dict[str, str]:
        now = self.rt.now()
        return {pid: self._update_state(h, now) for pid, h in self.peers.items()}

    # --- helpers -----------------------------------------------------------------------------

    def _send(self, dst: str, msg: Any) -> None:
        self.stats.count_sent(type(msg).__name__)
        self.rt.send(dst, msg)

    def pending_forwards(self) -> int:
        return len(self._pending)

    def info(self) -> dict[str, Any]:
        """This node's view, as plain data (served at /cluster/info)."""
        return {
            "id": self.id,
            "mode": "standalone" if self.cluster is None else "cluster",
            "keys": self.store.count(),
            "bytes": self.store.bytes_used,
            "slots_owned": self.slot_map.slot_counts().get(self.id, 0),
            "slots_assigned": 16384 - sum(hi - lo + 1 for lo, hi in self.slot_map.unassigned()),
            "epoch": self.slot_map.max_epoch(),
            "peers": self.peer_states(),
            "pending_forwards": len(self._pending),
        }


__all__ = ["REACHABLE", "UNKNOWN", "UNREACHABLE", "Node", "ReplyFn", "error_reply"]
