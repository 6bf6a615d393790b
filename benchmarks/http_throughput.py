"""HTTP throughput of a storelab node against a minimal asyncio responder.

Theory of operation
-------------------
Three servers, each its own process on 127.0.0.1 ports found by binding port 0:

(a) ``benchmarks/_minimal_http.py``: the floor of what any asyncio.Protocol server can do (it only
    finds request boundaries and writes a fixed 200);
(b) one standalone node, ``python -m realnet.node --id n1 --port P --peer-port Q``, which owns
    every slot, so GET and PUT are served locally; once per request parser
    (``--http-parser httptools`` and ``--http-parser h11``, arms ``node`` and ``node-h11``);
(b') the same standalone node started with ``--client-token-file`` (default parser; arm
    ``node-token``): every request carries ``Authorization: Bearer TOKEN`` and the node checks it
    (``hmac.compare_digest``) before anything else; ``ratio_token_*_vs_node`` is its throughput
    over the plain node's, measured in the same rounds;
(c) a two-node cluster from a TOML file where node ``a`` owns no slot and ``b`` owns all of them:
    every request sent to ``a`` is forwarded over the peer link to ``b`` and answered back
    (default parser; arm ``forward``).
(d) when uvloop is installed (and not ``--no-uvloop``): (a), (b) and (c) again on libuv's loop
    (``_minimal_http.py PORT HOST uvloop``, ``--event-loop uvloop``; arms ``minimal-uvloop``,
    ``node-uvloop``, ``forward-uvloop``). ``ratio_uvloop_*_vs_minimal`` compares the node on
    uvloop with the minimal responder on asyncio (the yardstick of the others), and
    ``ratio_uvloop_*_vs_minimal_uvloop`` with the minimal responder on the same loop.

For each server and method (GET, then PUT of ``--value-size`` bytes over ``--keys`` keys) the
load generator (:mod:`_loadgen`: ``wrk`` when installed, else an asyncio client, always in its own
process) runs ``--connections`` keep-alive connections for ``--duration`` seconds. Keys are PUT
once before measuring GET so that GETs find their values (a 404 would not be a fair GET).

Machines running other work give noisy figures, so the measurements are repeated ``--rounds``
times, interleaving the servers in each round, and the best round of each (server, method) is
kept: the best is the least disturbed run, and ratios of bests compare like with like. Every
round's figure is in the JSON too.

A second, steadier figure: the CPU time the server process(es) used per completed request
(``/proc/PID/stat`` user + system time over the run, both nodes for the forwarding setup). When
other work shares the CPUs, requests/s falls with the share the server gets, but its CPU cost per
request barely moves; ``cpu_ratio_*`` (minimal's CPU per request / the node's, so comparable to
the throughput ratios of a CPU-bound server) are reported next to the throughput ratios. They are
absent where ``/proc`` is not available.

Nodes are started only if ``realnet/node.py`` exists; otherwise (b) and (c) are reported as
skipped. Readiness is ``GET /health`` returning 200 (and, for the cluster, one forwarded PUT
succeeding), polled against a deadline. Every process started is stopped through its own handle:
terminate, then kill after a deadline.

Output: a readable table, then as the LAST line one JSON object with the figures and the ratios
``ratio_get_vs_minimal``, ``ratio_put_vs_minimal``, ``ratio_forward_get_vs_minimal``,
``ratio_forward_put_vs_minimal``, ``ratio_h11_get_vs_minimal``, ``ratio_h11_put_vs_minimal``,
``ratio_token_get_vs_node``, ``ratio_token_put_vs_node``, the uvloop ratios of (d) (null when not
measured), ``parsers`` (arm -> parser) and ``loadgen`` (the engine used).
"""

from __future__ import annotations

import argparse
import functools
import http.client
import importlib.util
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loadgen import LoadResult, choose_engine, format_result, prefill, run_load

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
START_DEADLINE = 30.0
STOP_DEADLINE = 5.0


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (bound together to port 0, then closed)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_status(port: int, method: str, path: str, body: bytes | None = None) -> int | None:
    """Status of one request, or None if the server is not answering."""
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU time of processes, from /proc (Linux); None where unavailable."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime: fields 14 and 15
    return total


def healthy(port: int) -> bool:
    return http_status(port, "GET", "/health") == 200


class Proc:
    """A child process with its output in a temporary log file."""

    def __init__(self, name: str, cmd: list[str]) -> None:
        self.name = name
        self.log: IO[bytes] = tempfile.TemporaryFile()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.popen = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def wait_until(self, cond: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while not cond():
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode} before {what}:\n"
                    + self.output()
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {what} within {START_DEADLINE}s:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_DEADLINE)
        self.log.close()


@contextmanager
def started(name: str, cmd: list[str], ready: Callable[[], bool], what: str) -> Iterator[Proc]:
    proc = Proc(name, cmd)
    try:
        proc.wait_until(ready, what)
        yield proc
    finally:
        proc.stop()


def node_available() -> bool:
    return (REPO / "realnet" / "node.py").exists()


def node_cmd(*args: str, parser: str | None = None) -> list[str]:
    extra = ["--http-parser", parser] if parser else []
    return [sys.executable, "-m", "realnet.node", *args, *extra, "--log-level", "warning"]


def cluster_toml(a: tuple[int, int], b: tuple[int, int]) -> str:
    return f"""\
[node]
id = "a"
[cluster]
[[cluster.nodes]]
id = "a"
addr = "{HOST}:{a[0]}"
peer_addr = "{HOST}:{a[1]}"
slots = ""
[[cluster.nodes]]
id = "b"
addr = "{HOST}:{b[0]}"
peer_addr = "{HOST}:{b[1]}"
slots = "0-16383"
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="HTTP throughput of a node vs a minimal responder.")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; best is kept")
    p.add_argument("--engine", default="auto", choices=["auto", "wrk", "asyncio"])
    p.add_argument("--no-node", action="store_true", help="measure the minimal responder only")
    p.add_argument("--no-forward", action="store_true", help="skip the 2-node forwarding setup")
    p.add_argument("--no-token", action="store_true", help="skip the node with a client token")
    p.add_argument("--no-uvloop", action="store_true",
                   help="skip the node and the minimal responder on uvloop (run when it is installed)")
    p.add_argument(
        "--parsers", default="httptools,h11",
        help="comma-separated HTTP parsers to run the one-node arm with (first: also forwarded)",
    )
    args = p.parse_args(argv)
    engine = choose_engine(args.engine)
    with_node = node_available() and not args.no_node
    with_forward = with_node and not args.no_forward

    # target name -> HTTP port and the pids serving it, filled as servers come up
    targets: dict[str, int] = {}
    pids: dict[str, list[int]] = {}
    arm_parser: dict[str, str] = {}  # arm -> the HTTP parser its node(s) run
    tokens: dict[str, str] = {}  # arm -> the client token its requests carry
    parsers = [x.strip() for x in args.parsers.split(",") if x.strip()] or ["httptools"]
    with ExitStack() as stack:
        (mport,) = free_ports(1)
        minimal = stack.enter_context(
            started(
                "minimal responder",
                [sys.executable, str(REPO / "benchmarks" / "_minimal_http.py"), str(mport), HOST],
                lambda: http_status(mport, "GET", "/") == 200,
                "answer to GET /",
            )
        )
        targets["minimal"] = mport
        pids["minimal"] = [minimal.popen.pid]
        with_uvloop = not args.no_uvloop and importlib.util.find_spec("uvloop") is not None
        if with_uvloop:
            (uport,) = free_ports(1)
            mu = stack.enter_context(
                started(
                    "minimal responder (uvloop)",
                    [sys.executable, str(REPO / "benchmarks" / "_minimal_http.py"), str(uport), HOST, "uvloop"],
                    lambda: http_status(uport, "GET", "/") == 200,
                    "answer to GET /",
                )
            )
            targets["minimal-uvloop"] = uport
            pids["minimal-uvloop"] = [mu.popen.pid]
        for i, parser in enumerate(parsers if with_node else []):
            nport, npeer = free_ports(2)
            n1 = stack.enter_context(
                started(
                    f"node n1 ({parser})",
                    node_cmd("--id", "n1", "--port", str(nport), "--peer-port", str(npeer),
                             parser=parser),
                    functools.partial(healthy, nport),
                    "GET /health 200",
                )
            )
            arm = "node" if i == 0 else f"node-{parser}"
            arm_parser[arm] = parser
            targets[arm] = nport
            pids[arm] = [n1.popen.pid]
        if with_node and with_uvloop:
            nport, npeer = free_ports(2)
            nu = stack.enter_context(
                started(
                    "node n1 (uvloop)",
                    node_cmd("--id", "n1", "--port", str(nport), "--peer-port", str(npeer),
                             "--event-loop", "uvloop", parser=parsers[0]),
                    functools.partial(healthy, nport),
                    "GET /health 200",
                )
            )
            arm_parser["node-uvloop"] = parsers[0]
            targets["node-uvloop"] = nport
            pids["node-uvloop"] = [nu.popen.pid]
        if with_node and not args.no_token:
            token = secrets.token_urlsafe(32)
            tfile = tempfile.NamedTemporaryFile("w", suffix=".token", delete=False)
            stack.callback(os.unlink, tfile.name)
            with tfile:
                tfile.write(token)
            tport, tpeer = free_ports(2)
            nt = stack.enter_context(
                started(
                    "node n1 (client token)",
                    node_cmd("--id", "n1", "--port", str(tport), "--peer-port", str(tpeer),
                             "--client-token-file", tfile.name, parser=parsers[0]),
                    functools.partial(healthy, tport),
                    "GET /health 200",
                )
            )
            arm_parser["node-token"] = parsers[0]
            targets["node-token"] = tport
            pids["node-token"] = [nt.popen.pid]
            tokens["node-token"] = token
        for arm, loop in (("forward", []), ("forward-uvloop", ["--event-loop", "uvloop"])):
            if not with_forward or (loop and not with_uvloop):
                continue
            pa, qa, pb, qb = free_ports(4)
            cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
            stack.callback(os.unlink, cfg.name)
            with cfg:
                cfg.write(cluster_toml((pa, qa), (pb, qb)))
            pids[arm] = []
            for nid, port, peer in (("b", pb, qb), ("a", pa, qa)):
                node = stack.enter_context(
                    started(
                        f"node {nid} ({arm})",
                        node_cmd("--config", cfg.name, "--id", nid, "--port", str(port),
                                 "--peer-port", str(peer), *loop, parser=parsers[0]),
                        functools.partial(healthy, port),
                        "GET /health 200",
                    )
                )
                pids[arm].append(node.popen.pid)
            # The peer link is up once a forwarded write succeeds.
            deadline = time.monotonic() + START_DEADLINE
            while http_status(pa, "PUT", "/kv/bench-probe", b"x") not in (200, 201, 204):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node a never forwarded a PUT to node b ({arm})")
                time.sleep(0.05)
            targets[arm] = pa
            arm_parser[arm] = parsers[0]

        for name, port in targets.items():
            counts = prefill(HOST, port, keys=args.keys, value_size=args.value_size, token=tokens.get(name))
            if not name.startswith("minimal") and set(counts) - {200, 201, 204}:
                print(f"warning: prefill of {name} answered {counts}", file=sys.stderr)

        runs: dict[tuple[str, str], list[LoadResult]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}  # server CPU microseconds per request
        for rnd in range(args.rounds):
            for name, port in targets.items():
                for method in ("GET", "PUT"):
                    cpu_before = cpu_seconds(pids[name])
                    r = run_load(
                        HOST, port, method=method, connections=args.connections,
                        duration=args.duration, keys=args.keys, value_size=args.value_size,
                        engine=engine, token=tokens.get(name),
                    )
                    cpu_after = cpu_seconds(pids[name])
                    runs.setdefault((name, method), []).append(r)
                    note = ""
                    if cpu_before is not None and cpu_after is not None and r.requests:
                        us = (cpu_after - cpu_before) / r.requests * 1e6
                        cpu.setdefault((name, method), []).append(us)
                        note = f"  server CPU {us:.1f} us/req"
                    print(f"round {rnd + 1} {name:8s} {format_result(r)}{note}", file=sys.stderr)

    best = {key: max(rs, key=lambda r: r.rps) for key, rs in runs.items()}
    labels = {"minimal": "minimal responder", "forward": f"node a -> b ({parsers[0]})",
              "node-token": f"node, client token ({parsers[0]})",
              "minimal-uvloop": "minimal responder, uvloop", "node-uvloop": f"node ({parsers[0]}), uvloop",
              "forward-uvloop": f"node a -> b ({parsers[0]}), uvloop"}
    for arm, parser in arm_parser.items():
        labels.setdefault(arm, f"node ({parser})")
    print(f"HTTP throughput: {args.connections} connections, {args.duration:g} s, "
          f"best of {args.rounds} rounds, load generator {engine}, {os.cpu_count()} CPUs")
    width = max([len("server")] + [len(labels[name]) for name, _m in best])
    print(f"{'server':{width}s} {'op':4s} {'req/s':>10s} {'median':>10s} {'p50 ms':>8s} "
          f"{'p99 ms':>8s} {'non-2xx':>8s} {'CPU us/req':>10s}")

    def cpu_per_request(name: str, method: str) -> float | None:
        xs = cpu.get((name, method))
        return round(statistics.median(xs), 2) if xs else None

    for (name, method), r in best.items():
        med = statistics.median(x.rps for x in runs[(name, method)])
        p50 = f"{r.p50_ms:.2f}" if r.p50_ms is not None else "-"
        p99 = f"{r.p99_ms:.2f}" if r.p99_ms is not None else "-"
        c = cpu_per_request(name, method)
        cs = f"{c:.1f}" if c is not None else "-"
        print(f"{labels[name]:{width}s} {method:4s} {r.rps:>10,.0f} {med:>10,.0f} {p50:>8s} "
              f"{p99:>8s} {r.non_2xx_3xx:>8d} {cs:>10s}")
    if not with_node:
        print("node: skipped (realnet/node.py not found or --no-node)")

    def rps(name: str, method: str) -> float | None:
        r = best.get((name, method))
        return round(r.rps, 1) if r is not None else None

    def ratio(name: str, method: str, minimal: str = "minimal") -> float | None:
        top, base = rps(name, method), rps(minimal, method)
        return round(top / base, 3) if top is not None and base else None

    def cpu_ratio(name: str, method: str, minimal: str = "minimal") -> float | None:
        top, base = cpu_per_request(name, method), cpu_per_request(minimal, method)
        return round(base / top, 3) if top and base else None

    summary = {
        "loadgen": engine,
        "connections": args.connections,
        "duration": args.duration,
        "rounds": args.rounds,
        "keys": args.keys,
        "value_size": args.value_size,
        "cpus": os.cpu_count(),
        "minimal_get_rps": rps("minimal", "GET"),
        "minimal_put_rps": rps("minimal", "PUT"),
        "node_get_rps": rps("node", "GET"),
        "node_put_rps": rps("node", "PUT"),
        "forward_get_rps": rps("forward", "GET"),
        "forward_put_rps": rps("forward", "PUT"),
        "parsers": arm_parser,
        "arms": {
            arm: {
                "parser": arm_parser.get(arm),
                "get_rps": rps(arm, "GET"),
                "put_rps": rps(arm, "PUT"),
                "ratio_get_vs_minimal": ratio(arm, "GET"),
                "ratio_put_vs_minimal": ratio(arm, "PUT"),
                "cpu_ratio_get_vs_minimal": cpu_ratio(arm, "GET"),
                "cpu_ratio_put_vs_minimal": cpu_ratio(arm, "PUT"),
            }
            for arm in targets
            if not arm.startswith("minimal")
        },
        "ratio_get_vs_minimal": ratio("node", "GET"),
        "ratio_put_vs_minimal": ratio("node", "PUT"),
        "ratio_forward_get_vs_minimal": ratio("forward", "GET"),
        "ratio_forward_put_vs_minimal": ratio("forward", "PUT"),
        # uvloop: against the minimal responder on asyncio (the yardstick above) and on uvloop
        "ratio_uvloop_get_vs_minimal": ratio("node-uvloop", "GET"),
        "ratio_uvloop_put_vs_minimal": ratio("node-uvloop", "PUT"),
        "ratio_uvloop_get_vs_minimal_uvloop": ratio("node-uvloop", "GET", "minimal-uvloop"),
        "ratio_uvloop_put_vs_minimal_uvloop": ratio("node-uvloop", "PUT", "minimal-uvloop"),
        "ratio_forward_uvloop_get_vs_minimal": ratio("forward-uvloop", "GET"),
        "ratio_forward_uvloop_put_vs_minimal": ratio("forward-uvloop", "PUT"),
        "ratio_forward_uvloop_get_vs_minimal_uvloop": ratio("forward-uvloop", "GET", "minimal-uvloop"),
        "ratio_forward_uvloop_put_vs_minimal_uvloop": ratio("forward-uvloop", "PUT", "minimal-uvloop"),
        "ratio_h11_get_vs_minimal": ratio("node-h11", "GET"),
        "ratio_h11_put_vs_minimal": ratio("node-h11", "PUT"),
        "ratio_token_get_vs_node": _over(rps("node-token", "GET"), rps("node", "GET")),
        "ratio_token_put_vs_node": _over(rps("node-token", "PUT"), rps("node", "PUT")),
        "cpu_ratio_token_get_vs_node": _over(cpu_per_request("node", "GET"), cpu_per_request("node-token", "GET")),
        "cpu_ratio_token_put_vs_node": _over(cpu_per_request("node", "PUT"), cpu_per_request("node-token", "PUT")),
        "cpu_us_per_request": {f"{n}_{m}": cpu_per_request(n, m) for n, m in best},
        "cpu_ratio_get_vs_minimal": cpu_ratio("node", "GET"),
        "cpu_ratio_put_vs_minimal": cpu_ratio("node", "PUT"),
        "cpu_ratio_forward_get_vs_minimal": cpu_ratio("forward", "GET"),
        "cpu_ratio_forward_put_vs_minimal": cpu_ratio("forward", "PUT"),
        "non_2xx_3xx": {f"{n}_{m}": best[(n, m)].non_2xx_3xx for n, m in best},
        "rounds_rps": {f"{n}_{m}": [round(x.rps, 1) for x in rs] for (n, m), rs in runs.items()},
    }
    print(json.dumps(summary))
    return 0


def _over(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


if __name__ == "__main__":
    sys.exit(main())
