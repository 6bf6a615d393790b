"""Member tables that share what every node of a static cluster knows alike (copy on write).

Theory of operation
-------------------
A static cluster of n nodes starts with every node knowing every member alive at incarnation 0:
n² member records that are all the same n records. A :class:`StaticView` holds those n records
once, with their ids in sorted order and their :class:`~kvcore.messages.MemberState` s (what a
push-pull carries), and every node built from the same configuration at the same moment shares
it (:func:`static_view`). Nothing may change a record or a list of a StaticView.

A node's :class:`MemberTable` is a mapping of member id -> :class:`~kvcore.membership.member.Member`
over such a shared *base*, plus the node's *own* records: its own entry, and every record it
changed. A record is copied out of the base into the node's own part the first time the node
changes it (:meth:`MemberTable.writable`), so a node that learns otherwise never changes another
node's view. A member removed (reaped) is hidden by a ``None`` in the own part. A table without a
base is an ordinary dict of records.

Members learned at run time are shared too: every node that learns a member from the same
Alive (the same id, incarnation, addresses and claim) holds one record for it,
:func:`learned_record` (a thousand nodes joining one by one: a thousand records, not a million).
Such a record sits in the own part but is marked ``shared``, like the static view's records, and
:meth:`MemberTable.writable` copies any shared record before it is changed. Only its
``state_change`` is not the learner's own clock: it is read of members that are down only
(reaping, gossip to the dead), and a record is made down by ``_set_state``, on a copy, which
sets it. Likewise :func:`alive_of` gives the push-pull merge one Alive per distinct alive entry
of a full state, so that what nodes learn from full state and gossip on is one object too (each
is sent some twelve times to every node: equal objects scattered over memory cost a cache miss
at each receipt).

:class:`SortedIds` is a sorted list of member ids (the pools that probes, gossip and push-pull
draw from) that may be a shared list with one entry hidden (the node itself): indexed and
measured as the list without that entry, and copied into a list of its own at the first change.

:class:`LazyRound` is a probe round over a large pool: the same uniform random order as
``random.shuffle`` of the pool, drawn one position at a time (Fisher-Yates from the front), so a
round costs O(1) per probe instead of O(n) at its start and holds only the positions it moved.

Every table also keeps a **known-alive note** per member (:attr:`MemberTable.alive_known`): one
byte, indexed by the member's process-wide number (:func:`member_number`), saying "this table
holds the member alive at incarnation ``byte - 1`` or more" (0: nothing known). The membership
writes a note when its merge rules leave a member alive (:meth:`MemberTable.note_alive`: a member
learned, or brought up to date, by an Alive), and the table clears it whenever the member's
record may change: it is replaced, removed, or handed out by :meth:`MemberTable.writable` (every
change of a record's state or incarnation starts there). A record that became alive another way
(a static view's, one restored from storage) is simply not noted. So a note never says more than
the record does, and a Gossip whose every update is an Alive that the notes cover changes
nothing, which the receiver can tell in one pass over bytes instead of a look-up per update in
its member dict. That look-up is what a thousand-node join spends its receipts on: some twelve
million, each a miss in one of a thousand member dicts of some 36 KB, where the notes of all
nodes together take a megabyte.
Numbers are never reused or cleared (a note indexed by a reused number would speak of another
member); there is one per member id this process has noted, and handing them out is safe
between threads (``dict.setdefault`` with a number drawn from one counter).

Determinism: iteration is in insertion order (base, then own additions); callers that need an
order sort, as before. Nothing here draws randomness except :class:`LazyRound`, from the
generator it is given.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, overload

from kvcore.membership.member import ALIVE, Member
from kvcore.messages import Alive, MemberState

if TYPE_CHECKING:
    import random

_MISS = object()
#: a record's kept MemberState (a shared record's, once built; else None: Member.to_state)
_kept_state: Callable[[Member], MemberState | None] = attrgetter("_state")


class StaticView:
    """What every node of one static configuration knows at start, shared and never changed."""

    __slots__ = ("_states", "ids", "index", "records", "source", "time")

    def __init__(self, members: Sequence[tuple[str, str, str, str, int]], now: float) -> None:
        #: the configuration's member list this view was built from, and when (see static_view)
        self.source = members
        self.time = now
        self.records: dict[str, Member] = {
            nid: Member(nid, addr, peer_addr, 0, ALIVE, now, slots, epoch, shared=True)
            for nid, addr, peer_addr, slots, epoch in members
        }
        #: every member id, sorted (the node itself included: a node's pools hide it)
        self.ids: list[str] = sorted(self.records)
        #: id -> its position in ``ids``
        self.index: dict[str, int] = {nid: i for i, nid in enumerate(self.ids)}
        self._states: tuple[MemberState, ...] | None = None

    def states(self) -> tuple[MemberState, ...]:
        """Every record's MemberState, in id order (built once)."""
        if self._states is None:
            self._states = tuple(self.records[k].to_state() for k in self.ids)
        return self._states


_last_view: StaticView | None = None

#: (id, incarnation, addr, peer_addr, slots, epoch) -> the record every node that learns that
#: Alive holds; cleared past _LEARNED_MAX entries (only sharing is lost, never a record's value)
_learned: dict[tuple[str, int, str, str, str, int], Member] = {}
_LEARNED_MAX = 1 << 17


def learned_record(a: Alive, now: float) -> Member:
    """The shared record of a member learned alive from ``a`` (see the module docstring)."""
    key = (a.node, a.incarnation, a.addr, a.peer_addr, a.slots, a.epoch)
    m = _learned.get(key)
    if m is None:
        if len(_learned) >= _LEARNED_MAX:
            _learned.clear()
        m = _learned[key] = Member(a.node, a.addr, a.peer_addr, a.incarnation, ALIVE, now, a.slots, a.epoch,
                                   shared=True)
    return m


#: the same for the Alives a push-pull merge hands to the merge rules: one per distinct entry,
#: so that what a node learns from full state and then gossips on is one object cluster-wide
_alives: dict[tuple[str, int, str, str, str, int], Alive] = {}


def alive_of(s: MemberState) -> Alive:
    """The Alive that says what the alive entry ``s`` of a full state says (one per value)."""
    key = (s.node, s.incarnation, s.addr, s.peer_addr, s.slots, s.epoch)
    a = _alives.get(key)
    if a is None:
        if len(_alives) >= _LEARNED_MAX:
            _alives.clear()
        a = _alives[key] = Alive(node=s.node, incarnation=s.incarnation, addr=s.addr, peer_addr=s.peer_addr,
                                 slots=s.slots, epoch=s.epoch)
    return a


def static_view(members: Sequence[tuple[str, str, str, str, int]], now: float) -> StaticView:
    """The shared view of ``members`` at ``now``: the same object for every node built from the
    same member list (the very object: a configuration caches its list) at the same time."""
    global _last_view
    v = _last_view
    if v is None or v.source is not members or v.time != now:
        v = _last_view = StaticView(members, now)
    return v


#: member id -> its number, process-wide (see the module docstring: never reused or cleared)
numbers: dict[str, int] = {}
_next_number = itertools.count()


def member_number(node: str) -> int:
    """``node``'s process-wide number (the index of its known-alive note in every table)."""
    n = numbers.get(node)
    if n is None:
        # two threads may race here: setdefault keeps one number per id, and next() on one
        # counter never gives two ids the same number
        n = numbers.setdefault(node, next(_next_number))
    return n


#: a note holds incarnation + 1 in a byte: higher incarnations are not noted
_NOTE_MAX = 254
#: notes a table grows by beyond the members numbered so far
_NOTE_ROOM = 256


class MemberTable(Mapping[str, Member]):
    """A node's members: a shared base (read only) under the node's own records (copy on write)."""

    __slots__ = ("_base", "_len", "_own", "alive_known", "fast_get", "view")

    def __init__(self) -> None:
        self.view: StaticView | None = None
        self._base: dict[str, Member] = {}
        #: this node's records; None hides a base record (removed here)
        self._own: dict[str, Member | None] = {}
        self._len = 0
        #: ``get(key)`` at its fastest: the own dict's own ``get`` while there is no base (a
        #: node that joined holds every record itself), else :meth:`get`
        self.fast_get: Callable[[str], Member | None] = self._own.get
        #: member number -> known-alive note (see the module docstring); grown as noted
        self.alive_known = bytearray()

    def set_base(self, view: StaticView) -> None:
        """Share ``view``'s records; only while this table holds nothing but what is in it."""
        if self._base or any(k not in view.records for k in self._own):
            raise ValueError("a member table takes a shared base only when it is fresh")
        self.view = view
        self._base = view.records
        self._len = len(view.records)
        self.fast_get = self.get

    def is_shared(self, node: str) -> bool:
        """True when this table reads ``node``'s record from the shared base."""
        return node not in self._own and node in self._base

    # --- reading (a Mapping) -----------------------------------------------------------------

    def __getitem__(self, key: str) -> Member:
        m = self._own.get(key, _MISS)
        if m is _MISS:
            return self._base[key]
        if m is None:
            raise KeyError(key)
        return m  # type: ignore[return-value]

    def get(self, key: str, default: Member | None = None) -> Member | None:  # type: ignore[override]
        m = self._own.get(key, _MISS)
        if m is _MISS:
            return self._base.get(key, default)
        return default if m is None else m  # type: ignore[return-value]

    def __contains__(self, key: object) -> bool:
        m = self._own.get(key, _MISS)  # type: ignore[call-overload]
        if m is _MISS:
            return key in self._base
        return m is not None

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[str]:
        own = self._own
        for k in self._base:
            if own.get(k, _MISS) is not None:
                yield k
        for k, m in own.items():
            if m is not None and k not in self._base:
                yield k

    # --- writing -----------------------------------------------------------------------------

    def note_alive(self, key: str, m: Member) -> None:
        """Note that this table holds ``key`` alive as ``m`` says (``m`` is its record here, and
        alive); not noted above ``_NOTE_MAX``."""
        inc = m.incarnation
        if inc < _NOTE_MAX:
            n = numbers.get(key)
            if n is None:
                n = member_number(key)
            known = self.alive_known
            if n >= len(known):
                # room for every member numbered so far and some to come: a Gossip that names
                # a member beyond the notes is taken one update at a time (after an IndexError)
                known.extend(bytes(max(n + 1, len(numbers)) + _NOTE_ROOM - len(known)))
            known[n] = inc + 1

    def _forget(self, key: str) -> None:
        """Clear ``key``'s known-alive note: its record may be about to change."""
        n = numbers.get(key)
        if n is not None and n < len(self.alive_known):
            self.alive_known[n] = 0

    def __setitem__(self, key: str, m: Member) -> None:
        own = self._own
        held = own.get(key, _MISS)
        if held is None or (held is _MISS and key not in self._base):
            self._len += 1  # a member this table does not hold: its note was cleared at removal
        else:
            self._forget(key)
        own[key] = m

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._forget(key)
        self._len -= 1
        if key in self._base:
            self._own[key] = None
        else:
            del self._own[key]

    def writable(self, key: str) -> Member:
        """``key``'s record, copied first if it is shared (the base's, or a learned record held
        alike by other nodes), so that changing it changes this table only. KeyError if there
        is no such member."""
        held = self._own.get(key, _MISS)
        if held is None:
            raise KeyError(key)
        self._forget(key)
        m: Member = self._base[key] if held is _MISS else held  # type: ignore[assignment]
        if m.shared:
            m = self._own[key] = m.copy()
        return m

    def is_view_states(self, states: Sequence[MemberState]) -> bool:
        """True when ``states`` is the shared view's own tuple (every member in it alive)."""
        return self.view is not None and states is self.view._states

    def states(self) -> tuple[MemberState, ...]:
        """Every member's MemberState in id order: the shared view's own tuple when nothing this
        node holds differs from it (what push-pull sends, shared by every such node)."""
        view = self.view
        if view is None:
            own: dict[str, Member] = self._own  # type: ignore[assignment]  # no base: no None
            # Member.to_state of each, in id order: a shared record's state is read straight
            # from the record (built once), the others' built here (a node that joined holds
            # a thousand records, nearly all shared, and rebuilds its state after each change)
            records = list(map(own.__getitem__, sorted(own)))
            states: list[MemberState | None] = list(map(_kept_state, records))
            if not all(states):
                for j, st in enumerate(states):
                    if st is None:
                        states[j] = records[j].to_state()
            return tuple(states)  # type: ignore[arg-type]  # no None left
        base_states = view.states()
        index = view.index
        changed: list[tuple[int, MemberState | None]] = []
        extra: list[MemberState] = []
        for k, m in self._own.items():
            i = index.get(k)
            if i is None:
                if m is not None:
                    extra.append(m.to_state())
                continue
            if m is None:
                changed.append((i, None))
                continue
            s = m.to_state()
            if s != base_states[i]:
                changed.append((i, s))
        if not changed and not extra:
            return base_states
        out: list[MemberState | None] = list(base_states)
        for i, new in changed:
            out[i] = new
        merged = [s for s in out if s is not None]
        if extra:
            merged.extend(extra)
            merged.sort(key=lambda s: s.node)
        return tuple(merged)


class SortedIds(Sequence[str]):
    """A sorted list of ids, possibly a shared list with one entry hidden; copied at the first
    change (and after :meth:`snapshot`, whose items must then never change)."""

    __slots__ = ("_items", "_shared", "_skip")

    def __init__(self, items: list[str] | None = None, hide: str | None = None) -> None:
        self._items: list[str] = items if items is not None else []
        #: items is shared with others: copy before changing it
        self._shared = items is not None
        self._skip = -1
        if hide is not None:
            i = bisect.bisect_left(self._items, hide)
            if i < len(self._items) and self._items[i] == hide:
                self._skip = i

    def __len__(self) -> int:
        return len(self._items) - (self._skip >= 0)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        skip = self._skip
        if skip < 0:
            return self._items[i]  # nothing hidden: the list's own indexing (a slice too)
        if isinstance(i, slice):
            return self.to_list()[i]
        if 0 <= i < skip:
            return self._items[i]
        if i < 0:
            i += len(self)
            if i < 0:
                raise IndexError(i)
            return self[i]
        return self._items[i + 1]

    def __iter__(self) -> Iterator[str]:
        if self._skip < 0:
            return iter(self._items)
        return iter(self.to_list())

    def __contains__(self, x: object) -> bool:
        if not isinstance(x, str):
            return False
        i = self._find(x)
        return i >= 0

    def to_list(self) -> list[str]:
        items, skip = self._items, self._skip
        return list(items) if skip < 0 else items[:skip] + items[skip + 1:]

    def snapshot(self) -> tuple[list[str], int]:
        """The ids as they are now, as (a list that stays as it is, the index of the one entry of
        it to pass over or -1): shared with this pool until the pool changes (then it copies)."""
        self._shared = True
        return self._items, self._skip

    def _own(self) -> None:
        self._items = self.to_list()
        self._skip = -1
        self._shared = False

    def _find(self, x: str) -> int:
        items = self._items
        i = bisect.bisect_left(items, x)
        if i < len(items) and items[i] == x and i != self._skip:
            return i
        return -1

    def insort(self, x: str) -> None:
        if self._shared or self._skip >= 0:
            self._own()
        bisect.insort(self._items, x)

    def discard(self, x: str) -> bool:
        """Remove ``x`` if present; True if it was."""
        if self._find(x) < 0:
            return False
        if self._shared or self._skip >= 0:
            self._own()
        del self._items[self._find(x)]
        return True


class LazyRound:
    """A uniform random order of a pool, drawn as it is walked.

    The pool is a :meth:`SortedIds.snapshot`: a list that must not change and the index of an
    entry of it to pass over (-1: none), so that no node copies a shared list for its round.

    Fisher-Yates from the front: position i takes the item at a random position in i..n-1, which
    is swapped into place; only swapped positions are remembered. Members that join during the
    round (SWIM §4.3: "a random place in the rest of the round") wait in ``late``, and each next
    pick is uniform over everything not yet visited, late ones included.
    """

    __slots__ = ("_moved", "_n", "_pos", "_skip", "late", "pool")

    def __init__(self, snapshot: tuple[list[str], int]) -> None:
        self.pool, self._skip = snapshot
        self._n = len(self.pool) - (self._skip >= 0)
        self._pos = 0
        self._moved: dict[int, int] = {}
        self.late: list[str] = []

    def remaining(self) -> int:
        return self._n - self._pos + len(self.late)

    def insert(self, node: str) -> None:
        self.late.append(node)

    def next(self, rng: random.Random) -> str | None:
        """The next member of the round, or None when it is over."""
        left = self._n - self._pos
        total = left + len(self.late)
        if total <= 0:
            return None
        r = rng.randrange(total)
        if r >= left:
            return self.late.pop(r - left)
        i = self._pos
        j = i + r
        moved = self._moved
        at_j = moved.get(j, j)
        if j != i:
            moved[j] = moved.pop(i, i)
        else:
            moved.pop(i, None)
        self._pos = i + 1
        skip = self._skip
        return self.pool[at_j if skip < 0 or at_j < skip else at_j + 1]


__all__ = ["LazyRound", "MemberTable", "SortedIds", "StaticView", "alive_of", "learned_record", "member_number",
           "static_view"]
