"""Where a local request's Python time goes, layer by layer, against the minimal responder's.

Theory of operation
-------------------
``http_throughput.py`` measures whole processes under ``wrk``: the event loop, the syscalls, the
kernel's loopback and the Python work together, on a machine other work shares. This takes the
sockets and the loop away and measures only the Python work of one request, in one process, in
CPU time (``time.process_time``: other processes on the machine do not count), each figure the
best of ``--repeat`` runs of ``--n`` requests:

- ``minimal``: ``benchmarks/_minimal_http.py``'s ``data_received`` for one GET (the baseline:
  find the request's end, write a fixed answer), with a transport whose ``write`` does nothing;
- ``node_get`` / ``node_put``: a standalone node's whole HTTP connection (``realnet.http``'s
  ``data_received``: parse, the API, the node, the response bytes, ``write``) for a GET of a
  64-byte value and a PUT of one, with the node's plain-request lane (``Api.lane``, which takes
  these requests before the parser) as the node runs it;
- ``http_only``: the same connection with a handler that returns one fixed response (what
  ``realnet.http`` and the parser cost without the API and the node);
- the parts: ``parse_whole`` (llhttp and the checks around it: the path of a request the lane
  declines), ``plain`` (``realnet.httpplain``'s recogniser: the lane's parsing), ``api``
  (``Api.__call__`` with a parsed request: routing, the node's fast lane, latency histogram,
  response object),
  ``answer_now`` (the node alone), ``serialize`` (the response bytes);
- ``forward_get``: a GET forwarded from node ``a`` (owns no slot) to ``b`` (owns all) and answered
  back, both nodes in this process with real peer links on loopback and the event loop running:
  ``a``'s HTTP connections (null transports, 32 of them, a request on each per round), the
  Forward and ForwardReply frames (encoding, framing, the loopback syscalls), ``b``'s handling and
  the deferred response on ``a``: everything of the forwarded path but the client's sockets.

A request served by a real node costs these plus what the minimal responder costs outside its
``data_received`` (the loop and the syscalls, the same for both): so ``node_get - minimal`` is the
Python work a node adds, the figure to compare with the throughput benchmark's CPU per request.

Output: a table, then as the LAST line one JSON object with the figures (microseconds) and the
ratios ``minimal / node_get``, ``minimal / node_put`` and ``minimal / forward_get`` measured in
the same run.

    python benchmarks/http_layers.py [--n 20000] [--repeat 9] [--forward-rounds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _minimal_http import MinimalHttp

from kvcore.config import ClusterConfig, NodeConfig, NodeSpec
from kvcore.messages import Get
from kvcore.node import Node
from kvcore.slots import NUM_SLOTS
from realnet import http, httpresponse
from realnet.api import Api
from realnet.httpparse import DEFAULT_PARSER, PARSERS, Request
from realnet.httpplain import PlainRecogniser
from realnet.runtime import AsyncioRuntime
from realnet.security import HostCheck
from realnet.transport import PeerTransport

HOST = b"127.0.0.1:8080"


class NullTransport(asyncio.Transport):
    """Takes every write and does nothing: the socket's cost is not measured here."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def best(run: Callable[[int], object], n: int, repeat: int) -> float:
    """Microseconds of CPU per call of the best of ``repeat`` runs of ``n`` calls."""
    out = []
    for _ in range(repeat):
        c0 = time.process_time()
        run(n)
        out.append((time.process_time() - c0) / n * 1e6)
    return min(out)


def _ignore(reply: object) -> None:
    """A reply callback for the node's fast lane, which answers without calling it."""


def connection(
    handler: http.Handler, loop: asyncio.AbstractEventLoop, lane: http.Lane | None = None
) -> Callable[[bytes], None]:
    state = http._ServerState(handler, http.HttpLimits(), loop, PARSERS[DEFAULT_PARSER], None, lane)
    conn = state.make_protocol()
    conn.connection_made(NullTransport())
    return conn.data_received


def cycle(fn: Callable[[Any], object], items: list[Any]) -> Callable[[int], None]:
    k = len(items)

    def run(n: int) -> None:
        for i in range(n):
            fn(items[i % k])

    return run


async def measure(n: int, repeat: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    runtime = AsyncioRuntime("n1", loop=loop, rng=random.Random(1))
    node = Node(runtime, NodeConfig())
    transport = PeerTransport(node_id="n1", on_message=node.on_message, node_stats=node.stats,
                              rng=runtime.random, loop=loop)
    runtime.sink = transport
    node.start()
    try:
        api = Api(node, transport, loop=loop, hosts=HostCheck("127.0.0.1", None))
        gets = [b"GET /kv/key%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, HOST) for i in range(50)]
        puts = [b"PUT /kv/key%d HTTP/1.1\r\nHost: %s\r\nContent-Length: 64\r\n\r\n%s"
                % (i, HOST, b"v" * 64) for i in range(50)]
        node_conn = connection(api, loop, api.lane)
        for p in puts:
            node_conn(p)
        fixed = http.Response(200, b"v" * 64, "application/octet-stream")
        minimal = MinimalHttp()
        minimal.connection_made(NullTransport())
        parser = PARSERS[DEFAULT_PARSER](http.HttpLimits())
        req = Request("GET", "/kv/key7", "/kv/key7", "", "HTTP/1.1",
                      {"host": HOST.decode()}, b"", None)
        op = Get(key=b"key7")
        return {
            "minimal": best(cycle(minimal.data_received, gets), n, repeat),
            "node_get": best(cycle(node_conn, gets), n, repeat),
            "node_put": best(cycle(node_conn, puts), n, repeat),
            "http_only": best(cycle(connection(lambda r: fixed, loop), gets), n, repeat),
            "parse_whole": best(cycle(parser.parse_whole, gets), n, repeat),
            "plain": best(cycle(PlainRecogniser(http.HttpLimits()), gets), n, repeat),
            "api": best(cycle(api, [req]), n, repeat),
            "answer_now": best(cycle(lambda o: node.answer_now(o, _ignore), [op]), n, repeat),
            "serialize": best(cycle(lambda r: httpresponse._serialize(r, True, False, False), [fixed]),
                              n, repeat),
        }
    finally:
        node.stop()
        await transport.close()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class CountingTransport(NullTransport):
    """A null transport that counts the responses written on all connections sharing ``done``."""

    def __init__(self, done: list[int]) -> None:
        super().__init__()
        self.done = done

    def write(self, data: Any) -> None:
        self.done[0] += 1


async def measure_forward(rounds: int, repeat: int) -> float:
    """CPU microseconds per forwarded GET, both nodes and the loop (see the module docstring)."""
    loop = asyncio.get_running_loop()
    pa, pb = _free_ports(2)
    cluster = ClusterConfig((
        NodeSpec("a", "127.0.0.1:1", f"127.0.0.1:{pa}", ()),
        NodeSpec("b", "127.0.0.1:2", f"127.0.0.1:{pb}", ((0, NUM_SLOTS - 1),)),
    ), 1).validate()
    parts = []
    for nid, port, peer in (("a", pa, ("b", pb)), ("b", pb, ("a", pa))):
        runtime = AsyncioRuntime(nid, loop=loop, rng=random.Random(1))
        node = Node(runtime, NodeConfig(), cluster)
        transport = PeerTransport(
            node_id=nid, peers={peer[0]: ("127.0.0.1", peer[1])},
            resolve=node.membership.address_of, on_message=node.on_message,
            node_stats=node.stats, rng=runtime.random, loop=loop,
        )
        runtime.sink = transport
        await transport.listen("127.0.0.1", port)
        parts.append((node, transport))
    try:
        for node, _ in parts:
            node.start()
        node_a, transport_a = parts[0]
        api = Api(node_a, transport_a, loop=loop, hosts=HostCheck("127.0.0.1", None))
        state = http._ServerState(api, http.HttpLimits(), loop, PARSERS[DEFAULT_PARSER], None, api.lane)
        done = [0]
        conns = []
        for _ in range(32):
            conn = state.make_protocol()
            conn.connection_made(CountingTransport(done))
            conns.append(conn.data_received)

        async def answered(k: int, deadline: float) -> None:
            target = done[0] + k
            while done[0] < target:
                if time.monotonic() > deadline:
                    raise RuntimeError("node a did not answer its forwarded requests in time")
                await asyncio.sleep(0)

        deadline = time.monotonic() + 30.0
        for i in range(50):  # the values GETs find (a 404 would not be a fair GET)
            conns[0](b"PUT /kv/key%d HTTP/1.1\r\nHost: %s\r\nContent-Length: 64\r\n\r\n%s"
                     % (i, HOST, b"v" * 64))
            await answered(1, deadline)
        gets = [b"GET /kv/key%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, HOST) for i in range(50)]
        runs = []
        for r in range(repeat + 1):  # the first run warms up
            c0 = time.process_time()
            for j in range(rounds):
                for i, send in enumerate(conns):
                    send(gets[(i + j) % 50])
                await answered(len(conns), time.monotonic() + 30.0)
            if r:
                runs.append((time.process_time() - c0) / (rounds * len(conns)) * 1e6)
        return min(runs)
    finally:
        for node, transport in parts:
            node.stop()
            await transport.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20000, help="requests per run")
    p.add_argument("--repeat", type=int, default=9, help="runs; the best is kept")
    p.add_argument("--forward-rounds", type=int, default=300,
                   help="rounds of 32 forwarded GETs per run (0: skip the forwarded path)")
    args = p.parse_args(argv)
    figures = asyncio.run(measure(args.n, args.repeat))
    if args.forward_rounds:
        figures["forward_get"] = asyncio.run(measure_forward(args.forward_rounds, args.repeat))
    print(f"Python CPU per request, best of {args.repeat} x {args.n} (microseconds)")
    for name, us in figures.items():
        print(f"  {name:12s} {us:7.2f}")
    summary: dict[str, Any] = {k: round(v, 3) for k, v in figures.items()}
    summary["added_get_vs_minimal"] = round(figures["node_get"] - figures["minimal"], 3)
    summary["ratio_minimal_vs_node_get"] = round(figures["minimal"] / figures["node_get"], 3)
    summary["ratio_minimal_vs_node_put"] = round(figures["minimal"] / figures["node_put"], 3)
    if "forward_get" in figures:
        summary["ratio_minimal_vs_forward_get"] = round(figures["minimal"] / figures["forward_get"], 3)
    summary["parser"] = DEFAULT_PARSER
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
