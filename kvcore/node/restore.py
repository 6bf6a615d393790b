"""Restore from storage: what an earlier life of this node learned, read back when it is built.

Theory of operation
-------------------
A node that crashed keeps its ``storage`` (ARCHITECTURE.md, the Runtime). Besides the store's journal
(:meth:`kvcore.store.LocalStore.load`) and the membership's incarnation and own claim
(:mod:`kvcore.membership`), the node keeps what it learned of reconfigurations, as Redis keeps
``nodes.conf``:

0. **The members** it knew, with their peer addresses, incarnations and claims (written by
   :mod:`kvcore.membership` as they change; Redis's ``nodes.conf``), so that a node restarted
   without seeds or a static configuration rejoins through them, and is not standalone: it then
   starts from no claim but the one it kept (2.), and does not serve until it has synced full
   state with one of them (the restarted node's gate, :mod:`kvcore.node.routing`).
1. **The slot map** as it was (``slotmap``, saved by :mod:`kvcore.node.ownership` whenever a
   claim above the configured epoch lands), so that a restarted node does not serve slots that
   moved away while it was down. Each saved slot is claimed at its saved epoch: the epoch rule
   keeps whichever of the saved and configured claims is newer. Unreadable text is counted as
   malformed and ignored (the node then relearns the map by gossip).
2. **Its own latest claim** (from the membership's storage), when it is newer than the claim it
   starts with, so that it keeps advertising the slots it took.
3. On a durable node, **open migration marks**, **unacknowledged batches** and the **end
   batches received** for slots still imported (:mod:`kvcore.node.migration`): last, once the slot map is rebuilt, because building it must
   not be taken for hearing that a migrating slot changed hands. A batch's keys are frozen again
   and the batch is resent when the node starts (the target may hold it already, and answers a
   duplicate without applying it twice).

:func:`read_saved` only reads and parses (a pure function of the storage, tested on its own);
:func:`restore` applies what it read to a node under construction, in the order above.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvcore.membership import MEMBER_PREFIX, Member
from kvcore.membership.member import decode_member
from kvcore.membership.protocol import decode_claim
from kvcore.node.migration import BATCH_PREFIX, DRAINED_PREFIX, IMPORTING, MARK_PREFIX, MIGRATING
from kvcore.node.ownership import SLOT_MAP_KEY
from kvcore.runtime import Storage
from kvcore.slots import SlotMap, SlotRangeError
from kvcore.states import MemberEvent

if TYPE_CHECKING:
    from kvcore.node.node import Node

#: a claim the cluster knows of this node that it does not hold ("<epoch> <ranges>"): advertised,
#: never served (``Node._on_own_claim``)
LOST_CLAIM_KEY = "node.lost_claim"


@dataclass(slots=True)
class Saved:
    """What a node's storage holds of its earlier life (beyond the store and the membership)."""

    #: the saved slot map, or None when there is none (or it was unreadable: ``malformed``)
    slot_map: SlotMap | None = None
    malformed: bool = False
    #: open marks: (``"migrating"`` or ``"importing"``, slot, peer), in storage order
    marks: list[tuple[str, int, str]] = field(default_factory=list)
    #: unacknowledged batches: (batch id, slot, target, keys)
    batches: list[tuple[int, int, str, list[bytes]]] = field(default_factory=list)
    #: end batches received: (slot, the source that sent it), in storage order
    drained: list[tuple[int, str]] = field(default_factory=list)
    #: the other members it knew, in id order (unreadable entries skipped and counted)
    members: list[Member] = field(default_factory=list)
    malformed_members: int = 0


def remembers_a_cluster(storage: Storage) -> bool:
    """True when an earlier life of this node kept members to rejoin (it is not standalone)."""
    return bool(storage.items(MEMBER_PREFIX))


def read_saved(storage: Storage, durable: bool) -> Saved:
    """Read and parse what ``storage`` holds; marks and batches only for a ``durable`` node."""
    out = Saved()
    raw = storage.get(SLOT_MAP_KEY)
    if raw:
        try:
            out.slot_map = SlotMap.from_text(raw.decode())
        except (SlotRangeError, UnicodeDecodeError):
            out.malformed = True
    for name, value in storage.items(MEMBER_PREFIX):
        m = decode_member(name[len(MEMBER_PREFIX):], value)
        if m is None:
            out.malformed_members += 1
        else:
            out.members.append(m)
    if not durable:
        return out
    for name, value in storage.items(BATCH_PREFIX):
        slot_s, target, keys_s = value.decode().split(" ")
        keys = [bytes.fromhex(kh) for kh in keys_s.split(",")]
        out.batches.append((int(name[len(BATCH_PREFIX):]), int(slot_s), target, keys))
    for name, value in storage.items(MARK_PREFIX):
        kind, slot_s = name[len(MARK_PREFIX):].split(":")
        out.marks.append((MIGRATING if kind == MIGRATING else IMPORTING, int(slot_s), value.decode()))
    for name, value in storage.items(DRAINED_PREFIX):
        out.drained.append((int(name[len(DRAINED_PREFIX):]), value.decode()))
    return out


def restore(node: Node) -> None:
    """Apply what ``node``'s storage holds to the node being built (see the module docstring)."""
    saved = read_saved(node.rt.storage, node.config.durable)
    if saved.malformed:
        node.stats.malformed += 1
    node.stats.malformed += saved.malformed_members
    node.membership.restore_members(m for m in saved.members if m.node != node.id)
    old = saved.slot_map
    if old is not None:
        for lo, hi, owner_id in old.runs():
            for slot in range(lo, hi + 1):
                node.slot_map.claim([(slot, slot)], owner_id, old.epoch(slot))
    me = node.membership.me
    claim = node.membership.stored_claim()
    if claim is not None and claim[1] > me.epoch:
        me.slots, me.epoch = claim
        node._on_member_event(MemberEvent.UPDATE, node.id, me)
    lost = node.rt.storage.get(LOST_CLAIM_KEY)
    if lost:
        node.lost_claim = slots, epoch = decode_claim(lost)
        if epoch > me.epoch:  # advertised, not taken: no listener hears of it
            me.slots, me.epoch = slots, epoch
    node.migration.reload(saved.marks, saved.batches, saved.drained)


__all__ = ["LOST_CLAIM_KEY", "Saved", "read_saved", "remembers_a_cluster", "restore"]
