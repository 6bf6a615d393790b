"""A Raft log kept in the Runtime's key/value Storage (the sim's, and any world without a log file).

Theory of operation
-------------------
:class:`KVRaftStorage` is a :class:`kvcore.raft.storage.RaftStorage` whose bytes live in a
:class:`kvcore.runtime.Storage` under ``raft/``: one key per entry (``raft/e/<index>``, the
index zero-padded so that key order is log order), ``raft/hs`` for the HardState and
``raft/snap`` for the snapshot (its meta and the state machine's image). ``save`` writes the
keys and ``sync`` is the Storage's ``sync``, so durability is exactly the Storage's: the sim's
:class:`sim.storage.SimStorage` loses every unsynced write in a crash, and :meth:`load` then
returns the synced image. realnet uses its append-only log file instead
(:class:`realnet.raftlog.FileRaftStorage`); both obey the same replay rule
(:func:`kvcore.raft.storage.apply_writes`), which this class applies to its in-memory image to
know which keys a save adds and which it must delete (a truncated conflicting suffix, the entries
a snapshot covers).

:meth:`on_durable` runs a callback once everything synced so far is durable: at once where a
sync completes inside the call, later where a sync takes time (the sim with ``sync_time``). The
group driver sends nothing a Ready vouches for before that (Figure 2, "respond to RPCs only after
updating stable storage").
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence

from kvcore.raft.messages import CONF, NORMAL, ConfState, Entry, HardState, Snapshot, SnapshotMeta
from kvcore.raft.storage import LogImage, StoredState, apply_writes
from kvcore.runtime import Storage

PREFIX = "raft/"
_ENTRY = PREFIX + "e/"
_HS = PREFIX + "hs"
_SNAP = PREFIX + "snap"
_HEAD = struct.Struct(">QQc")
_KIND = {NORMAL: b"n", CONF: b"c"}
_KIND_BACK = {v: k for k, v in _KIND.items()}


def entry_key(index: int) -> str:
    return f"{_ENTRY}{index:020d}"


def encode_entry(e: Entry) -> bytes:
    return _HEAD.pack(e.term, e.index, _KIND[e.kind]) + e.data


def decode_entry(raw: bytes) -> Entry:
    term, index, kind = _HEAD.unpack_from(raw)
    return Entry(term=term, index=index, kind=_KIND_BACK[kind], data=raw[_HEAD.size:])


def encode_snapshot(s: Snapshot) -> bytes:
    m = s.meta
    head = json.dumps([m.index, m.term, list(m.conf.voters), list(m.conf.learners)]).encode()
    return head + b"\n" + s.data


def decode_snapshot(raw: bytes) -> Snapshot:
    head, _, data = raw.partition(b"\n")
    index, term, voters, learners = json.loads(head)
    conf = ConfState(voters=tuple(voters), learners=tuple(learners))
    return Snapshot(meta=SnapshotMeta(index=index, term=term, conf=conf), data=data)


class KVRaftStorage:
    """A RaftStorage over a key/value Storage; ``voters``/``learners`` bootstrap an empty one."""

    def __init__(self, storage: Storage, voters: Sequence[str], learners: Sequence[str] = ()) -> None:
        self.storage = storage
        self._boot = Snapshot(meta=SnapshotMeta(conf=ConfState(voters=tuple(voters), learners=tuple(learners))))
        self._img = self._read()
        self.saves = 0
        self.syncs = 0

    def _read(self) -> LogImage:
        st = self.storage
        raw_snap = st.get(_SNAP)
        snap = decode_snapshot(raw_snap) if raw_snap is not None else self._boot
        raw_hs = st.get(_HS)
        hs = HardState()
        if raw_hs is not None:
            term, vote, commit = json.loads(raw_hs)
            hs = HardState(term=term, vote=vote, commit=commit)
        entries: list[Entry] = []
        for _, raw in st.items(_ENTRY):
            e = decode_entry(raw)
            if e.index <= snap.meta.index:
                continue
            if e.index != snap.meta.index + 1 + len(entries):
                break  # never written so; a hole ends the log rather than be served
            entries.append(e)
        return LogImage(hs, snap, entries)

    def load(self) -> StoredState:
        img = self._read()
        self._img = img.copy()
        return StoredState(img.hard_state, img.snapshot, list(img.entries))

    def save(self, hard_state: HardState | None, entries: Sequence[Entry],
             snapshot: Snapshot | None) -> None:
        self.saves += 1
        img = self._img
        before = self._indexes(img)
        apply_writes(img, hard_state, entries, snapshot)
        after = self._indexes(img)
        st = self.storage
        if snapshot is not None and img.snapshot is snapshot:
            st.put(_SNAP, encode_snapshot(snapshot))
        for i in range(before[0], before[1] + 1):
            if not after[0] <= i <= after[1]:
                st.delete(entry_key(i))
        for e in entries:
            if after[0] <= e.index <= after[1]:
                st.put(entry_key(e.index), encode_entry(e))
        if hard_state is not None:
            st.put(_HS, json.dumps([hard_state.term, hard_state.vote, hard_state.commit]).encode())

    @staticmethod
    def _indexes(img: LogImage) -> tuple[int, int]:
        first = img.snapshot.meta.index + 1
        return first, first + len(img.entries) - 1

    def sync(self) -> None:
        self.syncs += 1
        self.storage.sync()

    def on_durable(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once every write synced so far is durable (see the module docstring)."""
        hook = getattr(self.storage, "on_durable", None)
        if hook is None:
            fn()
        else:
            hook(fn)
