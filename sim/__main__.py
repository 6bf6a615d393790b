"""``python -m sim``: run the default scenario and print its summary (last line: the digest).

Subcommands: ``python -m sim epidemic ...`` (Demers et al. 1987 experiments, :mod:`sim.epidemic`) and
``python -m sim check ...`` (many seeds under a nemesis, checked for linearizability, :mod:`sim.sweep`) and
``python -m sim figures --out docs`` (the README's figures, :mod:`sim.figures`).
"""

from __future__ import annotations

import argparse
import sys

from sim.latency import parse_latency
from sim.scenario import run_default

SUBCOMMANDS = {"epidemic": "sim.epidemic", "check": "sim.sweep", "figures": "sim.figures"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        sub = importlib.import_module(SUBCOMMANDS[argv[0]])
        return int(sub.main(argv[1:]) or 0)
    p = argparse.ArgumentParser(
        prog="python -m sim",
        description="Run a storelab cluster in simulated time: a workload with loss and a partition.",
        epilog="Subcommands: 'python -m sim epidemic --help' (Demers et al. 1987 epidemics), "
        "'python -m sim figures --help' (regenerate the README's figures).",
    )
    p.add_argument("--nodes", type=int, default=5, help="number of nodes (default 5)")
    p.add_argument("--ops", type=int, default=3000, help="client operations in total (default 3000)")
    p.add_argument("--clients", type=int, default=3, help="concurrent clients (default 3)")
    p.add_argument("--seed", type=int, default=1, help="run seed; the same seed gives the same digest")
    p.add_argument("--loss", type=float, default=0.01, help="message loss probability (default 0.01)")
    p.add_argument("--duration", type=float, default=20.0,
                   help="simulated seconds the clients keep working (default 20)")
    p.add_argument("--latency", default="lognormal:0.001,0.5",
                   help="one-way latency: const:S | uniform:LO,HI | exp:MEAN | lognormal:MEDIAN,SIGMA")
    p.add_argument("--no-partition", action="store_true", help="skip the partition in the middle")
    p.add_argument("--no-codec", action="store_true", help="pass message objects without encoding")
    p.add_argument("--history", metavar="FILE", help="write the history as JSON lines to FILE")
    args = p.parse_args(argv)
    if args.nodes < 1 or args.clients < 1 or args.ops < 0:
        p.error("--nodes and --clients must be at least 1 and --ops at least 0")
    if not 0.0 <= args.loss <= 1.0:
        p.error("--loss must be within 0 and 1")
    if args.duration <= 0:
        p.error("--duration must be positive")
    try:
        latency = parse_latency(args.latency)
    except ValueError as e:
        p.error(str(e))
    _, rep = run_default(
        seed=args.seed, nodes=args.nodes, ops=args.ops, clients=args.clients, loss=args.loss,
        duration=args.duration, partition=not args.no_partition, latency=latency,
        codec=not args.no_codec,
    )
    if args.history:
        import json

        with open(args.history, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(ev) + "\n" for ev in rep.history.events())
    print(rep.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
