"""The broadcast queue: which membership updates ride on the next message (SWIM §4.1).

Theory of operation
-------------------
SWIM disseminates membership updates by piggybacking them on the protocol's own pings and acks
(and, in memberlist, on periodic gossip messages): each update is sent a bounded number of times
(:func:`~kvcore.membership.formulas.retransmit_limit`), and the ones sent least go first, so new
news overtakes old. :class:`BroadcastQueue` is memberlist's ``TransmitLimitedQueue``, keyed by
member: an update about a member replaces any older one about it (the newer one supersedes it,
and the older one would only waste room).
"""

from __future__ import annotations

from itertools import islice

from kvcore.messages import Alive, Dead, Suspect

#: what the queue holds and a Gossip carries: one member's news
Update = Alive | Suspect | Dead


class BroadcastQueue:
    """memberlist's TransmitLimitedQueue: updates keyed by member, fewest transmits first.

    Items live in buckets by transmit count (dicts, so insertion-ordered); within a bucket the
    most recently inserted goes first (memberlist orders by transmits, then newest id). A batch
    taken together moves up a level oldest first, so it keeps its newest-first order there; items
    that reach a level in different takes are ordered by arrival, not by age. Queueing an
    update about a member replaces any older one about it. ``take`` costs O(limit), whatever the
    queue's length, which matters when a thousand members join at once.
    """

    def __init__(self) -> None:
        self._levels: list[dict[str, Update]] = [{}]
        #: deletions per level since its dict was last rebuilt (see _compact)
        self._holes: list[int] = [0]
        self._where: dict[str, int] = {}
        #: member -> the level of its queued update: empty exactly when nothing is queued (read
        #: on every message, so tested as a dict rather than through ``len(queue)``)
        self.queued = self._where

    def __len__(self) -> int:
        return len(self._where)

    def queue(self, msg: Update) -> None:
        """Queue ``msg`` at zero transmits, replacing any queued update about the same member."""
        key = msg.node
        lvl = self._where.pop(key, None)
        if lvl is not None:
            del self._levels[lvl][key]
            self._deleted(lvl)
        self._levels[0][key] = msg
        self._where[key] = 0

    def take(self, limit: int, max_transmits: int) -> list[Update]:
        """Up to ``limit`` updates, fewest transmits first; each taken one counts a transmit
        and leaves the queue on its ``max_transmits``-th."""
        out: list[Update] = []
        batches: list[tuple[int, list[tuple[str, Update]]]] = []
        levels = self._levels
        need = limit
        for lvl, bucket in enumerate(levels):
            if need <= 0:
                break
            if not bucket:
                continue
            items = list(islice(reversed(bucket.items()), need))
            out.extend([msg for _, msg in items])
            batches.append((lvl, items))
            need -= len(items)
        # each level's batch moves up one level oldest first, so that it is newest first there
        # too; the highest level first, so that a level hands its batch on before it takes one
        where = self._where
        for lvl, items in reversed(batches):
            bucket = levels[lvl]
            for key, _ in items:
                del bucket[key]
            self._deleted(lvl, len(items))
            nxt = lvl + 1
            if nxt >= max_transmits:
                for key, _ in items:
                    del where[key]
                continue
            while len(levels) <= nxt:
                levels.append({})
                self._holes.append(0)
            items.reverse()
            levels[nxt].update(items)
            where.update(dict.fromkeys([key for key, _ in items], nxt))
        return out

    def _deleted(self, lvl: int, count: int = 1) -> None:
        """Count deletions from a level; rebuild its dict (same order) once the deletions
        outnumber what it holds. A dict does not reclaim deleted entries until it grows, and
        ``take`` walks it from its end, past them, to reach older entries."""
        holes = self._holes[lvl] + count
        bucket = self._levels[lvl]
        if holes > 32 and holes > len(bucket):
            self._levels[lvl] = dict(bucket)
            holes = 0
        self._holes[lvl] = holes


__all__ = ["BroadcastQueue", "Update"]
