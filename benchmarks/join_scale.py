"""Joins at scale: N nodes join a running cluster one by one through its seeds, until every view
holds every member; wall time against raw SimPy, in one run.

The workload: a static cluster of ``--seeds`` nodes (3 by default, LAN preset, codec off) that
owns every slot; then ``--nodes`` new, empty nodes (1,000 by default) are added one by one,
``--spacing`` simulated seconds apart (0.01 s: the whole thousand within 10 s), each joining
through the seeds' peer addresses (a ``PushPull`` marked join, answered with the seed's full
state), as ``storelab cluster add-node`` grows a real cluster. The run goes on until every node's
view holds every member (``len(node.membership.members)`` is the cluster's size on every node,
checked every ``--check-every`` simulated seconds), or ``--deadline`` simulated seconds.

The cluster grows inside the run, so the garbage collector is frozen at every view check
(``gc.freeze``: what exists by then is long-lived and need not be rescanned; ``--no-gc-freeze``
lets it rescan everything, slower), as ``gossip_scale.py`` freezes it once after its build.

It reports the simulated time at which the last join was started and at which every view was
complete, the wall and CPU seconds of the whole run (build included: the cluster grows inside
the run), the SimPy steps taken, messages by kind, the peak memory, and the ratio of the run's
events per CPU second to raw SimPy's with as many events pending (:mod:`_baseline`).

Prints a table, then as its last line one JSON object with every figure.

    python benchmarks/join_scale.py [--nodes 1000] [--spacing 0.01] [--seed 1]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

from _baseline import event_mark, events_since, peak_rss, rate_and_baseline

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def complete_views(cluster: Any, size: int) -> int:
    """How many live nodes hold ``size`` members in their view."""
    return sum(1 for node in cluster.nodes() if len(node.membership.members) == size)


def run(nodes: int, seeds: int, spacing: float, seed: int, check_every: float, deadline: float,
        freeze: bool = True) -> dict[str, Any]:
    from kvcore.membership import SwimConfig
    from sim.cluster import SimCluster

    rss0 = peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    cluster = SimCluster(seed, seeds, join="static", codec=False, observe=False, swim=SwimConfig.lan())
    for i in range(nodes):
        cluster.add_node(f"n{seeds + i + 1}", at=i * spacing)
    size = seeds + nodes
    last_join = (nodes - 1) * spacing
    env = cluster.env
    mark = event_mark(env)
    converged: float | None = None
    while cluster.now < deadline:
        cluster.run(until=cluster.now + check_every)
        if freeze:
            gc.freeze()
        if cluster.now >= last_join and complete_views(cluster, size) == size:
            converged = cluster.now
            break
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = events_since(env, mark)
    pending = len(env._queue)
    by_kind = {k: m for k, (m, _b) in cluster.messages_by_kind().items()}
    complete = complete_views(cluster, size)
    peak = peak_rss() - rss0
    del cluster
    rate, base = rate_and_baseline(steps, cpu, pending)
    return {
        "nodes": nodes,
        "seeds": seeds,
        "spacing_s": spacing,
        "last_join_at_s": round(last_join, 3),
        "all_views_complete_at_s": converged,
        "views_complete": complete,
        "cluster_size": size,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "events": steps,
        "events_per_cpu_s": round(rate),
        "pending_events": pending,
        "messages_by_kind": by_kind,
        "peak_mb": round(peak / 2**20),
        "raw_simpy_events_per_s": round(base),
        "ratio_vs_raw_simpy": round(rate / base, 3) if base else 0.0,
        "gc_frozen": freeze,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000, help="nodes that join, one by one (default 1000)")
    p.add_argument("--seeds", type=int, default=3, help="nodes of the static cluster they join (default 3)")
    p.add_argument("--spacing", type=float, default=0.01, help="simulated seconds between joins (default 0.01)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--check-every", type=float, default=0.5, help="simulated seconds between view checks")
    p.add_argument("--deadline", type=float, default=300.0, help="give up after this many simulated seconds")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="let the garbage collector rescan the growing cluster (slower)")
    args = p.parse_args()
    r = run(args.nodes, args.seeds, args.spacing, args.seed, args.check_every, args.deadline,
            not args.no_gc_freeze)
    print(f"{args.nodes} nodes join a {args.seeds}-node cluster one by one, {args.spacing:g} s apart "
          f"(LAN preset, codec off), seed {args.seed}")
    print(f"{'nodes':>6} {'last join s':>12} {'complete at s':>14} {'views':>11} {'wall s':>7} {'cpu s':>6} "
          f"{'events':>10} {'peak MB':>8} {'ratio':>6}")
    done = r["all_views_complete_at_s"]
    at = f"{done:.1f}" if done is not None else "never"
    print(f"{r['nodes']:>6} {r['last_join_at_s']:>12.2f} {at:>14} "
          f"{r['views_complete']:>5}/{r['cluster_size']:<5} {r['wall_s']:>7.2f} {r['cpu_s']:>6.2f} "
          f"{r['events']:>10,} {r['peak_mb']:>8} {r['ratio_vs_raw_simpy']:>6.3f}")
    print(json.dumps({"benchmark": "join_scale", "seed": args.seed, "python": sys.version.split()[0],
                      "results": [r]}))


if __name__ == "__main__":
    main()
