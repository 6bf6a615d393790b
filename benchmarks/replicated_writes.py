"""Replicated writes: 3 nodes, one Raft group of 3 (R = 3), loopback; storelab against PySyncObj.

Both arms run in the same run on the same machine, each as 3 local processes:

- **storelab**: ``python -m realnet.node`` x 3 with ``--data-dir`` (the Raft log is fsynced in
  group commits), made one replicated group by ``realnet.replicacli.create`` (what ``storelab
  cluster create A B C --replicas 3`` does). ``--clients`` writer threads in this process, spread
  over the three nodes (a follower forwards to the leader), each doing ``PUT /kv/KEY`` over
  keep-alive HTTP and waiting for its answer (204: committed and applied) before the next.
- **PySyncObj** (the baseline, ``pip install 'pysyncobj>=0.3.17'``, the ``bench`` extra): 3
  processes, each a ``SyncObj`` with a ``ReplDict`` and a journal file, and the same number of
  writer threads spread over them, each doing ``d.set(key, value, sync=True)`` (blocks until the
  command is committed and applied locally). Its writers live inside the node processes (no
  client protocol: PySyncObj is a library), and its journal is an mmap that is not fsynced per
  write, so the baseline pays neither an HTTP hop nor an fsync: read the ratio with that in mind.

Each arm writes for ``--seconds`` after a warm-up (``--warmup``); throughput is writes answered
in that window per second; latencies are per write, p50 and p99 in ms. Wall clock (this is I/O
and scheduling, not CPU alone). Prints a table, then as its last line one JSON object with the
figures and the ratios (storelab / the faster PySyncObj arm). PySyncObj runs twice: with its
timing as shipped (a 50 ms loop tick, AppendEntries every 100 ms: a sync write waits for ticks)
and tuned for loopback (1 ms tick, 10 ms AppendEntries period).

    python benchmarks/replicated_writes.py [--seconds 5] [--warmup 1] [--clients 12] [--value-bytes 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    return {"writes": len(latencies), "writes_per_s": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 0.50) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


# --- storelab ---------------------------------------------------------------------------------------


def storelab_arm(args: argparse.Namespace, work: Path) -> dict[str, float]:
    from realnet import replicacli
    from realnet.admin import Admin
    from realnet.history import NodeClient

    ports = free_ports(6)
    procs: list[subprocess.Popen[bytes]] = []
    addrs = []
    try:
        for i in range(3):
            http, peer = ports[2 * i], ports[2 * i + 1]
            d = work / f"storelab-n{i}"
            with open(work / f"storelab-n{i}.log", "wb") as log:  # the child keeps its own copy
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "realnet.node", "--id", f"n{i}", "--port", str(http),
                     "--peer-port", str(peer), "--data-dir", str(d), "--log-level", "warning"],
                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=dict(os.environ, PYTHONPATH=str(REPO))))
            addrs.append(f"127.0.0.1:{http}")
        with Admin(10.0) as a:
            deadline = time.monotonic() + 30
            nodes = []
            for addr in addrs:
                while True:
                    n = a.probe(addr)
                    if n.reachable:
                        nodes.append(n)
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"node {addr} did not start")
                    time.sleep(0.05)
            replicacli.create(a, nodes)

        def writer(i: int, out: list[float], stop: threading.Event, start_at: float) -> None:
            c = NodeClient(addrs[i % 3], timeout=10.0)
            value = b"v" * args.value_bytes
            seq = 0
            try:
                while not stop.is_set():
                    seq += 1
                    t0 = time.perf_counter()
                    c.set(f"w{i}-{seq}", value)
                    t1 = time.perf_counter()
                    if t0 >= start_at:
                        out.append(t1 - t0)
            finally:
                c.close()

        return _drive(args, writer)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def _drive(args: argparse.Namespace, writer: Any) -> dict[str, float]:
    stop = threading.Event()
    start_at = time.perf_counter() + args.warmup
    outs: list[list[float]] = [[] for _ in range(args.clients)]
    threads = [threading.Thread(target=writer, args=(i, outs[i], stop, start_at), daemon=True)
               for i in range(args.clients)]
    for t in threads:
        t.start()
    time.sleep(args.warmup + args.seconds)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    return summary([x for o in outs for x in o], args.seconds)


# --- PySyncObj -------------------------------------------------------------------------------------


def pysyncobj_node(spec: dict[str, Any]) -> None:
    """One PySyncObj process (``--pysyncobj-node SPEC``): wait for a leader, write, report."""
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    d = ReplDict()
    me = spec["addrs"][spec["index"]]
    partners = [a for a in spec["addrs"] if a != me]
    conf = SyncObjConf(journalFile=spec["journal"], dynamicMembershipChange=False, **spec["tuning"])
    obj = SyncObj(me, partners, consumers=[d], conf=conf)
    deadline = time.monotonic() + 30
    while obj._getLeader() is None or not obj.isReady():
        if time.monotonic() > deadline:
            raise RuntimeError("no PySyncObj leader within 30 s")
        time.sleep(0.05)
    start_wall = spec["start_wall"]
    while time.time() < start_wall:
        time.sleep(0.005)
    value = "v" * spec["value_bytes"]
    stop = threading.Event()
    start_at = time.perf_counter() + spec["warmup"]
    outs: list[list[float]] = []

    def writer(i: int, out: list[float]) -> None:
        seq = 0
        while not stop.is_set():
            seq += 1
            t0 = time.perf_counter()
            d.set(f"p{spec['index']}-{i}-{seq}", value, sync=True, timeout=10)
            t1 = time.perf_counter()
            if t0 >= start_at:
                out.append(t1 - t0)

    threads = []
    for i in range(spec["clients"]):
        outs.append([])
        threads.append(threading.Thread(target=writer, args=(i, outs[-1]), daemon=True))
    for t in threads:
        t.start()
    time.sleep(spec["warmup"] + spec["seconds"])
    stop.set()
    for t in threads:
        t.join(timeout=15)
    print(json.dumps({"latencies": [x for o in outs for x in o]}), flush=True)
    time.sleep(1.0)  # let the others finish their last writes before this member goes
    obj.destroy()


#: PySyncObj's timing as shipped (a 50 ms loop tick, AppendEntries every 100 ms) and tuned for
#: loopback (a 1 ms tick: a write is sent at once instead of at the next tick)
PSO_DEFAULT: dict[str, float] = {}
PSO_TUNED: dict[str, float] = {"autoTickPeriod": 0.001, "appendEntriesPeriod": 0.01}


def pysyncobj_arm(args: argparse.Namespace, work: Path, tuning: dict[str, float]) -> dict[str, float]:
    ports = free_ports(3)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    start_wall = time.time() + 5.0  # every process is up and has a leader by then
    procs = []
    for i in range(3):
        spec = {"addrs": addrs, "index": i, "journal": str(work / f"pso-{i}.journal"),
                "clients": args.clients // 3 + (1 if i < args.clients % 3 else 0),
                "seconds": args.seconds, "warmup": args.warmup, "value_bytes": args.value_bytes,
                "start_wall": start_wall, "tuning": tuning}
        procs.append(subprocess.Popen([sys.executable, __file__, "--pysyncobj-node", json.dumps(spec)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO))
    lat: list[float] = []
    for p in procs:
        out, err = p.communicate(timeout=args.warmup + args.seconds + 90)
        if p.returncode != 0:
            raise RuntimeError(f"a PySyncObj process failed: {err.decode(errors='replace')[-2000:]}")
        lat += json.loads(out.decode().strip().splitlines()[-1])["latencies"]
    return summary(lat, args.seconds)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--pysyncobj-node":
        pysyncobj_node(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--clients", type=int, default=12, help="writer threads in all (spread over 3 nodes)")
    ap.add_argument("--value-bytes", type=int, default=100)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="replicated-writes-"))
    for sub in ("default", "tuned"):
        (work / sub).mkdir()
    try:
        shipped = pysyncobj_arm(a, work / "default", PSO_DEFAULT)
        tuned = pysyncobj_arm(a, work / "tuned", PSO_TUNED)
        ours = storelab_arm(a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"replicated writes: 3 nodes, R = 3, loopback; {a.clients} writers, {a.value_bytes}-byte values, "
          f"{a.seconds:g} s after {a.warmup:g} s warm-up")
    print(f"{'system':<26}{'writes/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'writes':>10}")
    baseline = max((shipped, tuned), key=lambda r: r["writes_per_s"])
    for name, r in (("storelab (HTTP, fsync)", ours), ("PySyncObj as shipped", shipped),
                    ("PySyncObj, 1 ms tick", tuned)):
        print(f"{name:<26}{r['writes_per_s']:>12.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['writes']:>10.0f}")
    print(json.dumps({
        "benchmark": "replicated_writes", "clients": a.clients, "seconds": a.seconds,
        "value_bytes": a.value_bytes, "storelab": ours, "pysyncobj_default": shipped, "pysyncobj_tuned": tuned,
        "baseline": "pysyncobj_tuned" if baseline is tuned else "pysyncobj_default",
        "ratio_throughput": ours["writes_per_s"] / baseline["writes_per_s"] if baseline["writes_per_s"] else None,
        "ratio_p50": ours["p50_ms"] / baseline["p50_ms"] if baseline["p50_ms"] else None,
        "ratio_p99": ours["p99_ms"] / baseline["p99_ms"] if baseline["p99_ms"] else None,
    }))


if __name__ == "__main__":
    main()
