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
    """Remember ``key -> value`` for ``ttl`` seconds, at most ``max_entries``, oldest out first.

    The expiry times and the values are kept in two maps rather than one of ``(expires, value)``
    pairs: a node serving forwarded writes holds up to ``max_entries`` of them, each replaced
    within seconds, and a pair holding a message is an object the garbage collector tracks (and
    rescans in every full collection, while the requests wait); a key of atoms (a sender and an
    id) and a float are not tracked at all."""

    __slots__ = ("_expiry", "_oldest", "_values", "max_entries", "ttl")

    def __init__(self, ttl: float, max_entries: int = DEDUP_MAX_ENTRIES) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError(f"a dedup cache needs ttl >= 0 and max_entries >= 1, not {ttl}, {max_entries}")
        self.ttl = ttl
        self.max_entries = max_entries
        #: key -> when it expires, oldest first (insertion order is expiry order: one ttl)
        self._expiry: OrderedDict[K, float] = OrderedDict()
        #: key -> its value (the same keys)
        self._values: dict[K, V] = {}
        #: when the oldest entry expires (inf when there is none): what get, seen and put ask
        #: before expiring, without reading the first entry (every forwarded write a node serves
        #: asks its memory twice)
        self._oldest = _NEVER

    def _note_oldest(self) -> None:
        expiry = self._expiry
        self._oldest = next(iter(expiry.values())) if expiry else _NEVER

    def expire(self, now: float) -> None:
        """Forget every entry whose time is up at ``now``."""
        expiry, values = self._expiry, self._values
        while expiry:
            key, expires = next(iter(expiry.items()))
            if expires > now:
                self._oldest = expires
                return
            del expiry[key]
            del values[key]
        self._oldest = _NEVER

    def get(self, key: K, now: float) -> V | None:
        """The value remembered for ``key``, or None (never one that expired by ``now``)."""
        if self._oldest <= now:
            self.expire(now)
        return self._values.get(key)

    def seen(self, key: K, now: float) -> bool:
        """Whether ``key`` is remembered at ``now`` (for values that may be None)."""
        if self._oldest <= now:
            self.expire(now)
        return key in self._values

    def put(self, key: K, value: V, now: float) -> None:
        """Remember ``key -> value`` until ``now + ttl``; evict the oldest beyond ``max_entries``."""
        if self._oldest <= now:
            self.expire(now)
        expiry, values = self._expiry, self._values
        expires = now + self.ttl
        if key in values:
            expiry[key] = expires
            expiry.move_to_end(key)  # a refreshed entry expires last: keep insertion = expiry order
            values[key] = value
            self._note_oldest()
            return
        expiry[key] = expires
        values[key] = value
        if len(values) == 1:
            self._oldest = expires
        elif len(values) > self.max_entries:
            while len(values) > self.max_entries:
                del values[expiry.popitem(last=False)[0]]
            self._note_oldest()

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[K]:
        """The keys held, oldest first (expired ones included until the next access)."""
        return iter(self._expiry)


__all__ = ["DEDUP_MAX_ENTRIES", "DedupCache"]
