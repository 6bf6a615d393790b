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
is a list, and a take moves whole slices of it (copies, deletions and extensions done by the
list type itself) instead of visiting its updates one by one; each queued update sits in a
one-item list (a *cell*), so that an update replaced before it was sent out is emptied in place
rather than searched for, and is passed over when its level is next taken.
"""

from __future__ import annotations

from itertools import repeat
from operator import is_, itemgetter

from kvcore.messages import Alive, Dead, Suspect

#: what the queue holds and a Gossip carries: one member's news
Update = Alive | Suspect | Dead

#: a queued update: [the update], or [None] once a newer update about its member replaced it
_Cell = list[Update | None]

_content = itemgetter(0)


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
        self._levels: list[list[_Cell]] = [[]]
        #: member -> the cell of its queued update: empty exactly when nothing is queued (read
        #: on every message, so tested as a dict rather than through ``len(queue)``)
        self._cells: dict[str, _Cell] = {}
        self.queued = self._cells
        #: emptied cells still in some level (replaced updates not yet passed over)
        self._stale = 0

    def __len__(self) -> int:
        return len(self._cells)

    def queue(self, msg: Update) -> None:
        """Queue ``msg`` at zero transmits, replacing any queued update about the same member."""
        old = self._cells.get(msg.node)
        if old is not None:
            old[0] = None
            self._stale += 1
            if self._stale > 32 and self._stale > len(self._cells):
                self._compact()
        cell: _Cell = [msg]
        self._levels[0].append(cell)
        self._cells[msg.node] = cell

    def take(self, limit: int, max_transmits: int) -> list[Update]:
        """Up to ``limit`` updates, fewest transmits first; each taken one counts a transmit
        and leaves the queue on its ``max_transmits``-th."""
        out: list[Update] = []
        batches: list[tuple[int, list[_Cell]]] = []
        need = limit
        for lvl, level in enumerate(self._levels):
            if need <= 0:
                break
            if not level:
                continue
            # the newest ``need`` cells, oldest first: one slice, unless replaced updates lie
            # among them (then cell by cell, passing over the emptied ones)
            batch = level[-need:]
            msgs = list(map(_content, reversed(batch)))
            if self._stale and any(map(is_, msgs, repeat(None))):
                batch, msgs = self._take_live(level, need)
            else:
                del level[-need:]
            out.extend(msgs)  # no None: emptied cells were passed over
            batches.append((lvl, batch))
            need -= len(batch)
        # each level's batch moves up one level oldest first, so that it is newest first there
        # too (a level hands its batch on before it takes one: it was sliced out above)
        levels = self._levels
        for lvl, batch in reversed(batches):
            nxt = lvl + 1
            if nxt >= max_transmits:
                cells = self._cells
                for cell in batch:
                    del cells[cell[0].node]  # type: ignore[union-attr]  # a live cell
                continue
            while len(levels) <= nxt:
                levels.append([])
            levels[nxt].extend(batch)
        return out

    def _take_live(self, level: list[_Cell], need: int) -> tuple[list[_Cell], list[Update | None]]:
        """Up to ``need`` live cells from the end of ``level`` (oldest first) and their updates
        (newest first), dropping the emptied cells met on the way."""
        batch: list[_Cell] = []
        while level and len(batch) < need:
            cell = level.pop()
            if cell[0] is None:
                self._stale -= 1
            else:
                batch.append(cell)
        msgs = [cell[0] for cell in batch]
        batch.reverse()
        return batch, msgs

    def _compact(self) -> None:
        """Drop every emptied cell, once they outnumber the queued updates (memory stays
        proportional to what is queued; the order of the live cells is kept)."""
        self._levels = [[c for c in level if c[0] is not None] for level in self._levels]
        self._stale = 0


__all__ = ["BroadcastQueue", "Update"]
