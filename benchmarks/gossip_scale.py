"""Steady-state SWIM at scale: wall time and events per second, against raw SimPy, in one run.

The workload is SWIM membership alone, in steady state: ``SimCluster(seed, n, join="static",
codec=False, observe=False, swim=SwimConfig.lan())`` — every node knows every other from the
static configuration, nobody joins, fails or leaves — run for ``--sim-seconds`` simulated seconds
(60 by default) at n = 1,000 and 10,000 (``--nodes``; ``--with-100k`` adds 100,000 where memory
allows). For each size it reports:

* **build**: wall and CPU seconds to construct the cluster, and the memory it took (growth of the
  process's peak RSS); **peak RSS**: the child process's peak resident set, build and run;
* **run**: wall and CPU seconds for the simulated time; **events**, the SimPy steps taken (events
  popped from the queue: deliveries, timer fires including cancelled timers, scenario calls),
  read from the environment's own event counter before and after, so counting costs nothing per
  event; **events/cpu-s**; messages sent per node per simulated second;
* **raw SimPy**: events per CPU second of SimPy itself doing the least an event can cost (a
  ``Timeout`` whose one callback schedules the next), with as many events pending as the sim
  had, measured in the same process right after the run; and the ratio of the two;
* **sim s/wall s**: simulated seconds per wall second (above 1: faster than real time).

The ratio is a cost per event, and what an event is changed once: a member's gossip rounds sleep
while it has nothing to send (:mod:`kvcore.membership.gossip`), so a steady cluster no longer
spends 5 cheap events per member per second on empty rounds. At 10,000 nodes that halved the
events of a simulated minute (5.58 M to 2.65 M) and the run's wall time (63.8 to 34.0 s, same
machine, same hour), and lowered the ratio (0.178 to 0.162), the events left being the costly
ones: compare wall times, or sim s/wall s, across that change, not ratios.

Each size runs in a child process, so memory figures do not mix and a size that cannot run does
not take the others down. Before a size is built, its memory is predicted from a fit of
``a + b·n + c·n²`` bytes to traced allocations of clusters of 100 to 600 nodes. The nodes of a
static cluster share one record per member and one slot map (copy on write:
:mod:`kvcore.membership.table`), so the n² term is about zero until nodes learn otherwise; each
node's own state is a few KB. A size whose prediction exceeds ``--max-memory-gb`` (default: 80%
of the memory available now) is skipped, with the prediction and its parts, rather than run into
the OOM killer; ``--force`` runs it anyway.

Rates are per CPU second (``time.process_time``), steadier than wall time on a shared machine;
both are printed. Prints a table, then as its last line one JSON object with every figure.

    python benchmarks/gossip_scale.py [--nodes 1000 10000] [--with-100k] [--sim-seconds 60] [--max-memory-gb G]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _baseline import event_mark, events_since, peak_rss, rate_and_baseline

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CALIBRATION_SIZES = (100, 200, 400, 600)
#: traced Python allocations understate the resident set a little (allocator slack); measured
#: at 1,000 nodes the build's RSS growth is within a few percent of the traced bytes
RSS_OVER_TRACED = 1.05


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _build(n: int, seed: int) -> Any:
    from kvcore.membership import SwimConfig
    from sim.cluster import SimCluster

    return SimCluster(seed, n, join="static", codec=False, observe=False, swim=SwimConfig.lan())


# --- child processes -------------------------------------------------------------------------


def child_calibrate(seed: int) -> dict[str, Any]:
    """Traced bytes and build seconds of small clusters, for the memory and time predictions."""
    import tracemalloc

    _build(10, seed)  # warm up first: lazy imports and caches are not per-node costs
    out = []
    for n in CALIBRATION_SIZES:
        gc.collect()
        tracemalloc.start()
        c = _build(n, seed)
        traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del c
        gc.collect()
        t0 = time.process_time()
        c = _build(n, seed)
        cpu = time.process_time() - t0
        members = sum(len(node.membership.members) for node in c.nodes())  # records held (shared or own)
        del c
        out.append({"n": n, "traced_bytes": traced, "build_cpu_s": cpu, "member_records": members})
    return {"calibration": out}


def child_run(n: int, sim_seconds: float, seed: int, freeze: bool) -> dict[str, Any]:
    gc.collect()
    rss0 = peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    cluster = _build(n, seed)
    build_wall, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    build_rss = peak_rss() - rss0
    env = cluster.env
    gc.collect()
    if freeze:
        gc.freeze()  # the cluster is long-lived: keep the collector from rescanning it
    mark = event_mark(env)
    sent0 = cluster.net.stats.sent
    t0, c0 = time.perf_counter(), time.process_time()
    cluster.run(until=env.now + sim_seconds)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = events_since(env, mark)
    sent = cluster.net.stats.sent - sent0
    by_kind = {k: m for k, (m, _b) in cluster.messages_by_kind().items()}
    pending = len(env._queue)
    peak = peak_rss() - rss0
    del cluster
    rate, base = rate_and_baseline(steps, cpu, pending)
    return {
        "nodes": n,
        "sim_seconds": sim_seconds,
        "build_wall_s": round(build_wall, 2),
        "build_cpu_s": round(build_cpu, 2),
        "build_mb": round(build_rss / 2**20),
        "peak_mb": round(peak / 2**20),
        "peak_rss_mb": round(peak_rss() / 2**20),
        "run_wall_s": round(wall, 2),
        "run_cpu_s": round(cpu, 2),
        "events": steps,
        "events_per_cpu_s": round(rate),
        "events_per_wall_s": round(steps / wall) if wall > 0 else 0,
        "pending_events": pending,
        "messages": sent,
        "msgs_per_node_per_s": round(sent / n / sim_seconds, 3),
        "messages_by_kind": by_kind,
        "raw_simpy_events_per_s": round(base),
        "ratio_vs_raw_simpy": round(rate / base, 3),
        "sim_seconds_per_wall_s": round(sim_seconds / wall, 3) if wall > 0 else 0,
        "gc_frozen": freeze,
    }


def _child(args: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": f"exit status {proc.returncode}", "stderr": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- prediction ------------------------------------------------------------------------------


def fit_quadratic(points: list[tuple[int, float]]) -> tuple[float, float, float]:
    """Least-squares a + b·n + c·n² through the points, as (a, b, c)."""
    import numpy as np

    ns = np.array([p[0] for p in points], dtype=float)
    ys = np.array([p[1] for p in points], dtype=float)
    (a, b, c), *_ = np.linalg.lstsq(np.vander(ns, 3, increasing=True), ys, rcond=None)
    return float(a), float(b), float(c)


def predict(cal: list[dict[str, Any]], n: int) -> dict[str, float]:
    a, b, c = fit_quadratic([(p["n"], p["traced_bytes"]) for p in cal])
    ta, tb, tc = fit_quadratic([(p["n"], p["build_cpu_s"]) for p in cal])
    # shared records leave no true n² term: a slightly negative fit is noise, and would predict
    # less than nothing at 100,000 nodes
    c, tc = max(0.0, c), max(0.0, tc)
    records_per_n2 = cal[-1]["member_records"] / cal[-1]["n"] ** 2
    return {
        "memory_gb": RSS_OVER_TRACED * (a + b * n + c * n * n) / 2**30,
        "per_node_kb": b / 1024,
        "per_member_record_bytes": c / records_per_n2,
        "member_records": records_per_n2 * n * n,
        "build_cpu_s": max(0.0, ta + tb * n + tc * n * n),
    }


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--with-100k", action="store_true",
                   help="add 100,000 nodes to --nodes (skipped when predicted not to fit in memory)")
    p.add_argument("--sim-seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-memory-gb", type=float, default=None,
                   help="skip sizes predicted to need more (default: 80%% of MemAvailable)")
    p.add_argument("--force", action="store_true", help="run every size whatever its prediction")
    p.add_argument("--no-gc-freeze", action="store_true",
                   help="let the garbage collector rescan the cluster during the run (slower)")
    p.add_argument("--child-run", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-calibrate", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_calibrate:
        print(json.dumps(child_calibrate(args.seed)))
        return
    if args.child_run:
        print(json.dumps(child_run(args.child_run, args.sim_seconds, args.seed, not args.no_gc_freeze)))
        return

    if args.with_100k and 100_000 not in args.nodes:
        args.nodes.append(100_000)
    limit_gb = args.max_memory_gb or 0.8 * _available_memory() / 2**30
    cal = _child(["--child-calibrate", "--seed", str(args.seed)])
    if "error" in cal:
        print(cal["stderr"], file=sys.stderr)
        raise SystemExit(f"calibration failed: {cal['error']}")
    calibration = cal["calibration"]
    results = []
    for n in args.nodes:
        pred = predict(calibration, n)
        row: dict[str, Any] = {"nodes": n, "predicted": {k: round(v, 2) for k, v in pred.items()}}
        if pred["memory_gb"] > limit_gb and not args.force:
            row["skipped"] = (
                f"predicted {pred['memory_gb']:.1f} GB > limit {limit_gb:.1f} GB: "
                f"{pred['member_records']:.3g} member records held (n x n, shared) at about "
                f"{pred['per_member_record_bytes']:.0f} B each, plus {pred['per_node_kb']:.0f} KB per node "
                f"(its own state); predicted build {pred['build_cpu_s']:.0f} CPU s"
            )
            results.append(row)
            print(f"n={n}: skipped: {row['skipped']}", file=sys.stderr, flush=True)
            continue
        print(f"n={n}: predicted {pred['memory_gb']:.2f} GB, build {pred['build_cpu_s']:.0f} CPU s; running",
              file=sys.stderr, flush=True)
        child = ["--child-run", str(n), "--sim-seconds", str(args.sim_seconds), "--seed", str(args.seed)]
        row.update(_child([*child, "--no-gc-freeze"] if args.no_gc_freeze else child))
        results.append(row)

    print(f"steady-state SWIM (LAN preset, static join, codec off), {args.sim_seconds:g} simulated seconds, "
          f"seed {args.seed}")
    hdr = (f"{'nodes':>7} {'build s':>8} {'build MB':>9} {'peak RSS MB':>12} {'run wall s':>11} {'run cpu s':>10} "
           f"{'events':>11} {'events/cpu-s':>13} {'msgs/node/s':>12} {'raw SimPy/s':>12} {'ratio':>6} "
           f"{'sim s/wall s':>12}")
    print(hdr)
    for r in results:
        if "skipped" in r or "error" in r:
            print(f"{r['nodes']:>7} {'skipped' if 'skipped' in r else 'failed'}: {r.get('skipped') or r.get('error')}")
            continue
        print(f"{r['nodes']:>7} {r['build_wall_s']:>8.1f} {r['build_mb']:>9} {r['peak_rss_mb']:>12} {r['run_wall_s']:>11.1f} "
              f"{r['run_cpu_s']:>10.1f} {r['events']:>11,} {r['events_per_cpu_s']:>13,} "
              f"{r['msgs_per_node_per_s']:>12.2f} {r['raw_simpy_events_per_s']:>12,} {r['ratio_vs_raw_simpy']:>6.3f} "
              f"{r['sim_seconds_per_wall_s']:>12.2f}")
    print(json.dumps({
        "benchmark": "gossip_scale",
        "sim_seconds": args.sim_seconds,
        "seed": args.seed,
        "memory_limit_gb": round(limit_gb, 1),
        "calibration": calibration,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "results": results,
    }))


if __name__ == "__main__":
    main()
