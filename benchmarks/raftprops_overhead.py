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

import argparse
import json
import random
import time

from checker import RaftProperties
from kvcore.raft import LEADER, MemoryRaftStorage, Raft, RaftConfig
from kvcore.raft.messages import RaftMessage
from sim.raftcheck import feed_from_ready


def run(n: int, entries: int, batch: int, compact: int, checked: bool) -> tuple[float, int]:
    """(committed entries per CPU second on the leader, indexes the checker holds at the end)."""
    ids = [str(i) for i in range(1, n + 1)]
    stores = {i: MemoryRaftStorage(ids) for i in ids}
    nodes = {i: Raft(RaftConfig(id=i), stores[i].load(), random.Random(i)) for i in ids}
    props = RaftProperties()
    queue: list[RaftMessage] = []
    clock = [0.0]

    def pump() -> None:
        while True:
            moved = False
            for i, r in nodes.items():
                if r.has_ready():
                    rd = r.ready()
                    rd.persist(stores[i])
                    queue.extend(rd.messages)
                    if checked:
                        feed_from_ready(props, i, r, rd, clock[0])
                    r.advance(rd)
                    moved = True
                    if r.log.applied - r.log.snapshot.meta.index >= compact and not r.has_ready():
                        r.compact(r.log.applied, b"image")
            if queue:
                msgs = queue[:]
                queue.clear()
                for m in msgs:
                    nodes[m.dst].step(m)
                moved = True
            if not moved:
                return

    nodes["1"].campaign()
    pump()
    leader = nodes["1"]
    assert leader.role == LEADER
    start = leader.log.committed
    payload = b"v" * 100
    c0 = time.process_time()
    for k in range(entries // batch):
        clock[0] = float(k)
        for _ in range(batch):
            leader.propose(payload)
        pump()
    cpu = time.process_time() - c0
    done = leader.log.committed - start
    assert done == entries // batch * batch
    assert props.violations() == [] and props.notes() == [], props.violations() + props.notes()
    return done / cpu, props.summary()["held"]


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
