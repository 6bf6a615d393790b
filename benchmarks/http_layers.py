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
  64-byte value and a PUT of one, on the default parser;
- ``http_only``: the same connection with a handler that returns one fixed response (what
  ``realnet.http`` and the parser cost without the API and the node);
- the parts: ``parse_whole`` (llhttp and the checks around it), ``api`` (``Api.__call__`` with a
  parsed request: routing, the node's fast lane, latency histogram, response object),
  ``answer_now`` (the node alone), ``serialize`` (the response bytes).

A request served by a real node costs these plus what the minimal responder costs outside its
``data_received`` (the loop and the syscalls, the same for both): so ``node_get - minimal`` is the
Python work a node adds, the figure to compare with the throughput benchmark's CPU per request.

Output: a table, then as the LAST line one JSON object with the figures (microseconds) and the
ratio ``minimal / node_get`` and ``minimal / node_put`` measured in the same run.

    python benchmarks/http_layers.py [--n 20000] [--repeat 9]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _minimal_http import MinimalHttp

from kvcore.config import NodeConfig
from kvcore.messages import Get
from kvcore.node import Node
from realnet import http
from realnet.api import Api
from realnet.httpparse import DEFAULT_PARSER, PARSERS, Request
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


def connection(handler: http.Handler, loop: asyncio.AbstractEventLoop) -> Callable[[bytes], None]:
    state = http._ServerState(handler, http.HttpLimits(), loop, PARSERS[DEFAULT_PARSER])
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
        node_conn = connection(api, loop)
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
            "api": best(cycle(api, [req]), n, repeat),
            "answer_now": best(cycle(node.answer_now, [op]), n, repeat),
            "serialize": best(cycle(lambda r: http._serialize(r, True, False, False), [fixed]),
                              n, repeat),
        }
    finally:
        node.stop()
        await transport.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=20000, help="requests per run")
    p.add_argument("--repeat", type=int, default=9, help="runs; the best is kept")
    args = p.parse_args(argv)
    figures = asyncio.run(measure(args.n, args.repeat))
    print(f"Python CPU per request, best of {args.repeat} x {args.n} (microseconds)")
    for name, us in figures.items():
        print(f"  {name:12s} {us:7.2f}")
    summary: dict[str, Any] = {k: round(v, 3) for k, v in figures.items()}
    summary["added_get_vs_minimal"] = round(figures["node_get"] - figures["minimal"], 3)
    summary["ratio_minimal_vs_node_get"] = round(figures["minimal"] / figures["node_get"], 3)
    summary["ratio_minimal_vs_node_put"] = round(figures["minimal"] / figures["node_put"], 3)
    summary["parser"] = DEFAULT_PARSER
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
