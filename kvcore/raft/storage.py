"""Raft's stable storage: writes are volatile until an explicit ``sync()``.

Theory of operation
-------------------
The paper's "persistent state" (Figure 2: currentTerm, votedFor, log[]) is only persistent once
it reached the disk. :class:`RaftStorage` makes that explicit: ``save()`` records a HardState,
entries and/or a snapshot *volatilely*; ``sync()`` makes everything saved so far durable (one
sync for many saves is group commit). :meth:`MemoryRaftStorage.crash` models a crash or a power
loss: every write since the last sync is lost, and ``load()`` then returns the synced image.

The contract with the core (:mod:`kvcore.raft.raft`, "persist before send"): for each ``Ready``
the application calls ``save(rd.hard_state, rd.entries, rd.snapshot or rd.compacted)``, then
``sync()`` when ``rd.must_sync``, and only then sends ``rd.messages``. That is how Raft's rules
hold: a vote is synced before the vote response leaves (§5.1, Figure 2 "respond to RPCs only
after updating stable storage"), a candidate's term and self-vote are synced before its
RequestVotes leave, and a follower's entries are synced before its AppendEntries reply leaves.
The leader counts its own copy of an entry only when ``advance()`` tells it the entry is stable.

Append semantics are etcd-io/raft's ``MemoryStorage.Append``: entries whose index is already
held replace that entry and everything after it (a conflicting suffix is truncated, Figure 2,
AppendEntries receiver rule 3). A snapshot replaces the log prefix it covers; later entries are
kept when the log agrees with the snapshot at its index, else the whole log is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kvcore.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta


@dataclass
class StoredState:
    """What ``load()`` returns: the synced image a restarting node starts from."""

    hard_state: HardState
    snapshot: Snapshot
    entries: list[Entry]


class RaftStorage(Protocol):
    """The persistence door of a Raft node (see the module docstring for the contract)."""

    def load(self) -> StoredState:
        """The state as of the last ``sync()`` (the only state a crash keeps)."""
        ...

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> None:
        """Record writes volatilely: the snapshot first, then the entries, then the HardState."""
        ...

    def sync(self) -> None:
        """Make every write since the last sync durable."""
        ...


@dataclass
class LogImage:
    """A storage's state as a value: the HardState, the snapshot and the entries after it.

    The shared replay rule of every :class:`RaftStorage`: :func:`apply_writes` (and
    :func:`apply_snapshot`) change an image exactly as a ``save()`` changes the stored state, so a
    storage keeps a volatile and a synced image and replays its pending writes onto the latter.
    """

    hard_state: HardState
    snapshot: Snapshot
    entries: list[Entry] = field(default_factory=list)

    def copy(self) -> LogImage:
        return LogImage(self.hard_state, self.snapshot, list(self.entries))


class MemoryRaftStorage:
    """An in-memory :class:`RaftStorage` with a volatile and a synced image.

    Built with the initial configuration (the bootstrap "snapshot" at index 0, term 0). Counters
    ``saves`` and ``syncs`` let tests and benchmarks see group commit.
    """

    def __init__(self, voters: Sequence[str], learners: Sequence[str] = ()) -> None:
        boot = Snapshot(meta=SnapshotMeta(index=0, term=0,
                                          conf=ConfState(voters=tuple(voters), learners=tuple(learners))))
        self._synced = LogImage(HardState(), boot)
        self._volatile = self._synced.copy()
        # writes since the last sync, replayed onto the synced image at sync() (so a sync costs
        # what was written since the last one, not the size of the log)
        self._pending: list[tuple[HardState | None, list[Entry], Snapshot | None]] = []
        self.saves = 0
        self.syncs = 0

    def load(self) -> StoredState:
        img = self._synced
        return StoredState(img.hard_state, img.snapshot, list(img.entries))

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> None:
        self.saves += 1
        apply_writes(self._volatile, hard_state, entries, snapshot)
        self._pending.append((hard_state, list(entries), snapshot))

    def sync(self) -> None:
        self.syncs += 1
        for hs, entries, snapshot in self._pending:
            apply_writes(self._synced, hs, entries, snapshot)
        self._pending.clear()

    def crash(self) -> None:
        """Lose every write since the last sync (a crash or a power loss)."""
        self._pending.clear()
        self._volatile = self._synced.copy()

    def has_unsynced(self) -> bool:
        return self._synced != self._volatile  # LogImage compares all three fields


def apply_writes(img: LogImage, hard_state: HardState | None, entries: Sequence[Entry],
                 snapshot: Snapshot | None) -> None:
    """Apply one ``save()`` to ``img``: the snapshot first, then the entries (etcd's Append
    semantics, see the module docstring; ``ValueError`` on a gap), then the HardState."""
    if snapshot is not None:
        apply_snapshot(img, snapshot)
    if entries:
        _append(img, entries)
    if hard_state is not None:
        img.hard_state = hard_state


def _append(img: LogImage, entries: Sequence[Entry]) -> None:
    first = img.snapshot.meta.index + 1
    lo = entries[0].index
    if lo < first:  # entries already covered by the snapshot
        entries = [e for e in entries if e.index >= first]
        if not entries:
            return
        lo = entries[0].index
    offset = lo - first
    if offset > len(img.entries):
        raise ValueError(f"entries start at index {lo} but the log ends at {first + len(img.entries) - 1}: "
                         "a gap would be stored")
    del img.entries[offset:]
    img.entries.extend(entries)


def apply_snapshot(img: LogImage, snap: Snapshot) -> None:
    """Install ``snap`` in ``img`` unless it is older: entries after its index are kept when the
    log agrees with the snapshot there (same term), else the whole log is dropped."""
    old_first = img.snapshot.meta.index + 1
    idx = snap.meta.index
    if idx <= img.snapshot.meta.index:
        return
    pos = idx - old_first
    if 0 <= pos < len(img.entries) and img.entries[pos].term == snap.meta.term:
        img.entries = img.entries[pos + 1:]
    else:
        img.entries = []
    img.snapshot = snap
