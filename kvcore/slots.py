"""Hash slots: which slot a key lives in, and which node owns each slot.

Theory of operation
-------------------
The key space is cut into ``NUM_SLOTS`` = 16384 hash slots (Redis Cluster's number).
``key_slot(key) = crc32(key) mod 16384`` over the key's bytes, except that a key holding a
``{tag}`` with a non-empty tag hashes only the tag (Redis hash tags: the first ``{`` and the first
``}`` after it), so that related keys share a slot. (Redis uses CRC16; DESIGN.md fixes CRC32.)

A :class:`SlotMap` assigns each slot to at most one node, with a per-slot config epoch. A claim
with a higher epoch wins (Redis Cluster's rule), so nodes that hear claims in different orders
still converge on the same map. Ranges are written the way operators write them,
``0-5460,5461-10922``; a single slot is just ``42``.

:func:`even_split` is ``redis-cli --cluster create``'s allocation: contiguous ranges whose sizes
differ by at most one.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence

from kvcore.bounds import INT64_MAX

NUM_SLOTS = 16384
MAX_SLOT = NUM_SLOTS - 1
#: the largest config epoch the wire carries (a signed 64-bit integer: msgpack, Redis's
#: configEpoch); a node takes from an operator or a peer only epochs up to
#: ``kvcore.bounds.MAX_ACCEPTED``, below it, so its own claims above them still fit
MAX_EPOCH = INT64_MAX

Range = tuple[int, int]  # inclusive


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that is hashed: the ``{tag}`` content if non-empty, else the key."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: bytes | str) -> int:
    """The hash slot of a key (bytes, or str taken as UTF-8)."""
    if isinstance(key, str):
        key = key.encode()
    if 0x7B in key:  # b"{": most keys hold no tag (an int operand is a memchr, the fastest test)
        key = hash_tag(key)
    return zlib.crc32(key) % NUM_SLOTS


class SlotRangeError(ValueError):
    """A slot range string or value is malformed; the message is a full sentence."""


def parse_ranges(text: str) -> list[Range]:
    """Parse ``"0-5460,5461-10922,16383"`` into inclusive ranges (empty text: no ranges).

    Raises SlotRangeError naming the bad part: not a number, a slot outside 0-16383, start after
    end. Overlaps *within* one string are reported too.
    """
    out: list[Range] = []
    text = text.strip()
    if not text:
        return out
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise SlotRangeError(f"Empty element in slot ranges {text!r}.")
        lo_s, sep, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise SlotRangeError(f"Slot range {part!r} is not a number or a range like 0-5460.") from None
        for s in (lo, hi):
            if not 0 <= s <= MAX_SLOT:
                raise SlotRangeError(f"Slot {s} in {part!r} is outside 0-{MAX_SLOT}.")
        if lo > hi:
            raise SlotRangeError(f"Slot range {part!r} starts after it ends.")
        out.append((lo, hi))
    merged = normalize(out)
    if sum(h - lo + 1 for lo, h in merged) != sum(h - lo + 1 for lo, h in out):
        raise SlotRangeError(f"Slot ranges {text!r} overlap each other.")
    return out


def normalize(ranges: Iterable[Range]) -> list[Range]:
    """Sort and merge overlapping or adjacent ranges."""
    out: list[Range] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def format_ranges(ranges: Iterable[Range]) -> str:
    """Print ranges as ``0-5460,5461-10922`` (merged, sorted; a lone slot as ``42``)."""
    return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in normalize(ranges))


def slots_to_ranges(slots: Iterable[int]) -> list[Range]:
    """Compress slot numbers into sorted inclusive ranges."""
    return normalize((s, s) for s in slots)


def ranges_to_slots(ranges: Iterable[Range]) -> Iterator[int]:
    for lo, hi in ranges:
        yield from range(lo, hi + 1)


def count_slots(ranges: Iterable[Range]) -> int:
    return sum(hi - lo + 1 for lo, hi in normalize(ranges))


def even_split(node_ids: Sequence[str]) -> dict[str, list[Range]]:
    """Contiguous ranges for N nodes, sizes differing by at most one (redis-cli's allocation).

    For three nodes: 0-5460, 5461-10922, 10923-16383.
    """
    n = len(node_ids)
    if n == 0:
        return {}
    per = NUM_SLOTS / n
    out: dict[str, list[Range]] = {}
    first = 0
    cursor = 0.0
    for i, nid in enumerate(node_ids):
        last = round(cursor + per - 1)
        if last > MAX_SLOT or i == n - 1:
            last = MAX_SLOT
        out[nid] = [(first, last)] if last >= first else []
        first = last + 1
        cursor += per
    return out


#: the lists of a map that owns nothing: every new SlotMap shares them until it changes
_EMPTY_OWNERS: list[str | None] = [None] * NUM_SLOTS
_EMPTY_EPOCHS: list[int] = [0] * NUM_SLOTS
#: (ids of shared owner and epoch lists, claim) -> (those lists, the lists the claim gives, slots
#: that changed hands, whether the map changed): see :meth:`SlotMap.claim`. At most
#: _CLAIMED_MAX entries (two 16384-slot lists each), then it starts again: only sharing is lost
_claimed: dict[tuple[int, int, tuple[Range, ...], str | None, int],
               tuple[list[str | None], list[int], list[str | None], list[int], int, bool]] = {}
_CLAIMED_MAX = 64


class SlotMap:
    """Owner and config epoch of every slot.

    ``owner(slot)`` is a node id or None. ``claim`` applies Redis Cluster's rule: a claim replaces
    the current owner only with a strictly higher epoch, so applying the same set of claims in any
    order gives the same map as long as no two claims of one slot share an epoch. Two claims of
    one slot at one epoch are a conflict that the map does not resolve (the first one stays);
    Redis Cluster prevents them by making the node with the lower id bump its epoch.
    """

    __slots__ = ("_epochs", "_owners", "_shared", "version")

    def __init__(self) -> None:
        # a new map shares the empty map's lists (copy on write): a node that joins starts from
        # an empty map, and most are given one they never change (a static node copies its
        # configuration's)
        self._owners: list[str | None] = _EMPTY_OWNERS
        self._epochs: list[int] = _EMPTY_EPOCHS
        #: the two lists are shared with copies (copy on write): copy them before a change
        self._shared = True
        #: bumped on every change; lets caches (clients, metrics) notice a change cheaply
        self.version = 0

    def _writable(self) -> tuple[list[str | None], list[int]]:
        if self._shared:
            self._owners, self._epochs = list(self._owners), list(self._epochs)
            self._shared = False
        return self._owners, self._epochs

    @classmethod
    def from_assignment(cls, assignment: Mapping[str, Iterable[Range]], epoch: int = 0) -> SlotMap:
        m = cls()
        owners, epochs = m._writable()
        for nid, ranges in assignment.items():
            for lo, hi in ranges:
                for s in range(lo, hi + 1):
                    owners[s] = nid
                    epochs[s] = epoch
        m.version = 1
        return m

    @classmethod
    def single_owner(cls, node_id: str, epoch: int = 0) -> SlotMap:
        return cls.from_assignment({node_id: [(0, MAX_SLOT)]}, epoch)

    def owner(self, slot: int) -> str | None:
        return self._owners[slot]

    def epoch(self, slot: int) -> int:
        return self._epochs[slot]

    def owner_of_key(self, key: bytes | str) -> str | None:
        return self._owners[key_slot(key)]

    def claim(self, ranges: Iterable[Range], node_id: str | None, epoch: int) -> int:
        """Apply an ownership claim; returns how many slots changed hands.

        A claim on shared lists (which nobody changes) gives the same lists whichever map makes
        it, so a copy of the result is kept (:data:`_claimed`) and the next map that makes the
        same claim on the same lists shares it, copying and scanning nothing: a thousand nodes
        that join each apply the seeds' claims to an empty map, one 16384-slot copy and scan
        per claim and two lists per node otherwise. The map that made the claim first goes on
        with lists of its own, changed in place by its next claims as before."""
        if not self._shared:
            return self._claim(ranges, node_id, epoch)
        ranges = tuple(ranges)
        owners, epochs = self._owners, self._epochs
        key = (id(owners), id(epochs), ranges, node_id, epoch)
        kept = _claimed.get(key)
        # (an entry holds the lists its key names, so no other lists can have those ids)
        if kept is not None and kept[0] is owners and kept[1] is epochs:
            _, _, self._owners, self._epochs, changed, touched = kept
            if touched:
                self.version += 1
            return changed
        version = self.version
        changed = self._claim(ranges, node_id, epoch)
        if len(_claimed) >= _CLAIMED_MAX:
            _claimed.clear()
        if self._shared:  # the claim changed nothing: the lists are still the shared ones
            _claimed[key] = (owners, epochs, owners, epochs, changed, False)
        else:
            _claimed[key] = (owners, epochs, list(self._owners), list(self._epochs), changed,
                             self.version != version)
        return changed

    def _claim(self, ranges: Iterable[Range], node_id: str | None, epoch: int) -> int:
        """:meth:`claim` itself, on this map's lists (copied first if shared)."""
        changed = 0
        touched = False  # an epoch-only change is a change too (it decides later claims)
        owners, epochs = self._owners, self._epochs
        for lo, hi in ranges:
            if hi > lo and max(epochs[lo:hi + 1]) < epoch:
                # the claim wins the whole range (the common case): set it in slices
                owners, epochs = self._writable()
                changed += hi + 1 - lo - owners[lo:hi + 1].count(node_id)
                owners[lo:hi + 1] = [node_id] * (hi + 1 - lo)
                epochs[lo:hi + 1] = [epoch] * (hi + 1 - lo)
                touched = True
                continue
            for s in range(lo, hi + 1):
                if epoch > epochs[s]:
                    if self._shared:
                        owners, epochs = self._writable()
                    epochs[s] = epoch
                    touched = True
                    if owners[s] != node_id:
                        owners[s] = node_id
                        changed += 1
        if touched:
            self.version += 1
        return changed

    def release(self, node_id: str, below_epoch: int) -> int:
        """Unassign ``node_id``'s slots claimed below ``below_epoch`` (their epochs stay, so any
        later claim at a higher epoch takes them); returns how many. A node that is given a new
        assignment drops what it held before this way."""
        n = 0
        owners, epochs = self._owners, self._epochs
        for s in range(NUM_SLOTS):
            if owners[s] == node_id and epochs[s] < below_epoch:
                if self._shared:
                    owners, epochs = self._writable()
                owners[s] = None
                n += 1
        if n:
            self.version += 1
        return n

    def ranges_of(self, node_id: str) -> list[Range]:
        return slots_to_ranges(s for s, o in enumerate(self._owners) if o == node_id)

    def assignment(self) -> dict[str, list[Range]]:
        """node id -> its ranges, nodes in sorted order."""
        runs: dict[str, list[Range]] = {}
        for lo, hi, owner in self.runs():
            if owner is not None:
                runs.setdefault(owner, []).append((lo, hi))
        return {k: runs[k] for k in sorted(runs)}

    def runs(self) -> list[tuple[int, int, str | None]]:
        """Maximal runs of consecutive slots with one owner: (start, end, owner)."""
        out: list[tuple[int, int, str | None]] = []
        owners = self._owners
        start = 0
        for s in range(1, NUM_SLOTS + 1):
            if s == NUM_SLOTS or owners[s] != owners[start]:
                out.append((start, s - 1, owners[start]))
                start = s
        return out

    def to_text(self) -> str:
        """The whole map, owners and epochs, as text: ``lo-hi=owner@epoch`` runs joined by ``;``
        (unowned runs are ``lo-hi=@epoch``). What a node keeps on disk (Redis's nodes.conf)."""
        out: list[str] = []
        owners, epochs = self._owners, self._epochs
        start = 0
        for s in range(1, NUM_SLOTS + 1):
            if s == NUM_SLOTS or owners[s] != owners[start] or epochs[s] != epochs[start]:
                out.append(f"{start}-{s - 1}={owners[start] or ''}@{epochs[start]}")
                start = s
        return ";".join(out)

    @classmethod
    def from_text(cls, text: str) -> SlotMap:
        """Inverse of :meth:`to_text`; raises SlotRangeError on malformed text."""
        m = cls()
        owners, epochs = m._writable()
        try:
            for part in text.split(";"):
                rng, _, rest = part.partition("=")
                owner, _, epoch_s = rest.rpartition("@")
                lo_s, _, hi_s = rng.partition("-")
                lo, hi, epoch = int(lo_s), int(hi_s), int(epoch_s)
                if not 0 <= lo <= hi <= MAX_SLOT:
                    raise ValueError
                for slot in range(lo, hi + 1):
                    owners[slot] = owner or None
                    epochs[slot] = epoch
        except ValueError:
            raise SlotRangeError(f"Slot map text {text[:60]!r} is malformed.") from None
        m.version = 1
        return m

    def unassigned(self) -> list[Range]:
        return slots_to_ranges(s for s, o in enumerate(self._owners) if o is None)

    def covers_all(self) -> bool:
        """True when every one of the 16384 slots has an owner (``cluster verify``'s check)."""
        return None not in self._owners

    def slot_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self._owners:
            if o is not None:
                counts[o] = counts.get(o, 0) + 1
        return {k: counts[k] for k in sorted(counts)}

    def max_epoch(self) -> int:
        return max(self._epochs)

    def copy(self) -> SlotMap:
        """An independent map, equal to this one: O(1), since the two share their slot lists
        until either changes (copy on write). A static cluster's nodes all copy one map."""
        m = SlotMap.__new__(SlotMap)
        m._owners = self._owners
        m._epochs = self._epochs
        m._shared = self._shared = True
        m.version = self.version
        return m

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SlotMap)
            and self._owners == other._owners
            and self._epochs == other._epochs
        )

    def __repr__(self) -> str:
        parts = [f"{o}:{format_ranges(r)}" for o, r in self.assignment().items()]
        return f"SlotMap({' '.join(parts) or 'empty'})"
