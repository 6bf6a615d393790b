"""The local store: bytes to bytes, indexed by slot.

Theory of operation
-------------------
A plain dict holds the data; a second dict per slot holds that slot's keys (as an ordered dict
used as a set, because iterating a ``set`` of bytes depends on PYTHONHASHSEED). The slot index is
what resharding needs ("the keys of slot 42") and costs one dict operation per write.
"""

from __future__ import annotations

from kvcore.slots import key_slot


class LocalStore:
    __slots__ = ("_by_slot", "_data", "bytes_used")

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._by_slot: dict[int, dict[bytes, None]] = {}
        #: sum of key and value lengths, for metrics
        self.bytes_used = 0

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
        return True

    def count(self) -> int:
        return len(self._data)

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
