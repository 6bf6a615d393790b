"""How long a replicated node stops for a snapshot of its store: one call against steps.

A group compacts its log every ``snapshot_entries`` applied entries (§7) by building its state
machine's image. Built in one call (the baseline, what the group did before: sort every pair,
encode them all), the node's loop does nothing else meanwhile: no heartbeat leaves a leader, and a
pause longer than an election timeout (0.5-1 s by default) lets the followers elect another.
Built in steps (``StateMachine.begin_image`` and ``ImageBuilder.step``, one step per loop turn,
``ReplicaConfig.image_chunk`` keys a step), the longest stretch is one loop turn's worth: the
freeze plus the first steps.

The store: ``--keys`` pairs (1,000,000 by default) of 16-byte keys inserted in random order and
``--value-bytes`` values (100). Both arms build the same image (checked byte for byte). Reported:
the baseline's pause, the stepped build's longest turn (the freeze and the first call's steps, or
one later step), its number of turns and its total CPU (CPU times, the best of ``--rounds``). Then
the snapshot file: realnet's Raft log saving the compaction inside a running loop, with the file
written in ``save()`` (before) or in a worker thread (now), each with the wall time until
its marker is synced and the longest stall a 1 ms ticker on the loop saw meanwhile (``--dir``; a
tmpfs makes its fsync nearly free, the table names the directory).

Prints a table, then as its last line one JSON object with the figures and the ratios of the
longest pause (stepped image) and the longest stall (file in a worker thread) to their baselines.

    python benchmarks/snapshot_pause.py [--keys 1000000] [--value-bytes 100] [--chunk 4096]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
_sys.path.insert(0, str(_Path(__file__).resolve().parent))
import argparse
import json
import random
import shutil
import tempfile
import time

from _loopstall import LoopStall

from kvcore.raft.messages import ConfState, Snapshot, SnapshotMeta
from kvcore.replica.command import encode_image
from kvcore.replica.machine import StateMachine
from realnet.raftlog import FileRaftStorage


def machine(keys: int, value_bytes: int, seed: int = 1) -> StateMachine:
    sm = StateMachine()
    order = list(range(keys))
    random.Random(seed).shuffle(order)
    value = b"v" * value_bytes
    for i in order:
        sm.store.set(b"key-%012d" % i, value)
    sm.applied = keys
    return sm


def one_call(sm: StateMachine) -> tuple[float, bytes]:
    """The baseline: what ``_maybe_compact`` did before, in one call."""
    t0 = time.process_time()
    data = encode_image(sm.sessions.to_bytes(), sm.store.items())
    return time.process_time() - t0, data


def stepped(sm: StateMachine, chunk: int) -> tuple[float, int, float, bytes]:
    """(longest turn, turns, total CPU, image), turned as ``ReplicaGroup._image_step`` turns."""
    longest = total = 0.0
    t0 = time.process_time()
    b = sm.begin_image()
    turns = 1
    while not b.step(chunk):  # the first turn: up to two steps, as the group takes them
        if b.steps >= 2:
            break
    else:
        dt = time.process_time() - t0
        return dt, 1, dt, b.data()
    longest = total = time.process_time() - t0
    done = False
    while not done:
        t = time.process_time()
        done = b.step(chunk)
        dt = time.process_time() - t
        longest, total, turns = max(longest, dt), total + dt, turns + 1
    return longest, turns, total, b.data()


def write_file(directory: str, data: bytes, background: bool) -> tuple[float, float]:
    """(wall seconds until the snapshot's marker is synced, the loop's longest stall meanwhile)
    for realnet's Raft log saving a compaction inside a running loop: the file written in the
    worker thread (``background``, realnet's disk), or in ``save()`` as before."""
    import asyncio

    from kvcore.raft.messages import Entry, HardState
    from realnet.raftopen import RaftLogDisk

    d = tempfile.mkdtemp(prefix="snapshot-pause-", dir=directory)

    async def run() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        disk = RaftLogDisk(FileRaftStorage(d, ["a", "b", "c"]), loop.time)
        if not background:
            disk.log.background = None
        disk.save(HardState(term=1, vote="a", commit=3), [Entry(term=1, index=i) for i in (1, 2, 3)], None)
        disk.sync()
        snap = Snapshot(meta=SnapshotMeta(index=2, term=1, conf=ConfState(voters=("a", "b", "c"))), data=data)
        async with LoopStall() as stall:
            t0 = time.perf_counter()
            disk.save(None, (), snap)
            disk.sync()
            for _ in range(100_000):  # bounded: the marker follows the file
                if disk.log.load().snapshot.meta.index == 2:
                    break
                await asyncio.sleep(0.001)
            wall = time.perf_counter() - t0
        disk.close()
        return wall, stall.longest

    try:
        return asyncio.run(run())
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=4096, help="keys per step (ReplicaConfig.image_chunk)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the snapshot file is written")
    a = ap.parse_args()
    sm = machine(a.keys, a.value_bytes)
    base = step_best = None
    for _ in range(a.rounds):
        pause, data = one_call(sm)
        longest, turns, total, data2 = stepped(sm, a.chunk)
        assert data2 == data, "the stepped image differs from the one-call image"
        base = pause if base is None else min(base, pause)
        if step_best is None or longest < step_best[0]:
            step_best = (longest, turns, total)
    assert base is not None and step_best is not None
    inline = min((write_file(a.dir, data, False) for _ in range(a.rounds)), key=lambda r: r[1])
    behind = min((write_file(a.dir, data, True) for _ in range(a.rounds)), key=lambda r: r[1])
    longest, turns, total = step_best
    print(f"snapshot of {a.keys:,} keys ({len(data) / 2**20:.0f} MiB image), {a.chunk} keys a step; "
          f"CPU s, best of {a.rounds}")
    print(f"{'build':<22} {'longest pause s':>16} {'turns':>7} {'total CPU s':>12}")
    print(f"{'one call (baseline)':<22} {base:>16.3f} {1:>7} {base:>12.3f}")
    print(f"{'in steps':<22} {longest:>16.4f} {turns:>7,} {total:>12.3f}")
    print(f"then the snapshot file ({a.dir}), wall s: {'until marker':>14} {'longest loop stall':>19}")
    print(f"{'  written in save()':<30} {inline[0]:>14.3f} {inline[1]:>19.3f}")
    print(f"{'  in a worker thread':<30} {behind[0]:>14.3f} {behind[1]:>19.3f}")
    print(json.dumps({
        "benchmark": "snapshot_pause", "keys": a.keys, "value_bytes": a.value_bytes, "chunk": a.chunk,
        "image_bytes": len(data), "baseline_pause_s": round(base, 4), "stepped_longest_pause_s": round(longest, 5),
        "stepped_turns": turns, "stepped_total_cpu_s": round(total, 4),
        "file_inline_s": round(inline[0], 4), "file_inline_loop_stall_s": round(inline[1], 4),
        "file_background_s": round(behind[0], 4), "file_background_loop_stall_s": round(behind[1], 4),
        "dir": a.dir, "ratio_longest_pause_vs_baseline": round(longest / base, 4) if base else None,
        "ratio_file_stall_vs_inline": round(behind[1] / inline[1], 4) if inline[1] else None,
    }))


if __name__ == "__main__":
    main()
