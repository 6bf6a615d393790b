"""The command line of sweeps: ``python -m sim check`` (what it runs: :mod:`sim.sweep`).

Theory of operation
-------------------
Flags make a :class:`~sim.sweep.RunConfig` and a list of seeds; :func:`~sim.sweep.sweep` runs
them in a local process pool, or, with ``--dask ADDRESS`` (``local``: a LocalCluster here), as
tasks on a Dask cluster (:mod:`sim.sweepdask`). Either way the same summary is printed and the
exit status says the worst: 0 no violation, 1 a violation, 2 a usage error (including ``--dask``
without Dask installed, or no scheduler at the address), 3 a run raised an exception, or a seed's
task could not run on the Dask cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from sim.cliargs import writable_dir
from sim.nemesis import kinds_help
from sim.sweep import WORKLOADS, RunConfig, SweepResult, sweep


def _seed_list(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep and lo:
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    if not out:
        raise argparse.ArgumentTypeError("give at least one seed")
    return out


def build_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = argparse.ArgumentParser(
        prog="python -m sim check",
        description="Run many seeds of the simulated store under a nemesis and check every "
        "history for linearizability.",
        epilog="exit status: 0 no violation, 1 a violation (its seed reproduces it), 2 usage error, "
        "3 a run raised an exception (or, with --dask, a task could not run). " + kinds_help() + " With "
        "--no-durable a crash loses the node's acknowledged writes, which the checker reports (see "
        "sim/nemesis.py).",
    )
    p.add_argument("--workload", choices=WORKLOADS, default=d.workload, help="kv (default) or register (one key)")
    p.add_argument("--nemesis", default=d.nemesis, help=f"comma list of fault kinds (default {d.nemesis})")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--seeds", type=int, default=20, help="how many seeds (default 20)")
    group.add_argument("--seed-list", type=_seed_list, help="exactly these seeds: '3,17,40-45'")
    p.add_argument("--first-seed", type=int, default=1, help="the first of --seeds (default 1)")
    p.add_argument("--nodes", type=int, default=None,
                   help=f"nodes (default {d.nodes}, or --replicas when it is above 1)")
    p.add_argument("--replicas", type=int, default=d.replicas,
                   help="1: one copy of each key (default); the number of nodes: one Raft group of "
                   "all nodes, checked for Figure 3's properties too")
    p.add_argument("--clients", type=int, default=d.clients, help=f"clients (default {d.clients})")
    p.add_argument("--ops", type=int, default=d.ops, help=f"operations per seed (default {d.ops})")
    p.add_argument("--keys", type=int, default=d.keys, help=f"keys of the kv workload (default {d.keys})")
    p.add_argument("--duration", type=float, default=d.duration,
                   help=f"simulated seconds per seed (default {d.duration:g})")
    p.add_argument("--loss", type=float, default=d.loss, help="background message loss (default 0)")
    p.add_argument("--durable", action=argparse.BooleanOptionalAction, default=d.durable,
                   help="nodes write through to durable storage (default); --no-durable: memory "
                   "only, so a crash loses acknowledged writes (--replicas 1 only)")
    p.add_argument("--sync-time", default=d.sync_time, metavar="SPEC",
                   help="how long a storage sync takes, e.g. const:0.002 (default: no time); a "
                   "crash or powerloss during a sync loses the writes it carried")
    p.add_argument("--check-timeout", type=float, default=d.check_timeout,
                   help=f"checker budget per seed, seconds (default {d.check_timeout:g})")
    p.add_argument("--processes", type=int, default=None,
                   help="worker processes, here or in --dask local (default: one per CPU)")
    p.add_argument("--dask", metavar="ADDRESS", help="run the seeds as tasks on the Dask cluster whose "
                   "scheduler is at ADDRESS (tcp://HOST:8786), or 'local' for a LocalCluster here; "
                   "needs the dask extra: pip install -e '.[dask]'")
    p.add_argument("--json", action="store_true", help="end with one line: the totals as a JSON object")
    p.add_argument("--out", metavar="DIR", help="write seed-N.jsonl histories, seed-N.html timelines of "
                   "violations, report.json, summary.txt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The :class:`~sim.sweep.RunConfig` that parsed flags ask for (not yet validated)."""
    nodes = args.nodes if args.nodes is not None else (args.replicas if args.replicas > 1 else RunConfig().nodes)
    return RunConfig(workload=args.workload, nemesis=args.nemesis, nodes=nodes, clients=args.clients,
                     replicas=args.replicas,
                     ops=args.ops, keys=args.keys, duration=args.duration, loss=args.loss,
                     check_timeout=args.check_timeout, durable=args.durable, sync_time=args.sync_time)


def _dask_sweep(p: argparse.ArgumentParser, address: str, seeds: list[int], cfg: RunConfig,
                processes: int | None, progress: bool | None, out: str | None) -> SweepResult | None:
    """:func:`sweep` on a Dask cluster; usage errors (no Dask, no scheduler) exit with status 2,
    a task the cluster could not run prints its sentence and gives None."""
    from sim.sweepdask import DaskSweepFailed, DaskUnavailable, dask_client

    try:
        with dask_client(address, processes) as client:
            return sweep(seeds, cfg, progress=progress, out=out, client=client)
    except DaskUnavailable as e:
        p.error(str(e))
    except DaskSweepFailed as e:
        print(f"{p.prog}: {e}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.seed_list is not None:
        seeds = args.seed_list
    else:
        if args.seeds < 1:
            p.error("--seeds must be at least 1")
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if args.processes is not None and args.processes < 1:
        p.error("--processes must be at least 1")
    cfg = config_from_args(args)
    problems = cfg.problems()
    if problems:
        p.error(" ".join(problems))
    if args.out is not None:  # tried before the first seed runs, not after the last
        problem = writable_dir(args.out)
        if problem:
            p.error(f"--out {problem}")
    progress = False if args.no_progress else None
    res = (sweep(seeds, cfg, processes=args.processes, progress=progress, out=args.out) if args.dask is None
           else _dask_sweep(p, args.dask, seeds, cfg, args.processes, progress, args.out))
    if res is None:
        return 3
    print(res.summary())
    if args.json:
        print(json.dumps(res.to_json()))
    if res.violations or res.figure3_violations:
        return 1
    if res.errors:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
