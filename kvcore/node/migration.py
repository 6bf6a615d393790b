"""Live slot migration, both sides: Redis Cluster's MIGRATING / IMPORTING, one batch at a time.

Theory of operation
-------------------
An operator (``storelab cluster``) or a sim verb moves a slot through the node's admin door
(:class:`kvcore.node.Node`): ``begin_import`` on the target, ``begin_migrate`` on the source,
``migrate_keys`` on the source until it reports no key left, ``finish_import`` on the target.
This module holds the rules of each step.

- **Marks.** ``migrating[slot] = target`` on the source, ``importing[slot] = source`` on the
  target. A durable node keeps them in storage (``mark:migrating:<slot>`` → target,
  ``mark:importing:<slot>`` → source), so a crash does not forget an open migration.
- **Guards.** A source must own the slot and may only migrate it to a member it holds alive or
  suspect (a dead target's batches could never arrive), never to itself; a target may only
  import from a member it knows and a slot it does not own. A slot already moving to or from
  another node is refused, so two orchestrators collide loudly instead of corrupting a move.
  Every refusal is :class:`~kvcore.errors.Conflict` (409), and a list of slots is checked as a
  whole before any is marked.
- **The source keeps owning the slot while it moves.** A request for a key it still holds is
  served there; for a key it does not hold, it is sent on to the target as Asking (Redis's ASK)
  and the importing target serves it (:mod:`kvcore.node.routing`). So each key lives on exactly
  one node at any time, and every write lands on exactly one node.
- **Batches** (:class:`~kvcore.messages.MigrateKeys`) hold at most ``count`` keys and at most
  half a peer frame of key and value bytes (always one key at least: the config guarantees one
  value fits), so a batch of large values still arrives. While a batch is in flight its keys
  stay in the source's store but are frozen: requests for them answer 503 ``try_again``
  (certainly not applied), as Redis does, until the target's MigrateAck lets the source delete
  them, or a refusal unfreezes them. A batch without an acknowledgement has an unknown outcome,
  so its keys stay frozen and the *same* batch is sent again (also after a restart: a durable
  node stores it as ``batch:<id>`` → ``"slot target hexkeys"``).
- **The target** stores a batch only for a slot it imports from that sender, and remembers the
  batches it stored (:class:`~kvcore.node.dedup.DedupCache`), so a duplicated batch is
  acknowledged without being applied again (it would bring old values back).
- **The end batch.** When ``migrate_keys`` finds no key of the slot left, the source sends the
  target a batch with no key: "I hold none of this slot any more". It is sent, resent and
  acknowledged like any batch, and ``migrate_keys`` reports "0 moved, no error" only once the
  target acknowledged it, so the target *knows* the source is empty (:attr:`Migration.drained`).
  A durable target keeps that receipt with its import mark (``drained:<slot>`` → source),
  acknowledges the end batch once it is durable, reads it back after a restart (only while the
  slot is still imported from that source) and drops it when the import is finished or aborted
  or keys of the slot come after it; so a finish after a restart of the target is not refused.
  Nothing is frozen or stored for it, and it holds back no abort. While the slot migrates, the
  source gains no key of it (a key it does not hold is asked of the target), so what the end
  batch says stays true until the source's mark is dropped.
- **The end.** The target claims the slots at a config epoch above every epoch it knows; the
  claim spreads by gossip and the epoch rule alone decides ownership, so no slot is left without
  an owner or with two. The target refuses to finish a slot whose source has not sent it the end
  batch (:func:`kvcore.node.guards.check_finish`: the source's keys would be orphaned), unless
  the request accepts the loss. The source drops its mark as soon as it hears the claim
  (:meth:`Migration.slots_changed_hands`), unless a batch of that slot is still unacknowledged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvcore import errors
from kvcore.bounds import MAX_ACCEPTED
from kvcore.dispatch import Handler
from kvcore.messages import MigrateAck, MigrateKeys
from kvcore.metrics import NodeStats
from kvcore.node import dedup
from kvcore.node.dedup import DedupCache
from kvcore.node.ownership import Ownership
from kvcore.runtime import Runtime, TimerHandle
from kvcore.slots import MAX_SLOT, key_slot
from kvcore.states import State
from kvcore.store import LocalStore

if TYPE_CHECKING:
    from kvcore.config import NodeConfig
    from kvcore.membership import Membership

#: durable storage keys of open migrations: "mark:migrating:<slot>" -> target, ...importing -> source
MARK_PREFIX = "mark:"
#: durable storage keys of unacknowledged migration batches: "batch:<id>" -> "slot target hexkeys"
BATCH_PREFIX = "batch:"
#: durable storage keys of end batches received: "drained:<slot>" -> the source that sent it
DRAINED_PREFIX = "drained:"
#: sends of one migration batch before its caller hears that it is still unacknowledged
BATCH_TRIES = 3

MIGRATING = "migrating"
IMPORTING = "importing"

#: ``done(moved, error)`` of :meth:`Migration.migrate_keys`
DoneFn = Callable[[int, str], None]


@dataclass(slots=True)
class _Batch:
    slot: int
    target: str
    items: list[tuple[bytes, bytes]]
    timer: TimerHandle | None
    done: DoneFn
    tries: int = 0


def _ignore(moved: int, error: str) -> None:
    pass


def check_slot(slot: int) -> None:
    """BadRequest unless ``slot`` is a slot number."""
    if not 0 <= slot <= MAX_SLOT:
        raise errors.BadRequest(f"slot {slot} is outside 0-{MAX_SLOT}")


class Migration:
    """One node's open migrations: marks, batches in flight (source) and batches stored (target)."""

    def __init__(
        self,
        node_id: str,
        runtime: Runtime,
        config: NodeConfig,
        store: LocalStore,
        stats: NodeStats,
        ownership: Ownership,
        membership: Membership,
        send: Callable[[str, Any], None],
        first_batch_id: int,
    ) -> None:
        self.id = node_id
        self.rt = runtime
        self.config = config
        self.store = store
        self.stats = stats
        self.ownership = ownership
        self.membership = membership
        self.send = send
        #: slot -> target (we own it and are moving it out) / slot -> source (we are taking it in);
        #: both dicts live as long as the node (other components hold them)
        self.migrating: dict[int, str] = {}
        self.importing: dict[int, str] = {}
        #: keys of unacknowledged batches: frozen (try_again) until the target answers
        self.in_flight: dict[bytes, None] = {}
        #: slot -> keys the target acknowledged since the slot began migrating (the abort guard,
        #: kvcore.node.guards; kept in memory: after a restart the importer's guard still holds)
        self.moved_out: dict[int, int] = {}
        #: unacknowledged batches by id; one with no items is an end batch (module docstring)
        self.batches: dict[int, _Batch] = {}
        #: slot -> the source that told us, by an end batch we acknowledged, that it holds no key
        #: of the slot any more (the finish guard, kvcore.node.guards; durable with the marks)
        self.drained: dict[int, str] = {}
        self._next_batch = first_batch_id
        #: (src, batch id) of the batches stored here: a duplicate is acknowledged, not applied
        self.stored: DedupCache[tuple[str, int], None] = DedupCache(
            config.dedup_window, dedup.DEDUP_MAX_ENTRIES
        )

    def handlers(self) -> Mapping[type, Handler]:
        """The peer messages this component takes."""
        return {MigrateKeys: self.on_migrate_keys, MigrateAck: self.on_migrate_ack}

    # --- marks -------------------------------------------------------------------------------

    def mark(self, kind: str, slot: int, peer: str | None) -> None:
        """Set or clear an open-migration mark, durably when the node is durable."""
        table = self.migrating if kind == MIGRATING else self.importing
        if kind == IMPORTING and self.drained.get(slot, peer) != peer:
            # the end batch was another source's, or the import is over (synced below)
            self._set_drained(slot, None, sync=False)
        if peer is None:
            table.pop(slot, None)
            if kind == MIGRATING:
                self.moved_out.pop(slot, None)
        else:
            table[slot] = peer
        if self.config.durable:
            name = f"{MARK_PREFIX}{kind}:{slot}"
            if peer is None:
                self.rt.storage.delete(name)
            else:
                self.rt.storage.put(name, peer.encode())
            self.rt.storage.sync()

    def _set_drained(self, slot: int, source: str | None, sync: bool = True) -> None:
        """Remember (or forget) that ``source`` sent the end batch of ``slot``; durably on a
        durable node, as the import mark it belongs to is, so a restart of this node between
        the end batch and the finish does not make the finish refused."""
        if source is None:
            if self.drained.pop(slot, None) is None:
                return
        else:
            if self.drained.get(slot) == source:
                return
            self.drained[slot] = source
        if self.config.durable:
            name = f"{DRAINED_PREFIX}{slot}"
            if source is None:
                self.rt.storage.delete(name)
            else:
                self.rt.storage.put(name, source.encode())
            if sync:
                self.rt.storage.sync()

    def begin_import(self, slots: Iterable[int], source: str) -> None:
        """Mark ``slots`` importing from ``source``; all are checked before any is marked."""
        wanted = list(slots)
        for slot in wanted:
            check_slot(slot)
        if self.membership.state_of(source) is None:
            raise errors.Conflict(f"node {self.id} knows no member {source!r} to import from")
        owner = self.ownership.slot_map.owner
        for slot in wanted:
            if owner(slot) == self.id:
                raise errors.Conflict(f"node {self.id} already owns slot {slot}")
            if self.importing.get(slot, source) != source:
                raise errors.Conflict(
                    f"slot {slot} is already importing from {self.importing[slot]} on node {self.id}"
                )
        for slot in wanted:
            self.mark(IMPORTING, slot, source)

    def begin_migrate(self, slots: Iterable[int], target: str) -> None:
        """Mark ``slots`` migrating to ``target``; all are checked before any is marked."""
        wanted = list(slots)
        for slot in wanted:
            check_slot(slot)
        if target == self.id:
            raise errors.Conflict(f"node {self.id} cannot migrate slots to itself")
        state = self.membership.state_of(target)
        if state != State.ALIVE and state != State.SUSPECT:
            raise errors.Conflict(
                f"node {self.id} does not hold {target!r} alive ({state or 'unknown'}), "
                "so it cannot migrate slots to it"
            )
        owner = self.ownership.slot_map.owner
        for slot in wanted:
            if owner(slot) != self.id:
                raise errors.Conflict(f"node {self.id} does not own slot {slot}")
            if self.migrating.get(slot, target) != target:
                raise errors.Conflict(
                    f"slot {slot} is already migrating to {self.migrating[slot]} on node {self.id}"
                )
        for slot in wanted:
            self.mark(MIGRATING, slot, target)

    def finish_import(self, slots: list[int], min_epoch: int) -> int:
        """Clear the importing marks of ``slots``; the epoch the node must claim them at."""
        for slot in slots:
            check_slot(slot)
        epoch = max(self.ownership.slot_map.max_epoch() + 1, self.membership.me.epoch + 1, min_epoch)
        if epoch > MAX_ACCEPTED:
            # never claim at an epoch the others would ignore (kvcore.bounds)
            raise errors.Conflict(
                f"the claim's epoch {epoch} would pass the largest accepted, {MAX_ACCEPTED}; "
                "some slot was claimed at an epoch near the cap"
            )
        for slot in slots:
            self.mark(IMPORTING, slot, None)
        return epoch

    def abort(self, slot: int, force: bool) -> None:
        """Roll back the open migration of ``slot`` (see :meth:`kvcore.node.Node.abort_migration`)."""
        check_slot(slot)
        pending = [bid for bid, b in self.batches.items() if b.slot == slot]
        if any(self.batches[bid].items for bid in pending) and not force:
            raise errors.Conflict(
                f"a batch of slot {slot} is unacknowledged on node {self.id}; finish the migration instead"
            )
        for bid in pending:
            self._batch_failed(bid, "was abandoned (forced abort)")
        if slot in self.importing and self.ownership.slot_map.owner(slot) != self.id:
            for k in self.store.keys_in_slot(slot):
                self.store.delete(k)
        self.mark(IMPORTING, slot, None)
        self.mark(MIGRATING, slot, None)

    def slots_changed_hands(self) -> None:
        """The slot map changed: a slot we were moving out that another node now owns is moved."""
        if not self.migrating:
            return
        owner = self.ownership.slot_map.owner
        for slot in [s for s in self.migrating if owner(s) not in (self.id, None)]:
            # an end batch holds nothing back: it is acknowledged (or not) all the same
            if not any(b.slot == slot and b.items for b in self.batches.values()):
                self.mark(MIGRATING, slot, None)

    # --- the source side ---------------------------------------------------------------------

    def migrate_keys(self, slot: int, count: int, done: DoneFn) -> None:
        """Move up to ``count`` keys of a migrating slot to its target (see ``Node.migrate_keys``)."""
        target = self.migrating.get(slot)
        if target is None:
            done(0, f"slot {slot} is not migrating from node {self.id}")
            return
        pending = next((bid for bid, b in self.batches.items() if b.slot == slot), None)
        if pending is not None:
            b = self.batches[pending]
            b.done, b.tries = done, 0
            self._send_batch(pending)
            return
        keys = self.store.keys_in_slot(slot, limit=max(1, count))
        if not keys:
            # the end batch: done(0, "") once the target has acknowledged that we hold none
            bid = self._new_batch_id()
            self.batches[bid] = _Batch(slot, target, [], None, done)
            self._send_batch(bid)
            return
        items: list[tuple[bytes, bytes]] = []
        budget = self.config.max_frame_bytes // 2  # a batch must fit in one peer frame
        for k in keys:
            v = self.store.get(k)
            assert v is not None
            if items and budget - (len(k) + len(v)) < 0:
                break
            budget -= len(k) + len(v)
            self.in_flight[k] = None  # frozen until the target confirms
            items.append((k, v))
        bid = self._new_batch_id()
        self.batches[bid] = _Batch(slot, target, items, None, done)
        if self.config.durable:
            # the freeze must outlive a crash: after a restart the same batch is sent again
            # (the target may hold it already), never unfrozen by forgetting it
            self.rt.storage.put(f"{BATCH_PREFIX}{bid}",
                                f"{slot} {target} {','.join(k.hex() for k, _ in items)}".encode())
            self.rt.storage.sync()
        self._send_batch(bid)

    def reload(self, marks: Iterable[tuple[str, int, str]],
               batches: Iterable[tuple[int, int, str, list[bytes]]],
               drained: Iterable[tuple[int, str]] = ()) -> None:
        """After a restart: open marks, unacknowledged batches frozen again, to be resent, and
        the end batches received for slots still imported from their sender."""
        for bid, slot, target, keys in batches:
            items = []
            for k in keys:
                v = self.store.get(k)
                if v is not None:
                    self.in_flight[k] = None
                    items.append((k, v))
            self.batches[bid] = _Batch(slot, target, items, None, _ignore)
        for kind, slot, peer in marks:
            (self.migrating if kind == MIGRATING else self.importing)[slot] = peer
        leftovers = False
        for slot, source in drained:  # (read only on a durable node)
            if self.importing.get(slot) == source:
                self.drained[slot] = source
            else:  # a leftover of an import that is over: never trusted
                self.rt.storage.delete(f"{DRAINED_PREFIX}{slot}")
                leftovers = True
        if leftovers:
            self.rt.storage.sync()

    def resend_unacknowledged(self) -> None:
        """Send again the batches a crash left unacknowledged (the node starts)."""
        for bid in sorted(self.batches):
            self._send_batch(bid)

    def _new_batch_id(self) -> int:
        bid = self._next_batch
        self._next_batch = (self._next_batch + 1) & 0xFFFFFFFF
        return bid

    def _forget_batch(self, bid: int, b: _Batch) -> None:
        if self.config.durable and b.items:  # an end batch was never stored
            self.rt.storage.delete(f"{BATCH_PREFIX}{bid}")
            self.rt.storage.sync()

    def _send_batch(self, bid: int) -> None:
        b = self.batches[bid]
        b.tries += 1
        if b.timer is not None:
            b.timer.cancel()
        b.timer = self.rt.call_later(self.config.forward_timeout, lambda: self._batch_unanswered(bid))
        self.send(b.target, MigrateKeys(batch=bid, slot=b.slot, keys=tuple(k for k, _ in b.items),
                                        values=tuple(v for _, v in b.items)))

    def _batch_unanswered(self, bid: int) -> None:
        b = self.batches.get(bid)
        if b is None:
            return
        if b.tries < BATCH_TRIES:
            self._send_batch(bid)
            return
        if not b.items:  # an end batch: nothing is frozen, nothing to keep
            self._batch_failed(bid, f"was not acknowledged after {b.tries} tries")
            return
        done, b.done = b.done, _ignore
        done(0, f"moving {len(b.items)} keys of slot {b.slot} to {b.target} was not acknowledged after "
                f"{b.tries} tries; they stay frozen until it is")

    def _batch_failed(self, bid: int, why: str) -> None:
        b = self.batches.pop(bid, None)
        if b is None:
            return
        self._forget_batch(bid, b)
        if b.timer is not None:
            b.timer.cancel()
        for k, _ in b.items:  # unfreeze: they never left (nobody could write them: try_again)
            del self.in_flight[k]
        what = (f"moving {len(b.items)} keys of slot {b.slot} to {b.target}" if b.items
                else f"telling {b.target} that node {self.id} holds no key of slot {b.slot} any more")
        b.done(0, f"{what} {why}")

    def on_migrate_ack(self, src: str, msg: MigrateAck) -> None:
        """The target stored (or refused) a batch: delete its keys here (or unfreeze them)."""
        b = self.batches.get(msg.batch)
        if b is None or b.target != src:
            self.stats.late_replies += 1
            return
        if msg.error:
            self._batch_failed(msg.batch, f"was refused: {msg.error}")
            return
        del self.batches[msg.batch]
        self._forget_batch(msg.batch, b)
        if b.timer is not None:
            b.timer.cancel()
        for k, _ in b.items:
            del self.in_flight[k]
            self.store.delete(k)
        if b.slot in self.migrating:
            self.moved_out[b.slot] = self.moved_out.get(b.slot, 0) + len(b.items)
        b.done(len(b.items), "")

    # --- the target side ---------------------------------------------------------------------

    def on_migrate_keys(self, src: str, msg: MigrateKeys) -> None:
        """Store a batch of a slot we import from ``src`` (once), and acknowledge it; an end
        batch (no key) tells us ``src`` holds no key of the slot any more."""
        now = self.rt.now()
        if self.stored.seen((src, msg.batch), now):
            self._ack_durably(src, MigrateAck(batch=msg.batch, stored=len(msg.keys), error=""))
            return
        if self.importing.get(msg.slot) != src:
            self.send(src, MigrateAck(batch=msg.batch, stored=0,
                                      error=f"node {self.id} is not importing slot {msg.slot} from {src}"))
            return
        if len(msg.keys) != len(msg.values) or any(key_slot(k) != msg.slot for k in msg.keys):
            self.stats.malformed += 1
            self.send(src, MigrateAck(batch=msg.batch, stored=0, error="malformed batch"))
            return
        if not msg.keys:
            # the end batch: no key to store or deduplicate; its receipt is kept (durably on a
            # durable node, acknowledged once durable) so a finish after a restart is not refused
            self._set_drained(msg.slot, src)
            self._ack_durably(src, MigrateAck(batch=msg.batch, stored=0, error=""))
            return
        self._set_drained(msg.slot, None)  # keys still coming: whatever an end batch said is old
        for k, v in zip(msg.keys, msg.values, strict=True):
            self.store.set(k, v)
        self.stored.put((src, msg.batch), None, now)
        self._ack_durably(src, MigrateAck(batch=msg.batch, stored=len(msg.keys), error=""))

    def _ack_durably(self, src: str, ack: MigrateAck) -> None:
        """Acknowledge a stored batch; on a durable node only once it is durable (the source
        deletes its keys on the ack: a crash of ours must not lose them meanwhile)."""
        if self.config.durable:
            self.rt.storage.on_durable(lambda: self.send(src, ack))
        else:
            self.send(src, ack)


__all__ = ["BATCH_PREFIX", "BATCH_TRIES", "DRAINED_PREFIX", "MARK_PREFIX", "Migration", "check_slot"]
