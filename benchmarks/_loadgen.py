"""HTTP/1.1 keep-alive load generation for the benchmarks: ``wrk`` when installed, else asyncio.

Theory of operation
-------------------
:func:`run_load` drives ``connections`` keep-alive connections for ``duration`` seconds against
``host:port``, each with one request in flight at a time (no pipelining), GETting or PUTting keys
``{prefix}0 .. {prefix}{keys-1}`` in turn, and returns a :class:`LoadResult`: completed requests,
requests/s, responses that were not 2xx/3xx, socket errors, p50/p99 latency, and which engine ran.

The generator always runs in a process of its own. On a 2-core machine it competes with the
server for CPU; in-process it would also compete for the server's GIL and event loop.

Engines:

``wrk`` (preferred; Debian package ``wrk``)
    One wrk thread by default. A generated Lua script builds every request once per thread in
    ``init`` (so per-request Lua work is a table lookup) and prints one machine-readable summary
    line from ``done``. No ``response`` callback is defined: defining one makes wrk hand every
    response to Lua and costs it much of its speed, so status codes are only counted as wrk
    does, "2xx/3xx or not".
``asyncio`` (fallback)
    ``python benchmarks/_loadgen.py --engine asyncio --child ...`` in a subprocess: a raw
    ``asyncio.Protocol`` client with a minimal response parser (status line, Content-Length,
    no body for 204/304). It counts exact status codes but is itself CPU-bound near the rates of
    a fast server, so its figures are lower bounds; ratios between servers stay meaningful.

Run as a script for one measurement::

    python benchmarks/_loadgen.py --port 7000 --method PUT --connections 32 --duration 5

It prints a readable line and, last, the result as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_PREFIX = "/kv/bench-"
_WRK_MARK = "STORELAB-LOADGEN "


@dataclass
class LoadResult:
    """One measurement. Latencies in milliseconds (None when nothing completed)."""

    engine: str
    method: str
    connections: int
    duration: float
    requests: int
    rps: float
    non_2xx_3xx: int
    socket_errors: int
    p50_ms: float | None
    p99_ms: float | None
    statuses: dict[str, int] = field(default_factory=dict)  # exact codes (asyncio engine only)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def wrk_path() -> str | None:
    """The wrk binary, if installed."""
    return shutil.which("wrk")


def choose_engine(engine: str = "auto") -> str:
    if engine == "auto":
        return "wrk" if wrk_path() else "asyncio"
    if engine == "wrk" and not wrk_path():
        raise RuntimeError("wrk is not installed (Debian: apt-get install wrk)")
    return engine


def run_load(
    host: str,
    port: int,
    *,
    method: str = "GET",
    connections: int = 32,
    duration: float = 5.0,
    keys: int = 1000,
    value_size: int = 64,
    prefix: str = DEFAULT_PREFIX,
    engine: str = "auto",
    threads: int = 1,
    token: str | None = None,
) -> LoadResult:
    """Measure one method against host:port in a separate process; see the module docstring.
    ``token``: every request carries ``Authorization: Bearer TOKEN`` (a node's client token)."""
    method = method.upper()
    if method not in ("GET", "PUT"):
        raise ValueError("method must be GET or PUT")
    engine = choose_engine(engine)
    if engine == "wrk":
        return _run_wrk(host, port, method, connections, duration, keys, value_size, prefix, threads, token)
    return _run_asyncio_child(host, port, method, connections, duration, keys, value_size, prefix, token)


# --- wrk --------------------------------------------------------------------------------------

_WRK_SCRIPT = """
local method = "%(method)s"
local nkeys = %(keys)d
local prefix = "%(prefix)s"
local body = string.rep("v", %(value_size)d)
local headers = %(headers)s
local reqs = {}
local n = 0

function init(args)
  for k = 0, nkeys - 1 do
    if method == "PUT" then
      reqs[k + 1] = wrk.format("PUT", prefix .. k, headers, body)
    else
      reqs[k + 1] = wrk.format("GET", prefix .. k, headers)
    end
  end
end

function request()
  n = n %% nkeys + 1
  return reqs[n]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "%(mark)s{\\"requests\\":%%d,\\"duration_us\\":%%d,\\"non_2xx_3xx\\":%%d," ..
    "\\"socket_errors\\":%%d,\\"p50_us\\":%%d,\\"p99_us\\":%%d}\\n",
    summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50.0), latency:percentile(99.0)))
end
"""


def _run_wrk(
    host: str,
    port: int,
    method: str,
    connections: int,
    duration: float,
    keys: int,
    value_size: int,
    prefix: str,
    threads: int,
    token: str | None = None,
) -> LoadResult:
    wrk = wrk_path()
    assert wrk is not None
    script = _WRK_SCRIPT % {
        "method": method,
        "keys": keys,
        "prefix": prefix,
        "value_size": value_size,
        "mark": _WRK_MARK,
        "headers": f'{{["Authorization"] = "Bearer {token}"}}' if token else "nil",
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        script_path = f.name
    try:
        secs = max(1, round(duration))
        cmd = [
            wrk,
            f"-t{max(1, min(threads, connections))}",
            f"-c{connections}",
            f"-d{secs}s",
            "--timeout",
            "10s",
            "-s",
            script_path,
            f"http://{host}:{port}/",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60)
    finally:
        os.unlink(script_path)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(_WRK_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    got = json.loads(line[len(_WRK_MARK) :])
    seconds = got["duration_us"] / 1e6
    completed = got["requests"]
    return LoadResult(
        engine="wrk",
        method=method,
        connections=connections,
        duration=seconds,
        requests=completed,
        rps=completed / seconds if seconds else 0.0,
        non_2xx_3xx=got["non_2xx_3xx"],
        socket_errors=got["socket_errors"],
        p50_ms=got["p50_us"] / 1000 if completed else None,
        p99_ms=got["p99_us"] / 1000 if completed else None,
    )


# --- asyncio fallback -------------------------------------------------------------------------


def _run_asyncio_child(
    host: str,
    port: int,
    method: str,
    connections: int,
    duration: float,
    keys: int,
    value_size: int,
    prefix: str,
    token: str | None = None,
) -> LoadResult:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--engine=asyncio",
        f"--host={host}",
        f"--port={port}",
        f"--method={method}",
        f"--connections={connections}",
        f"--duration={duration}",
        f"--keys={keys}",
        f"--value-size={value_size}",
        f"--prefix={prefix}",
        *([f"--token={token}"] if token else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"asyncio load generator failed: {proc.stderr.strip()}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return LoadResult(**got)


class _ClientConn(asyncio.Protocol):
    """One keep-alive connection: send a request, parse its response, send the next."""

    def __init__(self, gen: _AsyncioLoad, index: int) -> None:
        self.gen = gen
        self.i = index
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.sent_at = 0.0
        self.lost: asyncio.Future[None] = gen.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send()

    def send(self) -> None:
        gen = self.gen
        if self.transport is None or gen.stopping:
            return
        self.i = (self.i + 1) % len(gen.requests)
        self.sent_at = time.perf_counter()
        self.transport.write(gen.requests[self.i])

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self.buf = buf
            return
        status = int(buf[9:12])
        length = 0
        if status != 204 and status != 304:
            head = buf[:end].lower()
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                length = int(head[i + 17 : j if j >= 0 else len(head)])
        total = end + 4 + length
        if len(buf) < total:
            self.buf = buf
            return
        self.buf = buf[total:]
        self.gen.record(status, time.perf_counter() - self.sent_at)
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.gen.stopping:
            self.gen.socket_errors += 1
        if not self.lost.done():
            self.lost.set_result(None)


class _AsyncioLoad:
    def __init__(self, host: str, port: int, method: str, keys: int, value_size: int, prefix: str,
                 token: str | None = None):
        self.loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        body = b"v" * value_size
        self.requests: list[bytes] = []
        for k in range(keys):
            head = f"{method} {prefix}{k} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            if token:
                head += f"Authorization: Bearer {token}\r\n"
            if method == "PUT":
                head += f"Content-Length: {len(body)}\r\n"
            self.requests.append(head.encode() + b"\r\n" + (body if method == "PUT" else b""))
        self.stopping = False
        self.measuring = False
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.socket_errors = 0

    def record(self, status: int, latency: float) -> None:
        if self.measuring:
            self.latencies.append(latency)
            self.statuses[status] = self.statuses.get(status, 0) + 1

    async def run(self, connections: int, duration: float) -> LoadResult:
        conns = []
        for i in range(connections):
            _, proto = await self.loop.create_connection(
                functools.partial(_ClientConn, self, i * 7919), self.host, self.port
            )
            conns.append(proto)
        self.measuring = True
        t0 = time.perf_counter()
        await asyncio.sleep(duration)
        self.measuring = False
        elapsed = time.perf_counter() - t0
        self.stopping = True
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        await asyncio.gather(*(c.lost for c in conns))
        lat = sorted(self.latencies)
        n = len(lat)
        return LoadResult(
            engine="asyncio",
            method="",
            connections=connections,
            duration=elapsed,
            requests=n,
            rps=n / elapsed if elapsed else 0.0,
            non_2xx_3xx=sum(v for s, v in self.statuses.items() if not 200 <= s < 400),
            socket_errors=self.socket_errors,
            p50_ms=lat[n // 2] * 1000 if n else None,
            p99_ms=lat[min(n - 1, (n * 99) // 100)] * 1000 if n else None,
            statuses={str(s): v for s, v in sorted(self.statuses.items())},
        )


async def _asyncio_main(args: argparse.Namespace) -> LoadResult:
    gen = _AsyncioLoad(args.host, args.port, args.method, args.keys, args.value_size, args.prefix, args.token)
    result = await gen.run(args.connections, args.duration)
    result.method = args.method
    return result


# --- helpers for benchmarks -------------------------------------------------------------------


def prefill(
    host: str, port: int, *, keys: int = 1000, value_size: int = 64, prefix: str = DEFAULT_PREFIX,
    token: str | None = None,
) -> dict[int, int]:
    """PUT every key once over one keep-alive connection; returns the status counts."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    counts: dict[int, int] = {}
    body = b"v" * value_size
    try:
        for k in range(keys):
            conn.request("PUT", f"{prefix}{k}", body=body,
                         headers={"Authorization": f"Bearer {token}"} if token else {})
            resp = conn.getresponse()
            resp.read()
            counts[resp.status] = counts.get(resp.status, 0) + 1
    finally:
        conn.close()
    return counts


def format_result(r: LoadResult) -> str:
    p50 = f"{r.p50_ms:.2f}" if r.p50_ms is not None else "-"
    p99 = f"{r.p99_ms:.2f}" if r.p99_ms is not None else "-"
    return (
        f"{r.method:4s} {r.rps:>10,.0f} req/s  p50 {p50} ms  p99 {p99} ms  "
        f"non-2xx/3xx {r.non_2xx_3xx}  socket errors {r.socket_errors}  [{r.engine}]"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--method", default="GET", choices=["GET", "PUT"])
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--value-size", type=int, default=64)
    p.add_argument("--prefix", default=DEFAULT_PREFIX)
    p.add_argument("--engine", default="auto", choices=["auto", "wrk", "asyncio"])
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--token", default=None, help="send Authorization: Bearer TOKEN")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:  # the asyncio engine, in the process run_load started
        result = asyncio.run(_asyncio_main(args))
        print(json.dumps(result.as_dict()))
        return 0
    result = run_load(
        args.host,
        args.port,
        method=args.method,
        connections=args.connections,
        duration=args.duration,
        keys=args.keys,
        value_size=args.value_size,
        prefix=args.prefix,
        engine=args.engine,
        threads=args.threads,
        token=args.token,
    )
    print(format_result(result))
    print(json.dumps(result.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
