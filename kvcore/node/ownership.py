"""The slot map, derived from what members advertise: the highest config epoch wins each slot.

Theory of operation
-------------------
Every SWIM Alive carries the member's slot ranges and its config epoch (:mod:`kvcore.membership`),
so a node learns who owns which slot from the same gossip that tells it who is alive.
:meth:`Ownership.learn` is the membership listener's share: for a member that joined, changed,
or came back alive with a claim, it applies the claim with Redis Cluster's rule, a claim wins a
slot wherever its epoch is above the slot's current epoch (:meth:`kvcore.slots.SlotMap.claim`).
So every node that has heard the same claims routes the same way, in whatever order it heard
them.

A static cluster configuration is known in full: the node copies its slot map rather than
re-deriving it claim by claim, and ``seeding`` mutes :meth:`learn` while the static members are
added. Claims at or below the configured epoch (``base_epoch``) are the configuration itself;
a claim above it is a reconfiguration, and the map is then saved (``SLOT_MAP_KEY``, as Redis
keeps ``nodes.conf``) so that a restarted node does not serve slots that moved away while it was
down (:mod:`kvcore.node.restore` reads it back).

When the map changed, the node tells its migration (:meth:`kvcore.node.migration.Migration.
slots_changed_hands`): a slot it was moving out that now belongs to another node has finished
moving. A claim that cannot be parsed is peer input gone wrong: counted as malformed, ignored.
"""

from __future__ import annotations

from kvcore import errors
from kvcore.membership import Member
from kvcore.metrics import NodeStats
from kvcore.runtime import Storage
from kvcore.slots import SlotMap, SlotRangeError, format_ranges, parse_ranges
from kvcore.states import MemberEvent

#: durable storage key of the slot map, saved whenever a claim above the configured epoch lands
SLOT_MAP_KEY = "slotmap"

#: the membership events that carry a member's current claim
_CLAIM_EVENTS = (MemberEvent.JOIN, MemberEvent.UPDATE, MemberEvent.ALIVE)


class Ownership:
    """One node's slot map and the rule that builds it from members' claims."""

    __slots__ = ("base_epoch", "seeding", "slot_map", "stats", "storage")

    def __init__(self, storage: Storage, stats: NodeStats, slot_map: SlotMap, base_epoch: int) -> None:
        self.storage = storage
        self.stats = stats
        self.slot_map = slot_map
        #: claims at or below this epoch come from the static configuration and are not saved
        self.base_epoch = base_epoch
        #: true while the static members are added (their map was copied whole)
        self.seeding = False

    def learn(self, event: str, node_id: str, m: Member) -> bool:
        """Apply the claim a membership event carries; True if the slot map changed."""
        if event not in _CLAIM_EVENTS or not m.slots or m.epoch <= 0 or self.seeding:
            return False
        try:
            ranges = parse_ranges(m.slots)
        except SlotRangeError:
            self.stats.malformed += 1
            return False
        before = self.slot_map.version
        self.slot_map.claim(ranges, node_id, m.epoch)
        if self.slot_map.version == before:
            return False
        if m.epoch > self.base_epoch:
            self.save()
        return True

    def save(self) -> None:
        self.storage.put(SLOT_MAP_KEY, self.slot_map.to_text().encode())
        self.storage.sync()

    def check_claim(self, node_id: str, ranges: list[tuple[int, int]], epoch: int) -> None:
        """Refuse (Conflict) a claim whose epoch would not win every one of its slots."""
        top = max((self.slot_map.epoch(s) for lo, hi in ranges for s in range(lo, hi + 1)), default=0)
        if epoch <= top:
            raise errors.Conflict(
                f"epoch {epoch} is not above epoch {top} that node {node_id} holds for one of these slots, "
                "so the claim would not win"
            )

    def claim(self, node_id: str, ranges: list[tuple[int, int]], epoch: int) -> str:
        """Take ``ranges`` for ``node_id`` at ``epoch``; returns every range it now owns."""
        self.slot_map.claim(ranges, node_id, epoch)
        return format_ranges(self.slot_map.ranges_of(node_id))

    def assign(self, node_id: str, ranges: list[tuple[int, int]], epoch: int) -> None:
        """Replace ``node_id``'s own claim by ``ranges`` at ``epoch`` (above every epoch known)."""
        if epoch <= self.slot_map.max_epoch():
            raise errors.Conflict(
                f"epoch {epoch} is not above node {node_id}'s current epoch {self.slot_map.max_epoch()}"
            )
        # claims learned from others stay; what we held before (a standalone node's 0-16383 at
        # epoch 1) is released, so no slot is served here on an outdated claim of ours
        self.slot_map.release(node_id, epoch)
        self.slot_map.claim(ranges, node_id, epoch)


__all__ = ["SLOT_MAP_KEY", "Ownership"]
