"""The storelab node, split by concern; :class:`Node` is the façade the two worlds build.

Theory of operation
-------------------
A node routes each client operation to its slot's owner, applies it, answers, and takes part in
SWIM membership and live slot migration. :class:`Node` (:mod:`kvcore.node.node`) wires the parts
and offers the doors: client requests, peer messages, timers (ARCHITECTURE.md) and the admin door.

=================================  ============================================================
module                             concern
=================================  ============================================================
:mod:`kvcore.node.node`            ``Node``: construction, lifecycle, the doors, the info view
:mod:`kvcore.node.routing`         client operations, Forward / ForwardReply / Asking, pending
                                   forwards and their timeouts, the gate of a node that must
                                   sync before serving (restarted, or ``sync_first``)
:mod:`kvcore.node.migration`       live migration, source and target: marks, batches, freezing,
                                   MigrateKeys / MigrateAck, their persistence, the guards
:mod:`kvcore.node.ownership`       the slot map derived from membership events (highest epoch
                                   wins; saved when a reconfiguration lands)
:mod:`kvcore.node.restore`         what storage holds of an earlier life (members to rejoin,
                                   claims, the map, marks), read back at build time
:mod:`kvcore.node.dedup`           ``DedupCache``: time- and size-bounded duplicate memory
=================================  ============================================================

``from kvcore.node import Node, ReplyFn, error_reply`` is the import other packages use.
"""

from __future__ import annotations

from kvcore.node.dedup import DEDUP_MAX_ENTRIES, DedupCache
from kvcore.node.migration import BATCH_PREFIX, BATCH_TRIES, DRAINED_PREFIX, MARK_PREFIX
from kvcore.node.node import GroupUnusable, Node
from kvcore.node.ownership import SLOT_MAP_KEY
from kvcore.node.routing import OK, ReplyFn, error_reply

__all__ = [
    "BATCH_PREFIX",
    "BATCH_TRIES",
    "DEDUP_MAX_ENTRIES",
    "DRAINED_PREFIX",
    "MARK_PREFIX",
    "OK",
    "SLOT_MAP_KEY",
    "DedupCache",
    "GroupUnusable",
    "Node",
    "ReplyFn",
    "error_reply",
]
