"""The node: routes each client operation to its slot's owner, applies it, answers.

Theory of operation
-------------------
Input arrives through three doors only (DESIGN.md): :meth:`Node.on_client_request`,
:meth:`Node.on_message`, and the timers the node set through its Runtime. Output leaves through
``runtime.send`` and the ``reply`` callbacks. Nothing else, so one seed reproduces a sim run.

Membership is SWIM gossip (:mod:`kvcore.membership`): the node hands every membership message to
its :class:`~kvcore.membership.Membership` and learns from it who exists, who is alive, and —
because every Alive carries the member's slot ranges and config epoch — who owns which slot.
The slot map is derived from those claims with the highest-epoch-wins rule, so every node that
has heard the same claims routes the same way. A static cluster configuration seeds the view (all
members alive at incarnation 0 with their configured slots); seeds let a node join a running
cluster (it then owns no slots, like Redis's ``add-node``); a node with neither is standalone and
owns every slot.

Routing (Redis Cluster's model, one hop):

1. Validate the operation (empty key → 400, key or value over the limit → 413).
2. Look up the key's slot in the slot map. Unowned → 503 ``slot_unassigned``.
3. Owned here → apply to the :class:`~kvcore.store.LocalStore` and reply at once.
4. Owned by a member that membership holds dead or left (or never heard of) → 503
   ``owner_down``, without sending. A *suspect* owner still gets the request: suspicion is not
   yet failure.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kvcore import errors
from kvcore.config import ClusterConfig, NodeConfig
from kvcore.membership import ALIVE, DEAD, LEFT, SUSPECT, Member, Membership, SwimConfig
from kvcore.messages import Delete, Forward, ForwardReply, Get, Put, Reply
from kvcore.metrics import NodeStats
from kvcore.runtime import Runtime, TimerHandle
from kvcore.slots import MAX_SLOT, SlotMap, SlotRangeError, format_ranges, key_slot, parse_ranges
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
        *,
        swim: SwimConfig | None = None,
        seeds: Sequence[str] = (),
        addr: str | None = None,
        peer_addr: str | None = None,
    ) -> None:
        """Build a node.

        ``cluster``: a static cluster to start from; ``seeds``: destinations to join through
        (node ids, or ``"@HOST:PORT"`` peer addresses); ``addr``/``peer_addr``: this node's client
        and peer addresses as advertised to others (taken from ``cluster`` when it lists us).
        """
        self.rt = runtime
        self.id = runtime.node_id
        self.config = (config or NodeConfig()).validate()
        self.cluster = cluster
        self.seeds = tuple(seeds)
        self.slot_map = SlotMap()
        self.store = LocalStore()
        self.stats = NodeStats()
        self.running = False
        self._pending: dict[int, _Pending] = {}
        self._next_rid = runtime.random.getrandbits(48)
        # (src, request_id) -> (expires_at, reply), oldest first
        self._recent: OrderedDict[tuple[str, int], tuple[float, Reply]] = OrderedDict()
        static: list[tuple[str, str, str, str, int]] = []
        if cluster is not None:
            cluster.validate(self.id)
            spec = cluster.node(self.id)
            addr, peer_addr = addr or spec.addr, peer_addr or spec.peer_addr
            assignment = cluster.slot_map().assignment()
            static = [
                (n.id, n.addr, n.peer_addr, format_ranges(assignment.get(n.id, [])), cluster.epoch)
                for n in cluster.nodes
            ]
        elif not self.seeds:
            # The standalone node: a one-node cluster that owns every slot.
            static = [(self.id, addr or "", peer_addr or "", f"0-{MAX_SLOT}", 1)]
        self.membership = Membership(runtime, self._send, swim or SwimConfig.lan(), addr or "", peer_addr or "")
        self.membership.listeners.append(self._on_member_event)
        self._on_member_event("update", self.id, self.membership.me)
        self.membership.add_static(static)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self.membership.start(self.seeds)

    def stop(self) -> None:
        """Stop timers and fail pending forwards (the outcome is unknown to us)."""
        self.running = False
        self.membership.stop()
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
        else:
            state = self.membership.state_of(owner)
            if state == ALIVE or state == SUSPECT:
                self._forward(owner, op, name, reply)
                return
            if state is None:
                e = errors.OwnerDown(f"slot {slot} is owned by {owner}, which is not a known member")
            else:
                e = errors.OwnerDown(f"slot {slot} is owned by {owner}, which is {state}")
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
        elif t in Membership.HANDLES:
            self.membership.handle(src, msg)
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

    # --- membership ---------------------------------------------------------------------------

    def _on_member_event(self, event: str, node_id: str, m: Member) -> None:
        """Derive the slot map from what members advertise (highest epoch wins per slot)."""
        if event in ("join", "update", ALIVE) and m.slots and m.epoch > 0:
            try:
                ranges = parse_ranges(m.slots)
            except SlotRangeError:
                self.stats.malformed += 1
                return
            self.slot_map.claim(ranges, node_id, m.epoch)

    def claim_slots(self, ranges: str, epoch: int) -> None:
        """Take ownership of ``ranges`` (a range string) at config ``epoch`` and advertise it.

        The claim wins wherever ``epoch`` is higher than the slot's current epoch; it spreads by
        gossip with our next incarnation.
        """
        parsed = parse_ranges(ranges)
        self.slot_map.claim(parsed, self.id, epoch)
        mine = format_ranges(self.slot_map.ranges_of(self.id))
        self.membership.set_slots(mine, max(epoch, self.membership.me.epoch))

    def members_view(self) -> list[dict[str, Any]]:
        """Every member this node knows, itself included (served at /cluster/members)."""
        return self.membership.view()

    def peer_states(self) -> dict[str, str]:
        """Every other member's state (alive/suspect/dead/left)."""
        return {m["id"]: m["state"] for m in self.membership.view() if m["id"] != self.id}

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
            "members": {st: sum(1 for m in self.membership.members.values() if m.state == st)
                        for st in (ALIVE, SUSPECT, DEAD, LEFT)},
            "incarnation": self.membership.me.incarnation,
            "joined": self.membership.joined,
            "pending_forwards": len(self._pending),
        }


__all__ = ["Node", "ReplyFn", "error_reply"]
