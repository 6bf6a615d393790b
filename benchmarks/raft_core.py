"""The Raft core's own cost: entries committed and applied per CPU second, in memory.

No network, no disk: a group of N cores (kvcore.raft) exchange messages through one in-memory
queue, each following the Ready contract exactly (save to MemoryRaftStorage, sync when asked,
send, apply, advance). So this measures the consensus logic alone — what a replicated write
costs in CPU before any I/O — for groups of 3 and 5 and proposals batched 1 or 64 per round.
The baseline, measured in the same run, is a group of one (no replication at all); the ratio is
group throughput divided by that. Rates are per second of this process's CPU time.

Prints a table, then as its last line one JSON object with the figures.

    python benchmarks/raft_core.py [--entries 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

from kvcore.raft import LEADER, MemoryRaftStorage, Raft, RaftConfig
from kvcore.raft.messages import RaftMessage
from kvcore.raft.raft import Ready

#: called with every Ready before advance: (node id, core, ready, round number as the time)
OnReady = Callable[[str, Raft, Ready, float], None]


def run(n: int, entries: int, batch: int, *, compact: int = 0, on_ready: OnReady | None = None) -> float:
    """Committed entries per CPU second on the leader of an n-node group. ``compact``: every node
    compacts its log each ``compact`` applied entries (0: never); ``on_ready`` sees every Ready
    (benchmarks/raftprops_overhead.py feeds the Figure 3 checker from it)."""
    ids = [str(i) for i in range(1, n + 1)]
    stores = {i: MemoryRaftStorage(ids) for i in ids}
    nodes = {i: Raft(RaftConfig(id=i), stores[i].load(), random.Random(i)) for i in ids}
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
                    if on_ready is not None:
                        on_ready(i, r, rd, clock[0])
                    r.advance(rd)
                    moved = True
                    if compact and r.log.applied - r.log.snapshot.meta.index >= compact and not r.has_ready():
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
    return done / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=20000)
    args = ap.parse_args()
    rows = {}
    for batch in (1, 64):
        base = run(1, args.entries, batch)
        rows[f"n1_b{batch}"] = base
        for n in (3, 5):
            rows[f"n{n}_b{batch}"] = run(n, args.entries, batch)
    print(f"{'group':<8}{'batch':>6}{'entries/cpu-s':>16}{'vs 1 node':>11}")
    for key, rate in rows.items():
        n, b = key[1:].split("_b")
        print(f"{n:<8}{b:>6}{rate:>16,.0f}{rate / rows[f'n1_b{b}']:>11.3f}")
    print(json.dumps({"entries": args.entries, **{k: round(v) for k, v in rows.items()},
                      "ratio_n3_b1": round(rows["n3_b1"] / rows["n1_b1"], 3),
                      "ratio_n3_b64": round(rows["n3_b64"] / rows["n1_b64"], 3)}))


if __name__ == "__main__":
    main()
