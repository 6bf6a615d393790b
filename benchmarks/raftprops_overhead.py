"""What checking Figure 3 on every run costs: a Raft group's throughput with and without the checker.

A group of N cores (kvcore.raft) exchange messages through one in-memory queue, each following
the Ready contract (save to MemoryRaftStorage, sync when asked, send, apply, advance), as
benchmarks/raft_core.py does; every node compacts its log each ``--compact`` applied entries.
The checked run feeds every Ready to one :class:`checker.RaftProperties` through
:func:`sim.raftcheck.feed_from_ready`. The baseline, measured in the same run, is the same group
unchecked; the ratio is checked throughput divided by it (1.0: free). Rates are entries committed
per second of this process's CPU time. The table also gives the indexes the checker still holds
at the end (its memory: pruned below every node's snapshot).

Prints a table, then as its last line one JSON object with the figures.

    python benchmarks/raftprops_overhead.py [--entries 20000] [--compact 1000]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
import argparse
import functools
import json

import raft_core

from checker import RaftProperties
from sim.raftcheck import feed_from_ready


def run(n: int, entries: int, batch: int, compact: int, checked: bool) -> tuple[float, int]:
    """(committed entries per CPU second on the leader, indexes the checker holds at the end):
    raft_core's group, its Readies fed to the checker when ``checked``."""
    props = RaftProperties()
    feed = functools.partial(feed_from_ready, props) if checked else None
    rate = raft_core.run(n, entries, batch, compact=compact, on_ready=feed)
    assert props.violations() == [] and props.notes() == [], props.violations() + props.notes()
    return rate, props.summary()["held"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--compact", type=int, default=1000)
    args = ap.parse_args()
    rows: dict[str, tuple[float, float, int]] = {}
    for n in (3, 5):
        for batch in (1, 64):
            base, _ = run(n, args.entries, batch, args.compact, checked=False)
            rate, held = run(n, args.entries, batch, args.compact, checked=True)
            rows[f"n{n}_b{batch}"] = (base, rate, held)
    print(f"{'group':<7}{'batch':>6}{'unchecked/cpu-s':>17}{'checked/cpu-s':>15}{'ratio':>8}{'held':>7}")
    for key, (base, rate, held) in rows.items():
        n, b = key[1:].split("_b")
        print(f"{n:<7}{b:>6}{base:>17,.0f}{rate:>15,.0f}{rate / base:>8.3f}{held:>7}")
    out: dict[str, object] = {"entries": args.entries, "compact": args.compact}
    for key, (base, rate, _held) in rows.items():
        out[f"{key}_unchecked"] = round(base)
        out[f"{key}_checked"] = round(rate)
        out[f"ratio_{key}"] = round(rate / base, 3)
    out["max_held"] = max(held for _, _, held in rows.values())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
