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

Live slot migration (Redis Cluster's MIGRATING / IMPORTING, driven by an operator or a sim
verb through :meth:`Node.begin_migrate`, :meth:`Node.begin_import`, :meth:`Node.migrate_keys`,
:meth:`Node.finish_import`):

- The source keeps owning the slot while it moves. A request for a key it still holds is served
  there; for a key it does not hold (moved already, or never there) it sends the request on to
  the target as :class:`~kvcore.messages.Asking` (Redis's ASK), and the target, which is
  importing the slot, serves it. So each key lives on exactly one node at any time, and every
  write lands on exactly one node.
- Keys move in batches (:class:`~kvcore.messages.MigrateKeys`). While a batch is in flight its
  keys stay in the source's store but are frozen: requests for them answer 503 ``try_again``
  (certainly not applied), as Redis does, until the target's MigrateAck lets the source delete
  them, or a failure unfreezes them. The target remembers batches it stored, so a duplicated batch is not applied
  again (it would bring old values back).
- At the end the target claims the slot with a config epoch above every epoch it knows; the
  claim spreads by gossip and the epoch rule alone decides ownership, so no slot is left without
  an owner or with two. The source stops migrating as soon as it hears the claim.

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
from kvcore.messages import (
    Asking,
    Delete,
    Forward,
    ForwardReply,
    Get,
    MigrateAck,
    MigrateKeys,
    Put,
    Reply,
)
from kvcore.metrics import NodeStats
from kvcore.runtime import Runtime, TimerHandle
from kvcore.slots import MAX_SLOT, SlotMap, SlotRangeError, format_ranges, key_slot, parse_ranges
from kvcore.store import LocalStore

ReplyFn = Callable[[Reply], None]

OK = Reply()

#: most forwarded writes whose replies the owner remembers for dedup (each entry is small)
DEDUP_MAX_ENTRIES = 100_000
#: durable storage keys of open migrations: "mark:migrating:<slot>" -> target, ...importing -> source
MARK_PREFIX = "mark:"
#: durable storage key of the slot map, saved whenever a claim above the configured epoch lands
SLOT_MAP_KEY = "slotmap"
#: durable storage keys of unacknowledged migration batches: "batch:<id>" -> "slot target hexkeys"
BATCH_PREFIX = "batch:"
#: sends of one migration batch before its caller hears that it is still unacknowledged
BATCH_TRIES = 3


def error_reply(err: errors.StoreError) -> Reply:
    return Reply(error=err.code, message=err.message)


@dataclass(slots=True)
class _Batch:
    slot: int
    target: str
    items: list[tuple[bytes, bytes]]
    timer: TimerHandle | None
    done: Callable[[int, str], None]
    tries: int = 0


def _ignore(moved: int, error: str) -> None:
    pass


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
        self._seeding = False
        #: claims at or below this epoch come from the static configuration and are not saved
        self._base_epoch = cluster.epoch if cluster is not None else 1
        self.store = LocalStore.load(runtime.storage) if self.config.durable else LocalStore()
        self.stats = NodeStats()
        self.running = False
        self._gated = False
        self._pending: dict[int, _Pending] = {}
        self._next_rid = runtime.random.getrandbits(48)
        # (src, request_id) -> (expires_at, reply), oldest first
        self._recent: OrderedDict[tuple[str, int], tuple[float, Reply]] = OrderedDict()
        #: live migration: slot -> target (we own it and are moving it out) / slot -> source
        self.migrating: dict[int, str] = {}
        self.importing: dict[int, str] = {}
        self._in_flight: dict[bytes, None] = {}
        self._batches: dict[int, _Batch] = {}
        self._next_batch = runtime.random.getrandbits(32)
        # (src, batch) -> expiry, for batches already stored (duplicates are not applied again)
        self._stored_batches: OrderedDict[tuple[str, int], float] = OrderedDict()
        static: list[tuple[str, str, str, str, int]] = []
        if cluster is not None:
            cluster.validate(self.id)
            spec = cluster.node(self.id)
            addr, peer_addr = addr or spec.addr, peer_addr or spec.peer_addr
            static = cluster.static_members()
            # the static map is known in full: copy it rather than re-deriving it claim by claim
            self.slot_map = cluster.slot_map()
            self._seeding = True
        elif not self.seeds:
            # The standalone node: a one-node cluster that owns every slot.
            static = [(self.id, addr or "", peer_addr or "", f"0-{MAX_SLOT}", 1)]
        self.membership = Membership(runtime, self._send, swim or SwimConfig.lan(), addr or "", peer_addr or "")
        self.membership.listeners.append(self._on_member_event)
        self._on_member_event("update", self.id, self.membership.me)
        self.membership.add_static(static)
        self._seeding = False
        # What an earlier life of this node learned of reconfigurations (Redis keeps nodes.conf):
        # the slot map as it was, so that a restarted node does not serve slots that moved away
        # while it was down, and our own latest claim, so that we keep advertising slots we took.
        saved = runtime.storage.get(SLOT_MAP_KEY)
        if saved:
            try:
                old = SlotMap.from_text(saved.decode())
            except (SlotRangeError, UnicodeDecodeError):
                self.stats.malformed += 1
            else:
                for lo, hi, owner_id in old.runs():
                    for slot in range(lo, hi + 1):
                        self.slot_map.claim([(slot, slot)], owner_id, old.epoch(slot))
        claim = self.membership.stored_claim()
        if claim is not None and claim[1] > self.membership.me.epoch:
            self.membership.me.slots, self.membership.me.epoch = claim
            self._on_member_event("update", self.id, self.membership.me)
        if self.config.durable:
            # open migrations last, once the slot map is rebuilt (building it must not be taken
            # for hearing that a migrating slot changed hands)
            self._reload_batches()
            for name, value in runtime.storage.items(MARK_PREFIX):
                kind, slot_s = name[len(MARK_PREFIX):].split(":")
                (self.migrating if kind == "migrating" else self.importing)[int(slot_s)] = value.decode()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self.membership.start(self.seeds)
        # A restarted node does not serve until it has synced full state with a member: its slot
        # map may be stale, and serving a slot that moved away while it was down would
        # acknowledge writes that the new owner never sees. There is no time limit on this on
        # purpose: a restarted node cut off from every peer stays unavailable (503 try_again)
        # rather than risk serving stale data.
        self._gated = self.membership.restarted and not self.membership.joined
        for bid in sorted(self._batches):  # batches left unacknowledged by a crash: resend them
            self._send_batch(bid)

    def _still_gated(self) -> bool:
        if self.membership.joined:
            self._gated = False
        return self._gated

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
            if self._gated and self._still_gated():
                raise errors.TryAgain(f"node {self.id} restarted and is syncing with the cluster")
        except errors.StoreError as err:
            self.stats.count_op(name, err.code)
            reply(error_reply(err))
            return
        slot = key_slot(key)
        owner = self.slot_map.owner(slot)
        if owner == self.id:
            if slot not in self.migrating:
                r = self.apply(op)
                self.stats.count_op(name, r.error or "ok")
                reply(r)
                return

            def counted(r: Reply) -> None:
                self.stats.count_op(name, r.error or "ok")
                reply(r)

            self._serve_migrating(op, key, slot, name, counted)
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

    def _forward(self, owner: str, op: Any, name: str, reply: ReplyFn, asking: bool = False) -> None:
        rid = self._next_rid
        self._next_rid += 1
        timer = self.rt.call_later(self.config.forward_timeout, lambda: self._forward_timed_out(rid))
        self._pending[rid] = _Pending(reply, timer, owner, name)
        self.stats.forwards_sent += 1
        self._send(owner, Asking(request_id=rid, op=op) if asking else Forward(request_id=rid, op=op))

    def _serve_migrating(self, op: Any, key: bytes, slot: int, name: str, reply: ReplyFn) -> None:
        """We own ``slot`` and are moving it out: serve keys we hold, ask the target for others."""
        if key in self._in_flight:
            reply(error_reply(errors.TryAgain(f"key {key!r} is being moved to {self.migrating[slot]}")))
        elif key in self.store:
            reply(self.apply(op))
        else:
            self._forward(self.migrating[slot], op, name, reply, asking=True)

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
        elif t is Asking:
            self._on_asking(src, msg)
        elif t is MigrateKeys:
            self._on_migrate_keys(src, msg)
        elif t is MigrateAck:
            self._on_migrate_ack(src, msg)
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
        rid = msg.request_id

        def answer(r: Reply) -> None:
            self.stats.count_op(f"{name}(forwarded)", r.error or "ok")
            if type(op) is not Get:
                recent = self._recent
                recent[key] = (self.rt.now() + self.config.dedup_window, r)
                if len(recent) > DEDUP_MAX_ENTRIES:
                    recent.popitem(last=False)
            self._send(src, ForwardReply(request_id=rid, reply=r))

        try:
            k = self._validate(op)
            if self._gated and self._still_gated():
                raise errors.TryAgain(f"node {self.id} restarted and is syncing with the cluster")
        except errors.StoreError as e:
            answer(error_reply(e))
            return
        slot = key_slot(k)
        owner = self.slot_map.owner(slot)
        if owner != self.id:
            # Never forward a forwarded request: the maps disagree; say so.
            answer(error_reply(errors.WrongNode(
                f"node {self.id} does not own slot {slot}; its map says {owner or 'nobody'}"
            )))
        elif slot in self.migrating:
            self._serve_migrating(op, k, slot, name, answer)
        else:
            answer(self.apply(op))

    def _on_asking(self, src: str, msg: Asking) -> None:
        """The owner of a migrating slot asks us (the importer) to serve a key it does not hold."""
        op = msg.op
        try:
            k = self._validate(op)
        except errors.StoreError as e:
            r = error_reply(e)
        else:
            slot = key_slot(k)
            if self.importing.get(slot) == src or self.slot_map.owner(slot) == self.id:
                r = self.apply(op)
            else:
                r = error_reply(errors.WrongNode(f"node {self.id} is not importing slot {slot} from {src}"))
        self.stats.count_op(f"{type(op).__name__}(asking)", r.error or "ok")
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

    # --- live migration (the admin side) ------------------------------------------------------

    def begin_import(self, slot: int, source: str) -> None:
        """Mark ``slot`` as importing from ``source`` (Redis: SETSLOT IMPORTING)."""
        self._check_slot(slot)
        if self.slot_map.owner(slot) == self.id:
            raise errors.Conflict(f"node {self.id} already owns slot {slot}")
        if self.importing.get(slot, source) != source:
            raise errors.Conflict(f"node {self.id} is already importing slot {slot} from {self.importing[slot]}")
        self._mark("importing", slot, source)

    def begin_migrate(self, slot: int, target: str) -> None:
        """Mark ``slot`` as migrating to ``target`` (Redis: SETSLOT MIGRATING)."""
        self._check_slot(slot)
        if self.slot_map.owner(slot) != self.id:
            raise errors.Conflict(f"node {self.id} does not own slot {slot}")
        if target == self.id:
            raise errors.Conflict(f"node {self.id} cannot migrate slot {slot} to itself")
        if self.migrating.get(slot, target) != target:
            raise errors.Conflict(f"slot {slot} is already migrating from {self.id} to {self.migrating[slot]}")
        self._mark("migrating", slot, target)

    def _mark(self, kind: str, slot: int, peer: str | None) -> None:
        """Set or clear an open-migration mark, durably when the node is durable."""
        table = self.migrating if kind == "migrating" else self.importing
        if peer is None:
            table.pop(slot, None)
        else:
            table[slot] = peer
        if self.config.durable:
            name = f"{MARK_PREFIX}{kind}:{slot}"
            if peer is None:
                self.rt.storage.delete(name)
            else:
                self.rt.storage.put(name, peer.encode())

    def migrate_keys(self, slot: int, count: int, done: Callable[[int, str], None]) -> None:
        """Move up to ``count`` keys of a migrating slot to its target.

        ``done(moved, error)`` is called once: ``moved`` is 0 with no error when the slot has no
        keys left here; 0 with an error sentence when the target refused the batch (its keys are
        unfrozen: the target certainly did not store them) or when no acknowledgement came after
        ``BATCH_TRIES`` sends. A batch without an acknowledgement has an unknown outcome (the
        target may have stored it and the ack been lost), so its keys stay frozen and the *same*
        batch is sent again by the next call, which the target answers without applying it twice.
        Unfreezing them instead would let a write or delete land here while the target kept the
        old copy, which it would serve once it owns the slot.
        """
        target = self.migrating.get(slot)
        if target is None:
            done(0, f"slot {slot} is not migrating from node {self.id}")
            return
        pending = next((bid for bid, b in self._batches.items() if b.slot == slot), None)
        if pending is not None:
            b = self._batches[pending]
            b.done, b.tries = done, 0
            self._send_batch(pending)
            return
        keys = self.store.keys_in_slot(slot, limit=max(1, count))
        if not keys:
            done(0, "")
            return
        items: list[tuple[bytes, bytes]] = []
        budget = self.config.max_frame_bytes // 2  # a batch must fit in one peer frame
        for k in keys:
            v = self.store.get(k)
            assert v is not None
            if items and budget - (len(k) + len(v)) < 0:
                break
            budget -= len(k) + len(v)
            self._in_flight[k] = None  # frozen until the target confirms
            items.append((k, v))
        keys = [k for k, _ in items]
        bid = self._next_batch
        self._next_batch = (self._next_batch + 1) & 0xFFFFFFFF
        self._batches[bid] = _Batch(slot, target, items, None, done)
        if self.config.durable:
            # the freeze must outlive a crash: after a restart the same batch is sent again
            # (the target may hold it already), never unfrozen by forgetting it
            self.rt.storage.put(f"{BATCH_PREFIX}{bid}",
                                f"{slot} {target} {','.join(k.hex() for k in keys)}".encode())
        self._send_batch(bid)

    def _forget_batch(self, bid: int) -> None:
        if self.config.durable:
            self.rt.storage.delete(f"{BATCH_PREFIX}{bid}")

    def _reload_batches(self) -> None:
        """After a restart: the batches that were unacknowledged, frozen again, to be resent."""
        for name, raw in self.rt.storage.items(BATCH_PREFIX):
            bid = int(name[len(BATCH_PREFIX):])
            slot_s, target, keys_s = raw.decode().split(" ")
            items = []
            for kh in keys_s.split(","):
                k = bytes.fromhex(kh)
                v = self.store.get(k)
                if v is not None:
                    self._in_flight[k] = None
                    items.append((k, v))
            self._batches[bid] = _Batch(int(slot_s), target, items, None, _ignore)

    def _send_batch(self, bid: int) -> None:
        b = self._batches[bid]
        b.tries += 1
        if b.timer is not None:
            b.timer.cancel()
        b.timer = self.rt.call_later(self.config.forward_timeout, lambda: self._batch_unanswered(bid))
        self._send(b.target, MigrateKeys(batch=bid, slot=b.slot, keys=tuple(k for k, _ in b.items),
                                         values=tuple(v for _, v in b.items)))

    def _batch_unanswered(self, bid: int) -> None:
        b = self._batches.get(bid)
        if b is None:
            return
        if b.tries < BATCH_TRIES:
            self._send_batch(bid)
            return
        done, b.done = b.done, _ignore
        done(0, f"moving {len(b.items)} keys of slot {b.slot} to {b.target} was not acknowledged after "
                f"{b.tries} tries; they stay frozen until it is")

    def _batch_failed(self, bid: int, why: str) -> None:
        b = self._batches.pop(bid, None)
        if b is None:
            return
        self._forget_batch(bid)
        if b.timer is not None:
            b.timer.cancel()
        for k, _ in b.items:  # unfreeze: they never left (nobody could write them: try_again)
            del self._in_flight[k]
        b.done(0, f"moving {len(b.items)} keys of slot {b.slot} to {b.target} {why}")

    def _on_migrate_keys(self, src: str, msg: MigrateKeys) -> None:
        now = self.rt.now()
        seen = self._stored_batches
        while seen and next(iter(seen.values())) <= now:
            seen.popitem(last=False)
        if (src, msg.batch) in seen:
            self._send(src, MigrateAck(batch=msg.batch, stored=len(msg.keys), error=""))
            return
        if self.importing.get(msg.slot) != src:
            self._send(src, MigrateAck(batch=msg.batch, stored=0,
                                       error=f"node {self.id} is not importing slot {msg.slot} from {src}"))
            return
        if len(msg.keys) != len(msg.values) or any(key_slot(k) != msg.slot for k in msg.keys):
            self.stats.malformed += 1
            self._send(src, MigrateAck(batch=msg.batch, stored=0, error="malformed batch"))
            return
        for k, v in zip(msg.keys, msg.values, strict=True):
            self.store.set(k, v)
        seen[(src, msg.batch)] = now + self.config.dedup_window
        if len(seen) > DEDUP_MAX_ENTRIES:
            seen.popitem(last=False)
        self._send(src, MigrateAck(batch=msg.batch, stored=len(msg.keys), error=""))

    def _on_migrate_ack(self, src: str, msg: MigrateAck) -> None:
        b = self._batches.get(msg.batch)
        if b is None or b.target != src:
            self.stats.late_replies += 1
            return
        if msg.error:
            self._batch_failed(msg.batch, f"was refused: {msg.error}")
            return
        del self._batches[msg.batch]
        self._forget_batch(msg.batch)
        if b.timer is not None:
            b.timer.cancel()
        for k, _ in b.items:
            del self._in_flight[k]
            self.store.delete(k)
        b.done(len(b.items), "")

    def finish_import(self, slots: list[int], min_epoch: int = 0) -> int:
        """Claim the imported ``slots`` at a new config epoch above every epoch we know (and at
        least ``min_epoch``, for an orchestrator that knows of newer claims); returns it.

        Redis: SETSLOT NODE on the target, which bumps its config epoch. The claim spreads by
        gossip; the source stops migrating when it hears it.
        """
        for slot in slots:
            self._check_slot(slot)
        epoch = max(self.slot_map.max_epoch() + 1, self.membership.me.epoch + 1, min_epoch)
        for slot in slots:
            self._mark("importing", slot, None)
        self.claim_slots(format_ranges((s, s) for s in slots), epoch)
        return epoch

    def abort_migration(self, slot: int, force: bool = False) -> None:
        """Roll back an open migration of ``slot`` on this node (``fix``).

        On the importing side, the keys it received for a slot it does not own are dropped: the
        source still has them (it deletes a key only once it is acknowledged... and then the
        slot would have to be finished, not aborted), and stale copies must never be served.
        The migrating side refuses while a batch is unacknowledged (its outcome is unknown),
        unless ``force``: for a target that is gone for good (left or forgotten), whose copies
        can never be served, so unfreezing the batch's keys here is safe.
        """
        self._check_slot(slot)
        pending = [bid for bid, b in self._batches.items() if b.slot == slot]
        if pending and not force:
            raise errors.Conflict(
                f"a batch of slot {slot} is unacknowledged on node {self.id}; finish the migration instead"
            )
        for bid in pending:
            self._batch_failed(bid, "was abandoned (forced abort)")
        if slot in self.importing and self.slot_map.owner(slot) != self.id:
            for k in self.store.keys_in_slot(slot):
                self.store.delete(k)
        self._mark("importing", slot, None)
        self._mark("migrating", slot, None)

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot <= MAX_SLOT:
            raise errors.BadRequest(f"slot {slot} is outside 0-{MAX_SLOT}")

    # --- membership ---------------------------------------------------------------------------

    def _on_member_event(self, event: str, node_id: str, m: Member) -> None:
        """Derive the slot map from what members advertise (highest epoch wins per slot)."""
        if event in ("join", "update", ALIVE) and m.slots and m.epoch > 0 and not self._seeding:
            try:
                ranges = parse_ranges(m.slots)
            except SlotRangeError:
                self.stats.malformed += 1
                return
            before = self.slot_map.version
            self.slot_map.claim(ranges, node_id, m.epoch)
            if self.slot_map.version != before and m.epoch > self._base_epoch:
                self.rt.storage.put(SLOT_MAP_KEY, self.slot_map.to_text().encode())
            if self.slot_map.version != before and self.migrating:
                # a slot we were moving out now belongs to its new owner: the move is over
                for slot in [s for s in self.migrating if self.slot_map.owner(s) not in (self.id, None)]:
                    if not any(b.slot == slot for b in self._batches.values()):
                        self._mark("migrating", slot, None)

    def meet(self, seeds: Sequence[str]) -> None:
        """Join a running cluster through ``seeds`` (``storelab cluster add-node`` / ``create``).

        Only an empty node may: one holding keys refuses with Conflict. It gives up any slots it
        claims (a standalone node owns every slot at epoch 1; keeping that claim would fight the
        cluster's) and learns the cluster's slot map from the seeds.
        """
        if self.store.count():
            raise errors.Conflict(f"node {self.id} holds {self.store.count()} keys; only an empty node can join")
        if not seeds:
            raise errors.BadRequest("give at least one seed to meet")
        if self.membership.me.slots:
            self.slot_map = SlotMap()
            self.membership.set_slots("", 0)
        self.membership.join(seeds)

    def assign_slots(self, ranges: str, epoch: int) -> None:
        """Replace this node's slot claim by ``ranges`` at ``epoch`` (``cluster create``).

        Used on fresh nodes only; ``epoch`` must be above every epoch the node knows, so the
        claim wins wherever it is heard.
        """
        if epoch <= self.slot_map.max_epoch():
            raise errors.Conflict(
                f"epoch {epoch} is not above node {self.id}'s current epoch {self.slot_map.max_epoch()}"
            )
        parsed = parse_ranges(ranges)
        # claims learned from others stay; what we held before (a standalone node's 0-16383 at
        # epoch 1) is released, so no slot is served here on an outdated claim of ours
        self.slot_map.release(self.id, epoch)
        self.slot_map.claim(parsed, self.id, epoch)
        self.membership.set_slots(format_ranges(parsed), epoch)

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
            "mode": "cluster" if len(self.membership.members) > 1 or self.cluster is not None else "standalone",
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
            "migrating": {str(k): v for k, v in sorted(self.migrating.items())},
            "importing": {str(k): v for k, v in sorted(self.importing.items())},
        }


__all__ = ["Node", "ReplyFn", "error_reply"]
