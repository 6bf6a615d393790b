"""Election time after a leader's crash: real processes against the sim, for the same timeouts.

**Real**: 3 ``python -m realnet.node`` processes with data directories made one Raft group
(``realnet.replicacli.create``, what ``storelab cluster create ... --replicas 3`` does); then
``--runs`` times: the leader is killed (``kill -9``), and the time from the kill until both live
nodes name the same new leader is measured by polling their ``/cluster/info`` every
``--poll`` seconds (so a figure can be late by up to one poll and an HTTP round trip); the
killed node is restarted and the group settles before the next run. A node's timing is
realnet's ``ReplicaConfig``: a 50 ms tick, heartbeats every tick, an election timeout drawn from
[10, 20) ticks (0.5-0.95 s), PreVote and CheckQuorum on, every vote fsynced before it is sent.

**Sim**: ``python -m sim raft-elections`` with the same group size, timeouts, heartbeat and tick
(``--servers 3 --failed 1 --timeout-min 0.5 --timeout-max 0.95 --heartbeat 0.05 --tick 0.05``),
a one-way latency of ``--sim-latency`` (loopback's is far below a tick), ``--sim-runs`` runs.
What it times is the same: from the crash until every live server has heard the new leader.

Prints a table, then as its last line one JSON object with both distributions and the ratio of
the real median to the sim's.

    python benchmarks/election_time.py [--runs 8] [--sim-runs 400] [--poll 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.replicated_writes import free_ports, percentile  # noqa: E402


def _info(addr: str) -> dict[str, Any] | None:
    import http.client

    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=1.0)
    try:
        conn.request("GET", "/cluster/info")
        resp = conn.getresponse()
        body = resp.read()
        return json.loads(body).get("raft") if resp.status == 200 else None
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


def _agreed_leader(addrs: list[str]) -> str | None:
    views = [_info(a) for a in addrs]
    if any(v is None for v in views):
        return None
    leads = {v.get("leader") for v in views if v is not None}
    if len(leads) != 1 or None in leads:
        return None
    lead = leads.pop()
    return lead if any(v is not None and v.get("role") == "leader" for v in views) else None


class Group:
    def __init__(self, work: Path) -> None:
        self.work = work
        ports = free_ports(6)
        self.ids = ["a", "b", "c"]
        self.args = {nid: ["--id", nid, "--port", str(ports[2 * i]), "--peer-port", str(ports[2 * i + 1]),
                           "--data-dir", str(work / nid), "--log-level", "warning"]
                     for i, nid in enumerate(self.ids)}
        self.addr = {nid: f"127.0.0.1:{ports[2 * i]}" for i, nid in enumerate(self.ids)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, nid: str) -> None:
        with open(self.work / f"{nid}.log", "ab") as log:  # the child keeps its own copy
            self.procs[nid] = subprocess.Popen(
                [sys.executable, "-m", "realnet.node", *self.args[nid]], cwd=REPO, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(REPO)))

    def wait_until(self, check: Any, what: str, timeout: float = 30.0, poll: float = 0.01) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(poll)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def real_runs(args: argparse.Namespace, work: Path) -> list[float]:
    from realnet import replicacli
    from realnet.admin import Admin

    g = Group(work)
    try:
        for nid in g.ids:
            g.start(nid)
        with Admin(10.0) as a:
            nodes = [g.wait_until(lambda nid=nid: (lambda n: n if n.reachable else None)(a.probe(g.addr[nid])),
                                  f"{nid} to start") for nid in g.ids]
            replicacli.create(a, nodes)
        out = []
        for _ in range(args.runs):
            lead = g.wait_until(lambda: _agreed_leader(list(g.addr.values())), "the group to settle")
            time.sleep(0.3)  # a few heartbeats, so the crash falls anywhere in an interval
            live = [g.addr[n] for n in g.ids if n != lead]
            t0 = time.monotonic()
            g.procs[lead].kill()
            g.wait_until(lambda live=live, lead=lead: (lambda x: x not in (None, lead) and x)(_agreed_leader(live)),
                         "a new leader", poll=args.poll)
            out.append(time.monotonic() - t0)
            g.procs[lead].wait(timeout=10)
            g.start(lead)
        return out
    finally:
        g.stop()


def sim_runs(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "sim", "raft-elections", "--servers", "3", "--failed", "1",
           "--timeout-min", "0.5", "--timeout-max", "0.95", "--heartbeat", "0.05", "--tick", "0.05",
           "--latency", args.sim_latency, "--runs", str(args.sim_runs), "--seed", "1", "--json"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    doc: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8, help="leader kills on real processes")
    ap.add_argument("--sim-runs", type=int, default=400)
    ap.add_argument("--sim-latency", default="const:0.0005", help="the sim's one-way latency")
    ap.add_argument("--poll", type=float, default=0.01, help="seconds between polls of the live nodes")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="election-time-"))
    try:
        real = real_runs(a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sim = sim_runs(a)
    real_ms = {"runs": len(real), "mean_ms": statistics.mean(real) * 1000,
               "median_ms": statistics.median(real) * 1000, "p99_ms": percentile(real, 0.99) * 1000,
               "max_ms": max(real) * 1000}
    print("election time after a leader's kill -9: 3 nodes, timeouts 0.5-0.95 s, heartbeat 50 ms, tick 50 ms")
    print(f"{'world':<28}{'runs':>6}{'mean ms':>10}{'median ms':>11}{'p99 ms':>10}{'max ms':>10}")
    for name, r in (("real processes (loopback)", real_ms), ("sim", sim)):
        print(f"{name:<28}{r['runs']:>6}{r['mean_ms']:>10.0f}{r['median_ms']:>11.0f}{r['p99_ms']:>10.0f}"
              f"{r['max_ms']:>10.0f}")
    print(json.dumps({"benchmark": "election_time", "real": real_ms,
                      "sim": {k: sim[k] for k in ("runs", "mean_ms", "median_ms", "p99_ms", "max_ms")},
                      "ratio_median_real_to_sim": real_ms["median_ms"] / sim["median_ms"]}))


if __name__ == "__main__":
    main()
