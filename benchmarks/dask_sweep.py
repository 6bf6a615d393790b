"""What one seed of ``python -m sim check`` costs, and a sweep on Dask against the process pool.

Three measurements of the default check scenario (:class:`sim.sweep.RunConfig()`: 5 durable
nodes, 5 clients, 200 ops over 10 simulated seconds, the default nemesis ``all``):

- one seed, inline in this process (``processes=1``): wall and CPU seconds per seed, the run
  and its linearizability check together;
- ``--seeds`` seeds on the local process pool (``--workers`` spawned processes), the pool's
  start included (``sweep`` starts it);
- the same seeds on a Dask LocalCluster of ``--workers`` worker processes with one thread each
  (what ``--dask local`` starts), its start timed apart from the sweep.

Both sweeps must give equal results (checked). Prints a table, then as its last line one JSON
object with the figures and ``ratio_dask_vs_pool``: Dask seeds per second (cluster start
excluded) over the pool's; ``ratio_dask_with_start_vs_pool`` counts the cluster's start.

    python benchmarks/dask_sweep.py [--seeds 50] [--workers 2] [--inline 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.sweep import RunConfig, sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=50, help="seeds per sweep (default 50)")
    ap.add_argument("--workers", type=int, default=2, help="pool processes and Dask workers (default 2)")
    ap.add_argument("--inline", type=int, default=10, help="seeds run inline for the cost of one (default 10)")
    args = ap.parse_args()
    try:
        import distributed
    except ImportError:
        sys.exit("this benchmark needs Dask: pip install -e '.[dask]'")
    cfg = RunConfig()
    seeds = list(range(1, args.seeds + 1))

    wall0, cpu0 = time.perf_counter(), time.process_time()
    inline = sweep(range(1, args.inline + 1), cfg, processes=1, progress=False)
    inline_wall, inline_cpu = time.perf_counter() - wall0, time.process_time() - cpu0

    t0 = time.perf_counter()
    pool = sweep(seeds, cfg, processes=args.workers, progress=False)
    pool_wall = time.perf_counter() - t0

    t0 = time.perf_counter()
    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(args.workers)
        start_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        dask = sweep(seeds, cfg, client=client, progress=False)
        dask_wall = time.perf_counter() - t0
    if dask.results != pool.results or inline.results != pool.results[:args.inline]:
        sys.exit("the sweeps' results differ (inline, pool, Dask): a bug")

    per_seed = inline_wall / args.inline
    rows = [
        ("inline, 1 process", args.inline, inline_wall, args.inline / inline_wall),
        (f"process pool, {args.workers} processes", args.seeds, pool_wall, args.seeds / pool_wall),
        (f"Dask LocalCluster, {args.workers} workers", args.seeds, dask_wall, args.seeds / dask_wall),
        ("  + the cluster's start", args.seeds, dask_wall + start_wall, args.seeds / (dask_wall + start_wall)),
    ]
    print(f"python -m sim check, default scenario: {cfg.describe()}")
    print(f"one seed inline: {per_seed * 1000:.1f} ms wall, {inline_cpu / args.inline * 1000:.1f} ms CPU "
          f"(run and check); verdicts of the sweeps: {pool.linearizable} of {args.seeds} linearizable")
    print(f"{'runner':<34}{'seeds':>6}{'wall s':>9}{'seeds/s':>9}")
    for name, n, wall, rate in rows:
        print(f"{name:<34}{n:>6}{wall:>9.2f}{rate:>9.1f}")
    pool_rate, dask_rate = args.seeds / pool_wall, args.seeds / dask_wall
    print(json.dumps({
        "benchmark": "dask_sweep",
        "config": cfg.describe(),
        "seconds_per_seed_inline": round(per_seed, 4),
        "cpu_seconds_per_seed_inline": round(inline_cpu / args.inline, 4),
        "seeds": args.seeds,
        "workers": args.workers,
        "pool_wall_s": round(pool_wall, 3),
        "pool_seeds_per_s": round(pool_rate, 2),
        "dask_cluster_start_s": round(start_wall, 3),
        "dask_wall_s": round(dask_wall, 3),
        "dask_seeds_per_s": round(dask_rate, 2),
        "ratio_dask_vs_pool": round(dask_rate / pool_rate, 3),
        "ratio_dask_with_start_vs_pool": round(args.seeds / (dask_wall + start_wall) / pool_rate, 3),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
