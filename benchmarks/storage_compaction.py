"""How long a durable node's loop stops while its storage log is compacted: at once vs in steps.

``realnet.kvlog.LogStorage`` rewrites its log from the image once the log is over twice the
image. The baseline does it at once (what it did inside the loop before, and still does outside
one): encode every key, write, fsync, rename. The other arm is what it does inside a running
loop now: the image frozen (copy on write), encoded ``--chunk`` keys a loop turn, the temp file
written in a worker thread, the switch back on the loop. Both run inside an asyncio loop with a
1 ms ticker, whose longest gap is the stall clients would see; a writer puts a key every turn
meanwhile, and the log is read back afterwards to check both arms kept every write.

The store: ``--keys`` keys (200,000 by default) of ``--value-bytes`` (100) bytes, written three
times so the log is over twice the image. ``--dir``: where (a tmpfs makes the fsyncs nearly free; the
table names the directory).

Prints a table, then as its last line one JSON object with the figures and the ratio of the
longest stall in steps to the baseline's.

    python benchmarks/storage_compaction.py [--keys 200000] [--value-bytes 100] [--chunk 4096]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))
_sys.path.insert(0, str(_Path(__file__).resolve().parent))
import argparse
import asyncio
import json
import shutil
import tempfile
import time

from _loopstall import LoopStall

from realnet.kvlog import LogStorage


def arm(directory: str, keys: int, value_bytes: int, chunk: int, in_steps: bool) -> tuple[float, float]:
    """(wall seconds from the trigger to the switch, the loop's longest stall meanwhile)."""
    d = tempfile.mkdtemp(prefix="storage-compaction-", dir=directory)
    # the log grows to twice the image outside the loop, with compaction held back
    s = LogStorage(d, compact_bytes=1 << 62, compact_chunk=chunk)
    for r in (b"a", b"b", b"c"):
        for i in range(keys):
            s.put(f"kv:{i:012x}", r * value_bytes)
    s.flush()

    async def run() -> tuple[float, float]:
        n = 0

        def write() -> None:  # a writer goes on meanwhile
            nonlocal n
            s.put(f"w:{n % 1000}", b"x")
            s.sync()
            n += 1

        async with LoopStall(write) as stall:
            await asyncio.sleep(0.04)
            stall.reset()
            t0 = time.perf_counter()
            s.compact_bytes = 1
            if in_steps:
                s.put("trigger", b"1")
                s.flush()  # inside the loop: the compaction starts, in steps
            else:
                s._rewrite()  # the whole rewrite at once, as a flush inside the loop did before
            assert in_steps is False or s._rw is not None, "the flush did not start a compaction"
            for _ in range(1_000_000):  # bounded: the switch follows the steps and the thread
                if s.stats["compactions"]:
                    break
                await asyncio.sleep(0.001)
            wall = time.perf_counter() - t0
        return wall, stall.longest

    try:
        wall, stall = asyncio.run(run())
        want = dict(s.items(""))
        s.close()
        back = LogStorage(d)
        assert dict(back.items("")) == want, "the compacted log lost a write"
        back.close()
        return wall, stall
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=4096, help="keys encoded per loop turn")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    a = ap.parse_args()
    res = {name: min((arm(a.dir, a.keys, a.value_bytes, a.chunk, steps) for _ in range(a.rounds)),
                     key=lambda r: r[1])
           for name, steps in (("at once (baseline)", False), ("in steps", True))}
    print(f"storage log compaction of {a.keys:,} keys of {a.value_bytes} bytes ({a.dir}), "
          f"best of {a.rounds}")
    print(f"{'arm':<20} {'trigger to switch s':>20} {'longest loop stall s':>21}")
    for name, (wall, stall) in res.items():
        print(f"{name:<20} {wall:>20.3f} {stall:>21.4f}")
    base, new = res["at once (baseline)"], res["in steps"]
    print(json.dumps({
        "benchmark": "storage_compaction", "keys": a.keys, "value_bytes": a.value_bytes, "chunk": a.chunk,
        "dir": a.dir, "baseline_wall_s": round(base[0], 4), "baseline_stall_s": round(base[1], 4),
        "steps_wall_s": round(new[0], 4), "steps_stall_s": round(new[1], 4),
        "ratio_stall_vs_baseline": round(new[1] / base[1], 4) if base[1] else None,
    }))


if __name__ == "__main__":
    main()
