"""The broadcast queue: which membership updates ride on the next message (SWIM §4.1).

Theory of operation
-------------------
SWIM disseminates membership updates by piggybacking them on the protocol's own pings and acks
(and, in memberlist, on periodic gossip messages): each update is sent a bounded number of times
(:func:`~kvcore.membership.formulas.retransmit_limit`), and the ones sent least go first, so new
news overtakes old. :class:`BroadcastQueue` is memberlist's ``TransmitLimitedQueue``, keyed by
member: an update about a member replaces any older one about it (the newer one supersedes it,
and the older one would only waste room).

Taking is the hottest path of dissemination: a thousand members joining one by one make every
node send each join λ·log n times, some twelve million piggybacked updates in all. So a level
is a list of updates, and a take moves whole slices of it (copies, deletions and extensions done
by the list type itself) instead of visiting its updates one by one. An update replaced before
it was sent out is not searched for: it stays where it is, *stale* (no longer the member's
queued update, ``queued[member] is not it``), and is passed over when its level is next taken.
A member has at most one stale update at a time: queueing about a member that has one (or
queueing the very update that is queued) first removes the member's updates from the levels.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter, is_

from kvcore.messages import Alive, Dead, Suspect

#: what the queue holds and a Gossip carries: one member's news
Update = Alive | Suspect | Dead

_node_of = attrgetter("node")


class BroadcastQueue:
    """memberlist's TransmitLimitedQueue: updates keyed by member, fewest transmits first.

    Level i holds the updates sent i times, oldest first; a take reads a level from its end, so
    within a level the most recently inserted goes first (memberlist orders by transmits, then
    newest id). A batch taken together moves up a level oldest first, so it keeps its
    newest-first order there; items that reach a level in different takes are ordered by
    arrival, not by age. Queueing an update about a member replaces any older one about it.
    ``take`` costs O(limit), whatever the queue's length, which matters when a thousand members
    join at once.
    """

    def __init__(self) -> None:
        self._levels: list[list[Update]] = [[]]
        #: no level below this one holds an update (where a take starts looking)
        self._low = 0
        #: member -> its queued update: empty exactly when nothing is queued (read on every
        #: message, so tested as a dict rather than through ``len(queue)``)
        self._current: dict[str, Update] = {}
        self.queued = self._current
        #: members that have a stale update still in some level (at most one each)
        self._stale: set[str] = set()
        #: called when an update is queued into an empty queue, before it is (the gossip rounds
        #: sleep while nothing is queued; Dissemination._gossip_wake)
        self.on_first: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._current)

    def queue(self, msg: Update) -> None:
        """Queue ``msg`` at zero transmits, replacing any queued update about the same member."""
        key = msg.node
        if not self._current and self.on_first is not None:
            self.on_first()
        old = self._current.get(key)
        if key in self._stale or old is msg:
            # so that no stale update is ever the one queued (liveness is by identity)
            self._remove(key)
        elif old is not None:
            self._stale.add(key)  # left in place, passed over when taken
        self._levels[0].append(msg)
        self._low = 0
        self._current[key] = msg

    def take(self, limit: int, max_transmits: int) -> list[Update]:
        """Up to ``limit`` updates, fewest transmits first; each taken one counts a transmit
        and leaves the queue on its ``max_transmits``-th."""
        levels = self._levels
        lo = self._low
        top = len(levels)
        while lo < top and not levels[lo]:
            lo += 1
        self._low = lo  # levels below it are empty: the next take starts there
        if lo == top or limit <= 0:
            return []
        level = levels[lo]
        if len(level) < limit:
            return self._take_levels(lo, limit, max_transmits)
        # the common case: one level holds the whole batch, its newest ``limit`` updates
        batch = level[-limit:]
        current = self._current
        if self._stale and not all(map(is_, map(current.get, map(_node_of, batch)), batch)):
            return self._take_levels(lo, limit, max_transmits)
        del level[-limit:]
        nxt = lo + 1
        if nxt >= max_transmits:
            for msg in batch:
                del current[msg.node]
        elif nxt < top:
            levels[nxt] += batch
        else:
            levels.append(batch[:])
        batch.reverse()
        return batch

    def _take_levels(self, lo: int, limit: int, max_transmits: int) -> list[Update]:
        """:meth:`take` from level ``lo`` up, when the batch spans levels or meets a stale
        update: each level's part in turn, newest first."""
        out: list[Update] = []
        batches: list[tuple[int, list[Update]]] = []
        current = self._current
        levels = self._levels
        need = limit
        for lvl in range(lo, len(levels)):
            if need <= 0:
                break
            level = levels[lvl]
            if not level:
                continue
            # the newest ``need`` updates, oldest first: one slice, unless a stale one lies
            # among them (then one by one, passing over the stale)
            batch = level[-need:]
            if self._stale and not all(map(is_, map(current.get, map(_node_of, batch)), batch)):
                batch = self._take_live(level, need)
            else:
                del level[-need:]
            out.extend(reversed(batch))
            batches.append((lvl, batch))
            need -= len(batch)
        # each level's batch moves up one level oldest first, so that it is newest first there
        # too (a level hands its batch on before it takes one: it was sliced out above)
        for lvl, batch in reversed(batches):
            nxt = lvl + 1
            if nxt >= max_transmits:
                for msg in batch:
                    del current[msg.node]
                continue
            while len(levels) <= nxt:
                levels.append([])
            levels[nxt].extend(batch)
        return out

    def _take_live(self, level: list[Update], need: int) -> list[Update]:
        """Up to ``need`` queued updates from the end of ``level``, oldest first, dropping the
        stale ones met on the way."""
        batch: list[Update] = []
        current = self._current
        while level and len(batch) < need:
            msg = level.pop()
            if current.get(msg.node) is msg:
                batch.append(msg)
            else:
                self._stale.discard(msg.node)
        batch.reverse()
        return batch

    def _remove(self, key: str) -> None:
        """Remove every update about ``key`` from the levels (its queued one and a stale one)."""
        self._stale.discard(key)
        self._current.pop(key, None)
        for i, level in enumerate(self._levels):
            if key in map(_node_of, level):
                self._levels[i] = [msg for msg in level if msg.node != key]


__all__ = ["BroadcastQueue", "Update"]
