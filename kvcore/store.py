"""The local store: bytes to bytes, indexed by slot.

Theory of operation
-------------------
A plain dict holds the data; a second dict per slot holds that slot's keys (as an ordered dict
used as a set, because iterating a ``set`` of bytes depends on PYTHONHASHSEED). The slot index is
what resharding needs ("the keys of slot 42") and costs one dict operation per write.

With a ``journal`` (a :class:`kvcore.runtime.Storage`), every change is written through to it
under ``kv:<hex key>`` and synced (``Storage.sync``) before the call returns, and :meth:`LocalStore.load` rebuilds the store
from it after a crash: a disk with an fsync per write (Redis's ``appendfsync always``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvcore.slots import key_slot

if TYPE_CHECKING:
    from kvcore.runtime import Storage

JOURNAL_PREFIX = "kv:"


class LocalStore:
    __slots__ = ("_by_slot", "_data", "bytes_used", "journal")

    def __init__(self, journal: Storage | None = None) -> None:
        self._data: dict[bytes, bytes] = {}
        self._by_slot: dict[int, dict[bytes, None]] = {}
        #: sum of key and value lengths, for metrics
        self.bytes_used = 0
        self.journal = journal

    @classmethod
    def load(cls, journal: Storage) -> LocalStore:
        """The store as its journal left it (after a crash and restart)."""
        store = cls()
        for name, value in journal.items(JOURNAL_PREFIX):
            store.set(bytes.fromhex(name[len(JOURNAL_PREFIX):]), value)
        store.journal = journal
        return store

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        old = self._data.get(key)
        if old is None:
            self._by_slot.setdefault(key_slot(key), {})[key] = None
            self.bytes_used += len(key) + len(value)
        else:
            self.bytes_used += len(value) - len(old)
        self._data[key] = value
        if self.journal is not None:
            self.journal.put(JOURNAL_PREFIX + key.hex(), value)
            self.journal.sync()

    def delete(self, key: bytes) -> bool:
        """Remove a key; False when it was absent."""
        old = self._data.pop(key, None)
        if old is None:
            return False
        slot = key_slot(key)
        keys = self._by_slot[slot]
        del keys[key]
        if not keys:
            del self._by_slot[slot]
        self.bytes_used -= len(key) + len(old)
        if self.journal is not None:
            self.journal.delete(JOURNAL_PREFIX + key.hex())
            self.journal.sync()
        return True

    def count(self) -> int:
        return len(self._data)

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value), sorted by key (deterministic: a replicated snapshot's image)."""
        return sorted(self._data.items())

    def keys(self) -> list[bytes]:
        """Every key, in the order they were first set (a snapshot's frozen list of keys)."""
        return list(self._data)

    def clear(self) -> None:
        """Forget every key (not written through: a replica about to install a snapshot)."""
        self._data.clear()
        self._by_slot.clear()
        self.bytes_used = 0

    __len__ = count

    def __contains__(self, key: bytes) -> bool:
        return key in self._data

    def keys_in_slot(self, slot: int, limit: int | None = None) -> list[bytes]:
        """The keys of one slot, sorted (deterministic), at most ``limit`` of them."""
        keys = sorted(self._by_slot.get(slot, ()))
        return keys if limit is None else keys[:limit]

    def count_in_slot(self, slot: int) -> int:
        return len(self._by_slot.get(slot, ()))

    def slots(self) -> list[int]:
        """Slots that hold at least one key, sorted."""
        return sorted(self._by_slot)
