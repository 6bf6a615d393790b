"""Routing and forwarding: a client operation goes to its slot's owner, one hop at most.

Theory of operation
-------------------
Redis Cluster's model, one hop (:meth:`Router.on_client_request`):

1. Validate the operation (empty key → 400, key or value over the limit → 413).
2. Look up the key's slot in the slot map. Unowned → 503 ``slot_unassigned``.
3. Owned here → apply to the :class:`~kvcore.store.LocalStore` and reply at once (a slot that is
   migrating out is served by :meth:`Router.serve_migrating`: see :mod:`kvcore.node.migration`).
4. Owned by a member that membership holds dead or left (or never heard of) → 503
   ``owner_down``, without sending. A *suspect* owner still gets the request: suspicion is not
   yet failure.
5. Otherwise send :class:`~kvcore.messages.Forward` with a fresh request id and start a timer;
   the owner's :class:`~kvcore.messages.ForwardReply` is relayed to the client; if the timer
   fires first, the client gets 504 ``forward_timeout`` (outcome unknown) and a late reply is
   counted and dropped.

A Forward is never forwarded again: a receiver that does not own the slot answers ``wrong_node``
(the maps disagree; the request was not applied), so disagreeing maps cannot loop. An
:class:`~kvcore.messages.Asking` (Redis's ASK) is the source of a migrating slot sending on a
request for a key it no longer holds; the importer serves it although it does not own the slot.

The network may duplicate messages. The owner remembers the reply to each forwarded write for
``dedup_window`` seconds in a :class:`~kvcore.node.dedup.DedupCache` keyed by (sender, request
id), and answers a duplicate from memory instead of applying it twice. Only writes are
remembered: a duplicated Get is simply read again and its answer dropped by the forwarder, so
values of up to 1 MiB are never held. Request ids start at a random 48-bit offset drawn from the
Runtime's random, so a restarted node does not reuse the ids of its previous life.

A node that restarted does not serve until it has synced full state with a member (``gated``):
its slot map may be stale, and serving a slot that moved away while it was down would
acknowledge writes that the new owner never sees. A join reply or a member's push-pull (either
way) is such a sync; so is being alone (nobody to sync with). The same holds for a node built
with ``sync_first`` (:class:`kvcore.node.Node`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from zlib import crc32

from kvcore import errors
from kvcore.dispatch import Handler
from kvcore.messages import Asking, Delete, Forward, ForwardReply, Get, Put, Reply
from kvcore.metrics import NodeStats
from kvcore.node import dedup
from kvcore.node.dedup import DedupCache
from kvcore.node.ownership import Ownership
from kvcore.runtime import Runtime, TimerHandle
from kvcore.slots import NUM_SLOTS, key_slot
from kvcore.states import State
from kvcore.store import LocalStore

if TYPE_CHECKING:
    from kvcore.config import NodeConfig
    from kvcore.membership import Membership
    from kvcore.node.migration import Migration

ReplyFn = Callable[[Reply], None]

OK = Reply()
#: NodeStats.count_op's key for an operation that succeeded, by type
_OK_KEYS: dict[type, str] = {Get: "Get ok", Put: "Put ok", Delete: "Delete ok"}
#: the same for a forwarded operation this node served (:meth:`Router.on_forward`)
_FORWARDED_OK_KEYS: dict[type, str] = {Get: "Get(forwarded) ok", Put: "Put(forwarded) ok"}
#: ``Reply(value=v)`` without keyword parsing (positional: value, error, message), for the reads
#: every Get answers
_value_reply: Callable[[bytes, str, str], Reply] = Reply._make  # type: ignore[attr-defined]
#: ``Forward(request_id=rid, op=op)`` without keyword parsing, and the same for ForwardReply
_make_forward: Callable[[int, Any], Forward] = Forward._make  # type: ignore[attr-defined]
_make_forward_reply: Callable[[int, Reply], ForwardReply] = ForwardReply._make  # type: ignore[attr-defined]


#: :meth:`Router._route`'s ``owner`` when the caller has not read it (None is "no owner")
_LOOK_UP: Any = object()


def error_reply(err: errors.StoreError) -> Reply:
    """The Reply that carries a store error to the client."""
    return Reply(error=err.code, message=err.message)


#: a forward waiting for its reply: (reply, timer, destination, operation name); a plain tuple,
#: built with no call on the path every forward takes
_Pending = tuple[ReplyFn, TimerHandle, str, str]


class Router:
    """A node's client path: validate, route, apply or forward, relay the owner's reply."""

    def __init__(
        self,
        node_id: str,
        runtime: Runtime,
        config: NodeConfig,
        store: LocalStore,
        stats: NodeStats,
        ownership: Ownership,
        membership: Membership,
        migration: Migration,
        send: Callable[[str, Any], None],
        first_request_id: int,
        apply: Callable[[Get | Put | Delete], Reply] | None = None,
    ) -> None:
        self.id = node_id
        self.rt = runtime
        self.config = config
        self.store = store
        self.stats = stats
        self.ownership = ownership
        self.membership = membership
        self.migration = migration
        #: slot -> target of the slots migrating out (the migration's own dict, never replaced)
        self.migrating = migration.migrating
        self.send = send
        #: applies an operation here: the node's ``apply`` (a subclass may wrap it), by default
        #: :meth:`apply_local`
        self.apply: Callable[[Get | Put | Delete], Reply] = apply or self.apply_local
        self._plain_apply = apply is None
        #: set while this node is a member of a replicated group: a request forwarded to it goes
        #: through the group (its log, ReadIndex), never to the local store, which only the log
        #: may change (a node outside the group forwards to a member by the slot map)
        self.group_submit: Callable[[Get | Put | Delete, ReplyFn], None] | None = None
        #: set while this node serves no key at all (it lost its state: ``Node._on_group_traffic``):
        #: the refusal a forwarded or asked request gets too, as a client's does
        self.refusal: Callable[[], errors.StoreError] | None = None
        #: a durable store answers nothing before what it wrote is durable (see :meth:`settle`)
        self._hold = config.durable
        #: :meth:`on_forward` may serve the commonest forwards at once (its fast path); False
        #: sends every forward down the general path (tests compare the two)
        self._serve_fast = self._plain_apply and not self._hold
        #: a restarted node that has not synced with a member yet answers 503 try_again
        self.gated = False
        self.pending: dict[int, _Pending] = {}
        self._next_rid = first_request_id
        #: (src, request_id) -> the reply to a forwarded or asked write, for duplicates
        self.recent: DedupCache[tuple[str, int], Reply] = DedupCache(
            config.dedup_window, dedup.DEDUP_MAX_ENTRIES
        )
        #: (src, request_id) -> whom else to answer, for a forwarded write whose answer is not
        #: known yet (it waits for the storage, or for the importer of a migrating slot): a
        #: duplicate waits for that answer instead of serving the write again, twice applied
        self.awaiting: dict[tuple[str, int], list[ReplyFn]] = {}

    def handlers(self) -> Mapping[type, Handler]:
        """The peer messages this component takes."""
        return {Forward: self.on_forward, ForwardReply: self.on_forward_reply, Asking: self.on_asking}

    # --- client requests ---------------------------------------------------------------------

    def on_client_request(self, op: Any, reply: ReplyFn) -> None:
        """Handle a client operation; ``reply`` is called exactly once, now or later."""
        t = type(op)
        name = t.__name__
        config = self.config
        # The common request passes validate() at a glance (exact types, sizes within limits,
        # not gated); anything else takes validate() and the gate, which word every refusal.
        if (
            (t is Get or t is Delete or (
                t is Put and type(op.value) is bytes and len(op.value) <= config.max_value_bytes
            ))
            and type(key := op.key) is bytes
            and 0 < len(key) <= config.max_key_bytes
            and not self.gated
        ):
            pass
        else:
            try:
                key = self.validate(op)
                if self.gated and self.still_gated():
                    raise errors.TryAgain(f"node {self.id} restarted and is syncing with the cluster")
            except errors.StoreError as err:
                self.stats.count_op(name, err.code)
                reply(error_reply(err))
                return
        self._route(op, key, key_slot(key), name, reply)

    def _route(
        self, op: Any, key: bytes, slot: int, name: str, reply: ReplyFn, owner: Any = _LOOK_UP
    ) -> None:
        """A valid operation on ``key`` (in ``slot``), served here or forwarded to the owner
        (``owner``: the slot's owner when the caller has just read it from the map)."""
        if owner is _LOOK_UP:
            owner = self.ownership.slot_map.owner(slot)
        if owner == self.id:
            if slot not in self.migrating:
                r = self.apply(op)
                self.stats.count_op(name, r.error or "ok")
                self.settle(r, reply)
                return

            def counted(r: Reply) -> None:
                self.stats.count_op(name, r.error or "ok")
                reply(r)

            self.serve_migrating(op, key, slot, name, counted)
            return
        if owner is None:
            e: errors.StoreError = errors.SlotUnassigned(f"slot {slot} has no owner")
        else:
            m = self.membership.members.get(owner)  # Membership.state_of, inline
            state = None if m is None else m.state
            if state == State.ALIVE or state == State.SUSPECT:
                self.forward(owner, op, name, reply)
                return
            if state is None:
                e = errors.OwnerDown(f"slot {slot} is owned by {owner}, which is not a known member")
            else:
                e = errors.OwnerDown(f"slot {slot} is owned by {owner}, which is {state}")
        self.stats.count_op(name, e.code)
        reply(error_reply(e))

    def answer_now(self, op: Get | Put | Delete, reply: ReplyFn) -> Reply | None:
        """:meth:`on_client_request` with a synchronous answer for the commonest case: the Reply
        itself (``reply`` is not called) when this node answers ``op`` at once from its own
        store; otherwise None, and the request took :meth:`on_client_request`'s path, which
        calls ``reply`` exactly once, now or later. Either way it is counted as that path
        counts it, and every refusal and forward is that path's.

        The Reply comes back for a well-formed operation within the limits, this node not
        gated, its slot owned here and not migrating out. A valid operation for another slot
        goes on to be routed without its slot computed twice."""
        t = type(op)
        config = self.config
        if (
            self.gated
            or self._hold  # (its answers wait for the storage: settle)
            or not (t is Get or t is Delete or (
                type(op) is Put and type(op.value) is bytes
                and len(op.value) <= config.max_value_bytes
            ))
            or type(key := op.key) is not bytes
            or not 0 < len(key) <= config.max_key_bytes
        ):
            self.on_client_request(op, reply)
            return None
        slot = crc32(key) % NUM_SLOTS if 0x7B not in key else key_slot(key)  # key_slot, inline
        owner = self.ownership.slot_map._owners[slot]  # SlotMap.owner, inline
        if owner != self.id:
            # _route's choice for a live (or suspect) owner, inline: every request for another
            # node's slot takes it straight to forward (tests/kvcore/test_answer_now.py holds it
            # to the door's path)
            if (
                owner is not None
                and (m := self.membership.members.get(owner)) is not None
                and ((state := m.state) == State.ALIVE or state == State.SUSPECT)
            ):
                self.forward(owner, op, t.__name__, reply)
                return None
            self._route(op, key, slot, t.__name__, reply, owner)
            return None
        if slot in self.migrating:
            self._route(op, key, slot, t.__name__, reply, owner)
            return None
        # apply_local's commonest cases and count_op, inline
        if t is Get and self._plain_apply:
            v = self.store.get(key)
            r = _value_reply(v, "", "") if v is not None else error_reply(errors.NotFound.of(key))
        elif t is Put and self._plain_apply:
            self.store.set(key, op.value)  # type: ignore[union-attr]
            r = OK
        else:
            r = self.apply(op)
        k = _OK_KEYS[t] if not r.error else f"{t.__name__} {r.error}"
        ops = self.stats.ops
        ops[k] = ops.get(k, 0) + 1
        return r

    def settle(self, r: Reply, reply: ReplyFn) -> None:
        """``reply(r)`` for an operation this node applied: at once, or, on a durable node, once
        everything it has written so far is durable (``Storage.on_durable``: after the flush that
        ends the loop turn in realnet, group commit; after the flush in the sim with a sync time).
        So no write is acknowledged before a crash would keep it, and no read answers with a
        write a crash could still take back (a Get waits for the flush that carries what it
        read; Redis's ``appendfsync always`` answers the writer only, the reader at once)."""
        if self._hold:
            self.rt.storage.on_durable(lambda: reply(r))
        else:
            reply(r)

    def still_gated(self) -> bool:
        if self.membership.joined or self.membership.synced:
            self.gated = False
        return self.gated

    def validate(self, op: Any) -> bytes:
        """The operation's key, once the operation is known to be well-formed and within limits."""
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

    def apply_local(self, op: Get | Put | Delete) -> Reply:
        """Apply an operation to the local store (the caller checked ownership)."""
        t = type(op)
        if t is Get:
            v = self.store.get(op.key)
            if v is None:
                return error_reply(errors.NotFound.of(op.key))
            return _value_reply(v, "", "")
        if t is Put:
            self.store.set(op.key, op.value)  # type: ignore[union-attr]
            return OK
        if self.store.delete(op.key):
            return OK
        return error_reply(errors.NotFound.of(op.key))

    def forward(self, owner: str, op: Any, name: str, reply: ReplyFn, asking: bool = False) -> None:
        """Send ``op`` to ``owner`` and relay its reply, or a 504 once ``forward_timeout`` passes."""
        rid = self._next_rid
        self._next_rid = rid + 1
        timer = self.rt.call_later(self.config.forward_timeout, lambda: self._forward_timed_out(rid))
        self.pending[rid] = (reply, timer, owner, name)
        self.stats.forwards_sent += 1
        self.send(owner, Asking(request_id=rid, op=op) if asking else _make_forward(rid, op))

    def serve_migrating(self, op: Any, key: bytes, slot: int, name: str, reply: ReplyFn) -> None:
        """We own ``slot`` and are moving it out: serve keys we hold, ask the target for others."""
        if key in self.migration.in_flight:
            reply(error_reply(errors.TryAgain(f"key {key!r} is being moved to {self.migrating[slot]}")))
        elif key in self.store:
            self.settle(self.apply(op), reply)
        else:
            self.forward(self.migrating[slot], op, name, reply, asking=True)

    def _forward_timed_out(self, rid: int) -> None:
        p = self.pending.pop(rid, None)
        if p is None:
            return
        reply, _timer, dst, op_name = p
        self.stats.forward_timeouts += 1
        e = errors.ForwardTimeout(
            f"node {dst} did not answer within {self.config.forward_timeout:g}s"
        )
        self.stats.count_op(op_name, e.code)
        reply(error_reply(e))

    def fail_pending(self, why: errors.StoreError) -> None:
        """Answer every pending forward with ``why`` (the node stops: the outcome is unknown)."""
        pending, self.pending = self.pending, {}
        for reply, timer, _dst, _op_name in pending.values():
            timer.cancel()
            reply(error_reply(why))

    # --- peer messages -----------------------------------------------------------------------

    def on_forward(self, src: str, msg: Forward) -> None:
        """Serve a request another node forwarded to us as the slot's owner (never re-forwarded)."""
        self.stats.forwards_received += 1
        rid = msg.request_id
        key = (src, rid)
        op = msg.op
        t = type(op)
        write = t is not Get
        # Only writes are remembered (request ids are never reused), so a Get is never found.
        if write:
            seen = self.recent.get(key, self.rt.now())
            if seen is not None:
                self.stats.forward_duplicates += 1
                self.settle(seen, self._reply_to(src, rid))
                return
            waiting = self.awaiting.get(key)
            if waiting is not None:
                self.stats.forward_duplicates += 1
                waiting.append(self._reply_to(src, rid))
                return
        # The commonest forward, served at once as the general path below serves it: a Get or
        # a Put within the limits, for a slot owned here and not migrating, on a node that
        # applies to its own store and answers at once (not gated, not refusing, no group, not
        # durable). tests/kvcore/test_forward_fast.py holds the two paths to the same answers,
        # counts, store and memory of writes.
        config = self.config
        if (
            self._serve_fast
            and (t is Get or (
                type(op) is Put and type(op.value) is bytes and len(op.value) <= config.max_value_bytes
            ))
            and type(k := op.key) is bytes
            and 0 < len(k) <= config.max_key_bytes
            and not self.gated
            and self.refusal is None
            and self.group_submit is None
        ):
            slot = crc32(k) % NUM_SLOTS if 0x7B not in k else key_slot(k)  # key_slot, inline
            # (SlotMap.owner, inline)
            if self.ownership.slot_map._owners[slot] == self.id and slot not in self.migrating:
                if t is Get:
                    v = self.store.get(k)
                    r = _value_reply(v, "", "") if v is not None else error_reply(errors.NotFound.of(k))
                else:
                    self.store.set(k, op.value)  # type: ignore[union-attr]
                    r = OK
                c = _FORWARDED_OK_KEYS[t] if not r.error else f"{t.__name__}(forwarded) {r.error}"
                ops = self.stats.ops  # count_op, inline
                ops[c] = ops.get(c, 0) + 1
                self.send(src, _make_forward_reply(rid, r))
                if write:
                    self.recent.put(key, r, self.rt.now())
                return
        if write:
            self.awaiting[key] = []
        name = t.__name__
        reply_to_src = self._reply_to(src, rid)

        def answer(r: Reply) -> None:
            """The one answer to this request, and to the duplicates that waited for it."""
            self.stats.count_op(f"{name}(forwarded)", r.error or "ok")
            reply_to_src(r)
            if write:
                self.recent.put(key, r, self.rt.now())
                for more in self.awaiting.pop(key):
                    more(r)

        try:
            k = self.validate(op)
            if self.refusal is not None:
                raise self.refusal()
            if self.gated and self.still_gated():
                raise errors.TryAgain(f"node {self.id} restarted and is syncing with the cluster")
        except errors.StoreError as e:
            answer(error_reply(e))
            return
        if self.group_submit is not None:
            # every member of the group serves every slot, through the group (a write through
            # the local store would live on this replica only, a read from it could be stale)
            self.group_submit(op, answer)
            return
        slot = key_slot(k)
        owner = self.ownership.slot_map.owner(slot)
        if owner != self.id:
            # Never forward a forwarded request: the maps disagree; say so.
            answer(error_reply(errors.WrongNode(
                f"node {self.id} does not own slot {slot}; its map says {owner or 'nobody'}"
            )))
        elif slot in self.migrating:
            self.serve_migrating(op, k, slot, name, answer)
        else:
            self.settle(self.apply(op), answer)

    def _reply_to(self, src: str, rid: int) -> ReplyFn:
        """What answers ``src``'s request ``rid``: a ForwardReply sent back to it."""

        def reply_to_src(r: Reply) -> None:
            self.send(src, ForwardReply(request_id=rid, reply=r))

        return reply_to_src

    def on_asking(self, src: str, msg: Asking) -> None:
        """The owner of a migrating slot asks us (the importer) to serve a key it does not hold."""
        op = msg.op
        rid = msg.request_id
        key = (src, rid)
        # a write asked twice (the network duplicated the Asking) is answered from memory, as a
        # forwarded one is: applied again, it could undo a write that came between
        write = type(op) is not Get
        seen = self.recent.get(key, self.rt.now()) if write else None
        if seen is not None:
            self.stats.forward_duplicates += 1
            self.settle(seen, lambda r: self.send(src, ForwardReply(request_id=rid, reply=r)))
            return
        try:
            k = self.validate(op)
            if self.refusal is not None:
                raise self.refusal()
        except errors.StoreError as e:
            r = error_reply(e)
        else:
            if self.group_submit is not None:
                # a group moves no slot, and its store changes only through its log
                r = error_reply(errors.WrongNode(f"node {self.id} serves through its replicated group, "
                                                 "which moves no slot"))
            elif (self.migration.importing.get(slot := key_slot(k)) == src
                  or self.ownership.slot_map.owner(slot) == self.id):
                r = self.apply(op)
            else:
                r = error_reply(errors.WrongNode(f"node {self.id} is not importing slot {slot} from {src}"))
        if write:
            self.recent.put(key, r, self.rt.now())
        self.stats.count_op(f"{type(op).__name__}(asking)", r.error or "ok")
        # (a refusal read and wrote nothing, but need not overtake what did)
        self.settle(r, lambda r: self.send(src, ForwardReply(request_id=rid, reply=r)))

    def on_forward_reply(self, src: str, msg: ForwardReply) -> None:
        """The owner's answer to one of our forwards: relay it to the waiting client."""
        p = self.pending.get(msg.request_id)
        if p is None or p[2] != src:
            # late (after the timeout), duplicated, or from the wrong peer: drop
            self.stats.late_replies += 1
            return
        del self.pending[msg.request_id]
        reply, timer, _dst, op_name = p
        timer.cancel()
        c = f"{op_name} {msg.reply.error or 'ok'}"
        ops = self.stats.ops  # count_op, inline
        ops[c] = ops.get(c, 0) + 1
        reply(msg.reply)


__all__ = ["OK", "ReplyFn", "Router", "error_reply"]
