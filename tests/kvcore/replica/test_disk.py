"""KVRaftStorage: a Raft log in a key/value Storage, with the replay rule of every RaftStorage."""

from __future__ import annotations

import random

import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcore.raft.messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from kvcore.raft.storage import MemoryRaftStorage
from kvcore.replica.disk import KVRaftStorage
from kvcore.runtime import MemoryStorage
from sim.storage import SimStorage


def _ops() -> st.SearchStrategy[list[tuple[str, int, int]]]:
    return st.lists(st.tuples(st.sampled_from(["append", "snap", "hs", "sync"]),
                              st.integers(1, 12), st.integers(1, 4)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(_ops())
def test_it_loads_exactly_what_memory_raft_storage_loads(ops: list[tuple[str, int, int]]) -> None:
    """A differential test: the same saves and syncs give the same synced image."""
    kv, mem = KVRaftStorage(MemoryStorage(), ["a", "b"]), MemoryRaftStorage(["a", "b"])
    last, snap_at, term = 0, 0, 1
    terms: dict[int, int] = {}
    for op, x, y in ops:
        if op == "append":
            lo = max(snap_at + 1, min(last + 1, x))  # may overwrite a suffix
            term = max(term, y)
            entries = [Entry(term=term, index=i, data=bytes([i % 256])) for i in range(lo, lo + y)]
            for s in (kv, mem):
                s.save(None, entries, None)
            last = entries[-1].index
            terms.update((e.index, e.term) for e in entries)
        elif op == "snap" and last > snap_at:
            idx = snap_at + 1 + (x % (last - snap_at))
            snap = Snapshot(meta=SnapshotMeta(index=idx, term=terms[idx], conf=ConfState(voters=("a", "b"))),
                            data=b"image%d" % idx)
            for s in (kv, mem):
                s.save(None, [], snap)
            snap_at = idx
        elif op == "hs":
            for s in (kv, mem):
                s.save(HardState(term=term, vote="a", commit=min(x, last)), [], None)
        else:
            for s in (kv, mem):
                s.sync()
    for s in (kv, mem):
        s.sync()
    assert kv.load() == mem.load()


def test_a_crash_keeps_only_what_was_synced() -> None:
    env = simpy.Environment()
    disk = SimStorage(env, "const:0.01", random.Random(1))
    kv = KVRaftStorage(disk, ["a"])
    kv.save(HardState(term=1, vote="a"), [Entry(term=1, index=1)], None)
    kv.sync()
    env.run(until=0.02)
    kv.save(HardState(term=2, vote="a"), [Entry(term=2, index=2)], None)  # never synced
    disk.crash()
    got = KVRaftStorage(disk, ["a"]).load()
    assert got.hard_state.term == 1 and [e.index for e in got.entries] == [1]


def test_on_durable_waits_for_the_flush_that_carries_the_writes() -> None:
    env = simpy.Environment()
    disk = SimStorage(env, "const:0.01", random.Random(1))
    kv = KVRaftStorage(disk, ["a"])
    seen: list[float] = []
    kv.save(HardState(term=1, vote="a"), [], None)
    kv.sync()
    kv.on_durable(lambda: seen.append(env.now))
    assert seen == []
    env.run(until=0.05)
    assert seen == [0.01]
    kv.on_durable(lambda: seen.append(env.now))  # nothing pending: at once
    assert seen == [0.01, 0.05]
    kv.save(HardState(term=2, vote="a"), [], None)
    kv.sync()
    kv.on_durable(lambda: seen.append(-1.0))
    disk.crash()  # the flush never completes: the callback never runs
    env.run(until=0.2)
    assert seen == [0.01, 0.05]
