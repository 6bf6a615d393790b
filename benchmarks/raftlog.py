"""The file-backed Raft log (realnet.raftlog): entries/s with an fsync per entry vs group commit.

Each arm appends ``--entries`` entries of 100 bytes (with a HardState per save, as the Ready loop
writes them) to a fresh log in a temporary directory: the baseline syncs after every save (one
fsync per entry), the other arm syncs once per ``--group`` saves (one fsync for the group, which
is what a node's Ready loop gets when many proposals arrive between two Readys). Wall-clock rates
(fsync is I/O, not CPU), the best of ``--rounds``. What the figures mean depends on the disk under
``--dir`` (a tmpfs makes fsync nearly free; the table names the directory).

Prints a table, then as its last line one JSON object with the figures and the ratio.

    python benchmarks/raftlog.py [--entries 2000] [--group 64] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time

from kvcore.raft.messages import Entry, HardState
from realnet.raftlog import FileRaftStorage


def run(directory: str, entries: int, group: int) -> tuple[float, int]:
    """(entries per second, fsyncs) for one arm in a fresh log under ``directory``."""
    d = tempfile.mkdtemp(prefix="raftlog-bench-", dir=directory)
    try:
        s = FileRaftStorage(d, ["a", "b", "c"])
        payload = b"v" * 100
        t0 = time.perf_counter()
        for i in range(1, entries + 1):
            s.save(HardState(term=1, vote="a", commit=i - 1), [Entry(term=1, index=i, data=payload)], None)
            if i % group == 0:
                s.sync()
        s.sync()
        rate = entries / (time.perf_counter() - t0)
        fsyncs = s.stats["fsyncs"]
        s.close()
        return rate, fsyncs
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=2000)
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the logs are written")
    a = ap.parse_args()
    arms = {"sync per entry": 1, f"group commit ({a.group}/sync)": a.group}
    best: dict[str, tuple[float, int]] = {}
    for _ in range(a.rounds):
        for name, g in arms.items():
            rate, fsyncs = run(a.dir, a.entries, g)
            if name not in best or rate > best[name][0]:
                best[name] = (rate, fsyncs)
    print(f"raft log in {a.dir}: {a.entries} entries of 100 bytes, best of {a.rounds}")
    print(f"{'arm':<28}{'entries/s':>12}{'fsyncs':>10}")
    for name, (rate, fsyncs) in best.items():
        print(f"{name:<28}{rate:>12,.0f}{fsyncs:>10}")
    per, grp = best["sync per entry"], best[f"group commit ({a.group}/sync)"]
    print(json.dumps({"benchmark": "raftlog", "dir": a.dir, "entries": a.entries, "group": a.group,
                      "sync_per_entry_eps": round(per[0]), "group_commit_eps": round(grp[0]),
                      "fsyncs_per_entry_arm": per[1], "fsyncs_group_arm": grp[1],
                      "ratio": round(grp[0] / per[0], 2)}))


if __name__ == "__main__":
    main()
