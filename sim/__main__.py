"""``python -m sim``: run the default scenario and print its summary (last line: the digest).

Theory of operation
-------------------
Without a subcommand it runs :func:`sim.scenario.run_default` (a paced workload with loss and a
partition in the middle) and prints the run's summary, with two lines added:

- after the first line, how long the run lasted in simulated time and why: the clients are
  paced to span ``--duration`` seconds, but an operation that waits for a time-out (a forward
  time-out, or the client's own) holds its client up, and a client that fell behind catches up
  only as fast as operations complete, so the run ends when the slowest client's last operation
  answered (:func:`explain_time`);
- before the digest, the verdict of :func:`checker.check` on the run's recorded history
  (linearizable, not, or undecided when ``--check-timeout`` ran out; ``--no-check`` skips it).

Neither line changes the run: the digest (still the last line) is the same for the same seed.

Every flag is checked before the run: numbers finite and in range, the latency one that can be
sampled, ``--history FILE`` a file this process can write (tried, changing nothing), so a bad
one costs a sentence and exit status 2, not a run. ``--replicas R`` alone runs R nodes, as in
``python -m sim check``; ``--read-mode lease`` has the group's leader answer reads on its lease
(thesis §6.4.1) instead of a heartbeat round (``safe``, the default).

Subcommands are a table, :data:`SUBCOMMANDS` (name -> a module with ``main(argv)``); ``--help``
lists every entry of it, so adding a subcommand is one line there (and, optionally, one in
:data:`SUBCOMMAND_HELP`; without one, the module docstring's first line is shown).

Output into a closed pipe (``python -m sim | head -3``) ends quietly with status 141, as the
Python documentation's note on SIGPIPE advises; Ctrl-C ends with 130, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from kvcore.replica import ReplicaConfig
from sim.cliargs import MAX_DURATION, default_nodes, finite, read_mode_problems, writable_file
from sim.latency import parse_latency
from sim.scenario import RunReport, run_default

#: subcommand -> the module whose ``main(argv)`` runs it (``python -m sim NAME --help`` for each)
SUBCOMMANDS = {"epidemic": "sim.epidemic", "check": "sim.sweep", "figures": "sim.figures",
               "raft-elections": "sim.raftlab"}
#: one line per subcommand for ``python -m sim --help`` (else: the module docstring's first line)
SUBCOMMAND_HELP = {
    "epidemic": "the epidemics of Demers et al. (1987): residue, traffic and delays against the paper",
    "check": "many seeds under a nemesis, every history checked for linearizability",
    "figures": "regenerate the README's figures (join convergence, false positives, a timeline, R = 1 vs R = 3)",
    "raft-elections": "crash a Raft leader, time the election (the Raft paper's Figure 16, AvailSim)",
}

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


def _subcommand_help(name: str) -> str:
    if name in SUBCOMMAND_HELP:
        return SUBCOMMAND_HELP[name]
    try:
        doc = importlib.import_module(SUBCOMMANDS[name]).__doc__ or ""
    except ImportError:
        return ""
    return doc.strip().split("\n")[0].rstrip(".")


def subcommands_epilog() -> str:
    """The subcommand listing of ``--help``, generated from :data:`SUBCOMMANDS`."""
    width = max(len(n) for n in SUBCOMMANDS)
    lines = ["subcommands (python -m sim NAME --help for each):"]
    lines += [f"  {name:<{width}}  {_subcommand_help(name)}" for name in SUBCOMMANDS]
    return "\n".join(lines)


def explain_time(rep: RunReport, duration: float) -> str:
    """Why the run lasted as long as it did, in simulated seconds (one line)."""
    total = rep.sim_time
    ops = [op for op in rep.history if op.complete is not None]
    extra = total - duration
    if ops and -extra > max(0.05 * duration, 0.1):
        # each client's operations start a pace apart from 0, so its last starts a pace before
        # the end: few operations over a long duration end well before it
        return (f"simulated {total:.1f} s: the last of {len(ops)} operations, paced over {duration:g} s, "
                "answered then")
    if not ops or extra <= max(0.05 * duration, 0.1):
        return f"simulated {total:.1f} s: the {duration:g} s of paced workload"
    last = max(ops, key=lambda op: op.complete or 0.0)
    waits = [op for op in ops if op.process == last.process and op.outcome == "unknown"]
    waited = sum(op.latency or 0.0 for op in waits)
    why = (f"client {last.process} fell behind its pace: {len(waits)} of its operations waited "
           f"{waited:.1f} s in all for a time-out" if waits
           else f"client {last.process} fell behind its pace")
    return (f"simulated {total:.1f} s: {duration:g} s of paced workload + {extra:.1f} s until the last "
            f"operation answered ({why}, and a client catches up only as fast as operations complete)")


def verdict_line(rep: RunReport, timeout: float) -> tuple[str, int]:
    """The checker's verdict on the run's history, in one line, and the exit status it gives
    (as ``python -m checker``'s and ``sim check``'s: 0 linearizable, 1 not, 2 undecided)."""
    from checker import check

    result = check(rep.history.events(), model="kv", timeout=timeout)
    ops = f"{result.total_ops} operations, checked in {result.elapsed:.2f} s"
    if result.linearizable:
        return f"history: linearizable ({ops})", 0
    if result.linearizable is None:
        return f"history: undecided: the check ran out of its {timeout:g} s budget ({ops})", 2
    key = result.counterexample.key if result.counterexample is not None else None
    where = f"key {key!r}" if key is not None else "a key"
    return (f"history: NOT linearizable at {where} ({ops}); write it with --history FILE and run "
            "python -m checker FILE for the witness"), 1


def build_parser(with_epilog: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sim",
        description="Run a storelab cluster in simulated time: a workload with loss and a partition; "
        "print the summary, whether the history is linearizable, and the run's digest.",
        epilog=subcommands_epilog() if with_epilog else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--nodes", type=int, default=None,
                   help="number of nodes (default 5, or --replicas when it is above 1)")
    p.add_argument("--ops", type=int, default=3000,
                   help="client operations in total, shared out as evenly as can be (default 3000)")
    p.add_argument("--clients", type=int, default=3, help="concurrent clients (default 3)")
    p.add_argument("--seed", type=int, default=1, help="run seed; the same seed gives the same digest")
    p.add_argument("--loss", type=float, default=0.01, help="message loss probability (default 0.01)")
    p.add_argument("--duration", type=float, default=20.0,
                   help="simulated seconds the clients' paced workload spans (default 20); the run "
                   "lasts longer when operations wait for time-outs")
    p.add_argument("--latency", default="lognormal:0.001,0.5",
                   help="one-way latency: const:S | uniform:LO,HI | exp:MEAN | lognormal:MEDIAN,SIGMA")
    p.add_argument("--no-partition", action="store_true", help="skip the partition in the middle")
    p.add_argument("--replicas", type=int, default=1, metavar="R",
                   help="1: one copy of each key (default); the number of nodes: one Raft group of "
                   "all nodes serving every key (--replicas 3 alone: 3 nodes)")
    p.add_argument("--read-mode", default="safe", metavar="{safe,lease}",
                   help="how the Raft group's leader confirms reads (--replicas above 1): safe, a "
                   "heartbeat round per batch (default); lease, none while its lease holds "
                   "(thesis §6.4.1)")
    p.add_argument("--no-codec", action="store_true", help="pass message objects without encoding")
    p.add_argument("--history", metavar="FILE", help="write the history as JSON lines to FILE")
    p.add_argument("--check-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="time budget of the linearizability check (default 60)")
    p.add_argument("--no-check", action="store_true", help="do not check the history")
    return p


def run(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        sub = importlib.import_module(SUBCOMMANDS[argv[0]])
        return int(sub.main(argv[1:]) or 0)
    # the epilog names every subcommand's module; build it only when help is asked for
    p = build_parser(with_epilog=any(a in ("-h", "--help") for a in argv))
    args = p.parse_args(argv)
    # as in `python -m sim check`: --replicas R alone is one Raft group of R nodes
    nodes = default_nodes(args.nodes, args.replicas, 5)
    if nodes < 1 or args.clients < 1 or args.ops < 0:
        p.error("--nodes and --clients must be at least 1 and --ops at least 0")
    if not 0.0 <= args.loss <= 1.0:
        p.error("--loss must be within 0 and 1")
    if not (finite(args.duration) and 0 < args.duration <= MAX_DURATION):
        p.error(f"--duration must be positive and at most {MAX_DURATION:,.0f} s (a simulated day), "
                f"not {args.duration!r}")
    if not (finite(args.check_timeout) and args.check_timeout >= 0):
        p.error(f"--check-timeout must be finite and not negative, not {args.check_timeout!r}")
    if args.replicas not in (1, nodes):
        p.error(f"--replicas must be 1 or the number of nodes ({nodes}); several Raft groups over "
                "more nodes come next")
    for problem in read_mode_problems(args.read_mode, args.replicas):
        p.error(problem)
    try:
        latency = parse_latency(args.latency)
    except ValueError as e:
        p.error(str(e))
    if args.history:  # before the run, not after it
        problem = writable_file(args.history)
        if problem:
            p.error(f"--history {problem}")
    _, rep = run_default(
        seed=args.seed, nodes=nodes, ops=args.ops, clients=args.clients, loss=args.loss,
        duration=args.duration, partition=not args.no_partition, latency=latency,
        codec=not args.no_codec, replicas=args.replicas,
        replica=ReplicaConfig(read_only=args.read_mode) if args.read_mode != "safe" else None,
    )
    if args.history:
        import json

        with open(args.history, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(ev) + "\n" for ev in rep.history.events())
    lines = rep.summary().split("\n")
    lines.insert(1, explain_time(rep, args.duration))
    status = 0
    if not args.no_check:
        line, status = verdict_line(rep, args.check_timeout)
        lines.insert(len(lines) - 1, line)  # the digest stays last
    print("\n".join(lines), flush=True)
    return status


def quiet_pipe(fn: Callable[[], Any]) -> int:
    """``fn()``, ending quietly when stdout is a closed pipe or on Ctrl-C (no traceback)."""
    try:
        status = int(fn() or 0)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        try:  # Python flushes stdout again at exit: point it at devnull so that cannot raise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    return quiet_pipe(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
