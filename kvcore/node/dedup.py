"""A time- and size-bounded memory of what was already done, so a duplicate is not done twice.

Theory of operation
-------------------
The network may duplicate messages (ARCHITECTURE.md, "Failure model"). Two of a node's peer messages
must not be applied twice: a forwarded write (a duplicated Put delivered after a newer Put would
bring the old value back) and a migration batch (a duplicated batch stored after a write to one
of its keys would do the same). The receiver remembers each one it handled, keyed by (sender,
request or batch id), and answers a duplicate from memory.

:class:`DedupCache` is that memory, one class for both uses. An entry lives ``ttl`` seconds (the
node's ``dedup_window``: longer than any retransmission, so a duplicate cannot outlive it) and at
most ``max_entries`` are held, the oldest evicted first, so a burst cannot grow memory without
bound. Entries are kept in insertion order, which is also expiry order (one ttl for all), so
expiring is popping from the front until the first live entry; it happens on every access, and
a lookup never returns an expired entry. Time is what the caller says it is (``now``), from the
node's Runtime: no clock here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_NEVER = float("inf")

#: most entries a node's dedup memory holds by default (each is small: an id and a short reply)
DEDUP_MAX_ENTRIES = 100_000


class DedupCache(Generic[K, V]):
    """Remember ``key -> value`` for ``ttl`` seconds, at most ``max_entries``, oldest out first."""

    __slots__ = ("_entries", "_oldest", "max_entries", "ttl")

    def __init__(self, ttl: float, max_entries: int = DEDUP_MAX_ENTRIES) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError(f"a dedup cache needs ttl >= 0 and max_entries >= 1, not {ttl}, {max_entries}")
        self.ttl = ttl
        self.max_entries = max_entries
        # key -> (expires_at, value), oldest first
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        #: when the oldest entry expires (inf when there is none): what get, seen and put ask
        #: before expiring, without reading the first entry of the dict (every forwarded write a
        #: node serves asks its memory twice)
        self._oldest = _NEVER

    def _note_oldest(self) -> None:
        entries = self._entries
        self._oldest = next(iter(entries.values()))[0] if entries else _NEVER

    def expire(self, now: float) -> None:
        """Forget every entry whose time is up at ``now``."""
        entries = self._entries
        while entries:
            expires = next(iter(entries.values()))[0]
            if expires > now:
                self._oldest = expires
                return
            entries.popitem(last=False)
        self._oldest = _NEVER

    def get(self, key: K, now: float) -> V | None:
        """The value remembered for ``key``, or None (never one that expired by ``now``)."""
        if self._oldest <= now:
            self.expire(now)
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def seen(self, key: K, now: float) -> bool:
        """Whether ``key`` is remembered at ``now`` (for values that may be None)."""
        if self._oldest <= now:
            self.expire(now)
        return key in self._entries

    def put(self, key: K, value: V, now: float) -> None:
        """Remember ``key -> value`` until ``now + ttl``; evict the oldest beyond ``max_entries``."""
        entries = self._entries
        if self._oldest <= now:
            self.expire(now)
        expires = now + self.ttl
        if key in entries:
            entries[key] = (expires, value)
            entries.move_to_end(key)  # a refreshed entry expires last: keep insertion = expiry order
            self._note_oldest()
        else:
            entries[key] = (expires, value)
            if len(entries) == 1:
                self._oldest = expires
        if len(entries) > self.max_entries:
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
            self._note_oldest()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[K]:
        """The keys held, oldest first (expired ones included until the next access)."""
        return iter(self._entries)


__all__ = ["DEDUP_MAX_ENTRIES", "DedupCache"]
