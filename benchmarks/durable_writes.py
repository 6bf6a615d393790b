"""Durable writes: one durable node's PUTs per second, the storage log against one file per key.

A node with ``[settings] durable = true`` and a ``--data-dir`` answers a write once it is on
disk. Its storage is :class:`realnet.kvlog.LogStorage`: one append-only log, and one ``write``
and one ``fsync`` at the end of a loop turn for every write of that turn (group commit). The
baseline, run in the same process tree right before or after, is the same node on the storage it
replaced, :class:`realnet.runtime.FileStorage` (a file per key: temp file, fsync, rename, fsync
of the directory, for every write), started through ``serve(settings, storage)`` by this script.

Each arm starts a fresh node on an empty data directory (under ``--dir``, default a temporary
directory on the disk that holds the system's temp files), drives ``--connections`` keep-alive
writers for ``--duration`` seconds with :mod:`_loadgen` (``wrk`` when installed), and reads the
node's ``/metrics`` for the storage log's puts and fsyncs. Rounds alternate the arms; the best
round of each is kept. Prints a table, then as its last line one JSON object with the figures and
``ratio_log_vs_files`` (writes/s of the log over the files').

    python benchmarks/durable_writes.py [--connections 32] [--duration 3] [--rounds 2]
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
import argparse
import asyncio
import functools
import json
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack
from typing import Any

from _loadgen import choose_engine, run_load
from http_throughput import HOST, free_ports, healthy, node_cmd, started


def _child(argv: list[str]) -> int:
    """Run a node on the file-per-key storage (the baseline)."""
    from realnet import node as rn
    from realnet.runtime import FileStorage

    settings = rn.load_settings(rn.build_parser().parse_args(argv))
    return asyncio.run(rn.serve(settings, FileStorage(settings.data_dir)))


def _metrics(port: int) -> dict[str, float]:
    """The storage log's samples in the node's ``/metrics`` (Prometheus text, parsed by its
    library)."""
    import http.client

    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {s.name: float(s.value) for fam in text_string_to_metric_families(body)
            for s in fam.samples if s.name.startswith("storelab_storage_")}


def arm(kind: str, base: str, args: argparse.Namespace, engine: str) -> dict[str, Any]:
    port, peer = free_ports(2)
    data = tempfile.mkdtemp(prefix=f"durable-{kind}-", dir=base)
    config = os.path.join(data, "node.toml")
    os.makedirs(os.path.join(data, "d"))
    with open(config, "w") as f:
        f.write("[settings]\ndurable = true\n")
    flags = ["--id", "d1", "--port", str(port), "--peer-port", str(peer), "--config", config,
             "--data-dir", os.path.join(data, "d")]
    cmd = (node_cmd(*flags) if kind == "log"
           else [sys.executable, __file__, "--child", *flags, "--log-level", "warning"])
    with ExitStack() as stack:
        stack.enter_context(started(f"durable node ({kind})", cmd, functools.partial(healthy, port),
                                    "GET /health 200"))
        before = _metrics(port) if kind == "log" else {}
        r = run_load(HOST, port, method="PUT", connections=args.connections, duration=args.duration,
                     keys=args.keys, value_size=args.value_size, engine=engine)
        after = _metrics(port) if kind == "log" else {}
    row: dict[str, Any] = {"storage": kind, "writes_per_s": round(r.rps), "requests": r.requests,
                           "bad": r.non_2xx_3xx + r.socket_errors, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}
    if after:
        puts = after["storelab_storage_puts_total"] - before["storelab_storage_puts_total"]
        fsyncs = after["storelab_storage_fsyncs_total"] - before["storelab_storage_fsyncs_total"]
        row["writes_per_fsync"] = round(puts / fsyncs, 1) if fsyncs else None
    return row


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each arm is kept")
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-size", type=int, default=100)
    p.add_argument("--engine", default="auto", choices=["auto", "wrk", "asyncio"])
    p.add_argument("--dir", default=None, help="where the data directories go (default: the temp dir)")
    args = p.parse_args()
    engine = choose_engine(args.engine)
    base = tempfile.mkdtemp(prefix="durable-writes-", dir=args.dir)
    best: dict[str, dict[str, Any]] = {}
    try:
        for _ in range(args.rounds):
            for kind in ("files", "log"):
                row = arm(kind, base, args, engine)
                if kind not in best or row["writes_per_s"] > best[kind]["writes_per_s"]:
                    best[kind] = row
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"one durable node, {args.connections} keep-alive writers, {args.value_size}-byte values, "
          f"{args.duration:g} s x {args.rounds} rounds (best kept), engine {engine}, data under {base}")
    print(f"{'storage':>8} {'writes/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'writes/fsync':>13} {'bad':>4}")
    for kind in ("files", "log"):
        r = best[kind]
        wpf = r.get("writes_per_fsync")
        print(f"{kind:>8} {r['writes_per_s']:>9,} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
              f"{'1 file, 2 fsyncs' if kind == 'files' else wpf:>13} {r['bad']:>4}")
    ratio = best["log"]["writes_per_s"] / best["files"]["writes_per_s"] if best["files"]["writes_per_s"] else None
    print(json.dumps({"benchmark": "durable_writes", "connections": args.connections,
                      "value_size": args.value_size, "duration_s": args.duration, "rounds": args.rounds,
                      "engine": engine, "results": best,
                      "ratio_log_vs_files": round(ratio, 2) if ratio else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
