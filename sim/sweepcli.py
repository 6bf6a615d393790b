"""The command line of sweeps: ``python -m sim check`` (what it runs: :mod:`sim.sweep`).

Theory of operation
-------------------
Flags make a :class:`~sim.sweep.RunConfig` (:func:`config_from_args`) and a range or list of
seeds (at most :data:`~sim.sweep.MAX_SEEDS`); :func:`~sim.sweep.sweep` runs them in a local
process pool, or, with ``--dask ADDRESS`` (``local``: a LocalCluster here), as tasks on a Dask
cluster (:mod:`sim.sweepdask`). Every flag is checked before the first seed runs (numbers finite
and in range, ``--out`` a directory this process can write), so a usage error never costs a
sweep. Either way the same summary is printed and the exit status says the worst, in the order
of :data:`EXIT_STATUSES`: 1 a violation (of linearizability, or of a Raft property of Figure 3),
3 a run raised an exception (or a seed's task could not run on the Dask cluster), 2 a seed was
undecided (its check ran out of ``--check-timeout``, as ``python -m checker`` says 2) or a usage
error (including ``--dask`` without Dask installed, or no scheduler at the address), 0 every
seed linearizable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from sim.cliargs import default_nodes, writable_dir
from sim.nemesis import kinds_help
from sim.sweep import MAX_SEEDS, WORKLOADS, RunConfig, SweepResult, sweep

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_UNDECIDED = 2
EXIT_USAGE = 2
EXIT_ERROR = 3
#: the exit statuses, most serious first: a proof of a violation outranks a run that raised,
#: which outranks a check that ran out of time
EXIT_STATUSES = (EXIT_VIOLATION, EXIT_ERROR, EXIT_UNDECIDED, EXIT_OK)


def _seed_list(text: str) -> list[int]:
    """``'3,17,40-45'`` -> the seeds, in order, each once; the count is checked against
    :data:`~sim.sweep.MAX_SEEDS` before a range is written out."""
    parts: list[range] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            if sep and lo:
                first, last = int(lo), int(hi)
                if first > last:
                    raise argparse.ArgumentTypeError(f"the seed range {part!r} is empty: its first seed is "
                                                     "above its last")
                parts.append(range(first, last + 1))
            else:
                parts.append(range(int(part), int(part) + 1))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a seed or a range of seeds like 40-45") from None
    total = sum(len(r) for r in parts)
    if total > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_SEEDS} seeds a sweep, not {total}")
    out = list(dict.fromkeys(s for r in parts for s in r))
    if not out:
        raise argparse.ArgumentTypeError("give at least one seed")
    return out


def build_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = argparse.ArgumentParser(
        prog="python -m sim check",
        description="Run many seeds of the simulated store under a nemesis and check every "
        "history for linearizability.",
        epilog="exit status, the most serious that happened: 1 a violation (of linearizability, or of a "
        "Raft property of Figure 3; its seed reproduces it), 3 a run raised an exception (or, with "
        "--dask, a task could not run), 2 a seed undecided (its check ran out of --check-timeout) or "
        "a usage error, 0 every seed linearizable. " + kinds_help() + " With --no-durable a crash "
        "loses the node's acknowledged writes, which the checker reports (see sim/nemesis.py).",
    )
    p.add_argument("--workload", choices=WORKLOADS, default=d.workload, help="kv (default) or register (one key)")
    p.add_argument("--nemesis", default=d.nemesis, help=f"comma list of fault kinds (default {d.nemesis})")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--seeds", type=int, default=20, help=f"how many seeds (default 20, at most {MAX_SEEDS})")
    group.add_argument("--seed-list", type=_seed_list, help="exactly these seeds: '3,17,40-45'")
    p.add_argument("--first-seed", type=int, default=1, help="the first of --seeds (default 1)")
    p.add_argument("--nodes", type=int, default=None,
                   help=f"nodes (default {d.nodes}, or --replicas when it is above 1)")
    p.add_argument("--replicas", type=int, default=d.replicas,
                   help="1: one copy of each key (default); the number of nodes: one Raft group of "
                   "all nodes, checked for Figure 3's properties too")
    p.add_argument("--read-mode", default=d.read_mode, metavar="{safe,lease}",
                   help="how the Raft group's leader confirms reads (--replicas above 1): safe, a "
                   "heartbeat round per batch (default); lease, none while its lease holds "
                   "(thesis §6.4.1: linearizable only while clocks drift within the bound; try "
                   "--nemesis partition,clock)")
    p.add_argument("--clients", type=int, default=d.clients, help=f"clients (default {d.clients})")
    p.add_argument("--ops", type=int, default=d.ops, help=f"operations per seed, over all clients (default {d.ops})")
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
                   "the seeds not found linearizable (violations and undecided), report.json, summary.txt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The :class:`~sim.sweep.RunConfig` that parsed flags ask for (not yet validated)."""
    nodes = default_nodes(args.nodes, args.replicas, RunConfig().nodes)
    return RunConfig(workload=args.workload, nemesis=args.nemesis, nodes=nodes, clients=args.clients,
                     replicas=args.replicas, read_mode=args.read_mode,
                     ops=args.ops, keys=args.keys, duration=args.duration, loss=args.loss,
                     check_timeout=args.check_timeout, durable=args.durable, sync_time=args.sync_time)


def exit_status(res: SweepResult) -> int:
    """The most serious outcome of the sweep (see :data:`EXIT_STATUSES`)."""
    if res.violations or res.figure3_violations:
        return EXIT_VIOLATION
    if res.errors:
        return EXIT_ERROR
    if res.unknown:
        return EXIT_UNDECIDED
    return EXIT_OK


def _dask_sweep(p: argparse.ArgumentParser, address: str, seeds: Sequence[int], cfg: RunConfig,
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
    seeds: Sequence[int]
    if args.seed_list is not None:
        seeds = args.seed_list
    else:
        if not 1 <= args.seeds <= MAX_SEEDS:
            p.error(f"--seeds must be within 1 and {MAX_SEEDS} (a sweep keeps every seed's result; run "
                    f"more as several sweeps with --first-seed), not {args.seeds}.")
        seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.processes is not None and args.processes < 1:
        p.error("--processes must be at least 1")
    cfg = config_from_args(args)
    problems = cfg.problems()
    if problems:
        p.error(" ".join(problems))
    if args.out is not None:
        problem = writable_dir(args.out)
        if problem:
            p.error(f"--out {problem}")
    progress = False if args.no_progress else None
    res = (sweep(seeds, cfg, processes=args.processes, progress=progress, out=args.out) if args.dask is None
           else _dask_sweep(p, args.dask, seeds, cfg, args.processes, progress, args.out))
    if res is None:
        return EXIT_ERROR
    print(res.summary())
    if args.json:
        print(json.dumps(res.to_json()))
    return exit_status(res)


if __name__ == "__main__":
    sys.exit(main())
