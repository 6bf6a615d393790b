"""The cost of the cluster bus's authentication: the same peer traffic with a secret and without.

Theory of operation
-------------------
Two measurements, each run with authentication off (an open bus) and on (``--secret-file``,
:mod:`kvwire.auth`: a 16-byte HMAC-SHA256 tag per frame), interleaved over ``--rounds`` rounds so
that both arms see the same machine; the best round of each is kept (the least disturbed run),
and every round's figure is in the JSON too.

(a) ``transport``: frames per second through the real peer transport, in one process: two
    :class:`realnet.transport.PeerTransport` on 127.0.0.1, one sends ``--frames`` messages (a
    ``Forward`` of a ``Put`` with a ``--value-size`` value, the bulk of a forwarding node's
    traffic) in batches of 1000 per loop turn, the other receives and decodes them. This is the
    bus alone: encode, seal, write, read, open, decode. The worst case for the ratio, since
    nothing else is measured.
(b) ``forward``: HTTP requests per second through a two-node cluster (node ``a`` owns no slot,
    so every request is forwarded to ``b`` over the bus and answered back), as the forward arm of
    ``benchmarks/http_throughput.py`` measures it, once per arm, with the same load generator
    (:mod:`_loadgen`, ``--connections`` keep-alive connections for ``--duration`` seconds; GET
    and PUT). What a client sees.

A steadier figure on a shared machine: CPU time per unit (this process's for (a); both nodes'
from ``/proc`` for (b), as ``http_throughput.py`` does), whose median over rounds barely moves
with the share of the CPUs a run gets. ``cpu_ratio_*`` is open CPU per unit / authenticated,
comparable to a throughput ratio for a CPU-bound path. Also printed: the sealing and opening
cost per frame measured directly (microseconds).

Output: a table, then as the LAST line one JSON object with the figures and the ratios
``ratio_*`` (best throughput, authenticated / open) and ``cpu_ratio_*``; the target of issue 10
is at least 0.90 for forwarded requests, i.e. authentication costs under 10% of throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import os
import random
import secrets
import sys
import tempfile
import time
import timeit
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _loadgen import choose_engine, prefill, run_load
from http_throughput import (
    HOST,
    START_DEADLINE,
    cluster_toml,
    cpu_seconds,
    free_ports,
    healthy,
    http_status,
    node_cmd,
    started,
)

import kvwire
from kvcore.messages import Forward, Put
from kvcore.metrics import NodeStats
from kvwire import auth
from realnet.transport import PeerTransport, TransportConfig


def new_ring() -> auth.Keyring:
    return auth.Keyring((base64.b64encode(secrets.token_bytes(32)),))


async def transport_rate(
    frames: int, value_size: int, ring: auth.Keyring | None
) -> tuple[float, float]:
    """(frames per second, frames per CPU second of this process) from one transport to
    another over loopback."""
    pa, pb = free_ports(2)
    got = 0
    done = asyncio.Event()

    def on_message(_src: str, _msg: Any) -> None:
        nonlocal got
        got += 1
        if got >= target:
            done.set()

    def make(node_id: str, peers: dict[str, tuple[str, int]]) -> PeerTransport:
        return PeerTransport(
            node_id=node_id, peers=peers, on_message=on_message, node_stats=NodeStats(),
            rng=random.Random(1), config=TransportConfig(queue_limit=1 << 20), keyring=ring,
        )

    a = make("a", {"b": (HOST, pb)})
    b = make("b", {"a": (HOST, pa)})
    await a.listen(HOST, pa)
    await b.listen(HOST, pb)
    msg = Forward(request_id=1, op=Put(key=b"key-000001", value=b"v" * value_size))
    try:
        target = 1
        a.send("b", msg)  # wire up (and handshake) before the clock starts
        await asyncio.wait_for(done.wait(), 30)
        done.clear()
        got, target = 0, frames
        t0 = time.perf_counter()
        c0 = time.process_time()
        sent = 0
        while sent < frames:
            for _ in range(min(1000, frames - sent)):
                a.send("b", msg)
            sent += min(1000, frames - sent)
            await asyncio.sleep(0)  # let the link flush and the receiver read
        await asyncio.wait_for(done.wait(), 120)
        return frames / (time.perf_counter() - t0), frames / (time.process_time() - c0)
    finally:
        await a.close()
        await b.close()


def seal_open_us(value_size: int) -> tuple[float, float]:
    """Microseconds to seal, and to open, one frame of a Forward(Put) payload."""
    ring = new_ring()
    c = auth.ClientHandshake(ring, "a")
    s = auth.ServerHandshake(ring, "b")
    hello = auth.handshake_fields(auth.split_frames(bytearray(c.hello()))[0][0])
    assert hello is not None
    ch = auth.handshake_fields(auth.split_frames(bytearray(s.on_hello(hello)))[0][0])
    assert ch is not None
    proof, cs = c.on_challenge(ch)
    pf = auth.handshake_fields(auth.split_frames(bytearray(proof))[0][0])
    assert pf is not None
    ss = s.on_proof(pf)
    payload = kvwire.pack(Forward(request_id=1, op=Put(key=b"key-000001", value=b"v" * value_size)))
    n = 20000
    sealed = [cs.seal(payload)[4:] for _ in range(n)]
    t_seal = timeit.timeit(lambda: cs.seal(payload), number=n) / n * 1e6
    it = iter(sealed)
    t_open = timeit.timeit(lambda: ss.open(next(it)), number=n) / n * 1e6
    return t_seal, t_open


def forward_rates(
    args: argparse.Namespace, ring_file: str | None, engine: str
) -> dict[str, tuple[float, float | None]]:
    """GET and PUT: (requests/s through node a, forwarded to b; CPU microseconds both nodes
    spent per request), with the secret file if given."""
    extra = ["--secret-file", ring_file] if ring_file else []
    out: dict[str, tuple[float, float | None]] = {}
    pids: list[int] = []
    with ExitStack() as stack:
        pa, qa, pb, qb = free_ports(4)
        cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        stack.callback(os.unlink, cfg.name)
        with cfg:
            cfg.write(cluster_toml((pa, qa), (pb, qb)))
        for nid, port, peer in (("b", pb, qb), ("a", pa, qa)):
            proc = stack.enter_context(started(
                f"node {nid}",
                node_cmd("--config", cfg.name, "--id", nid, "--port", str(port),
                         "--peer-port", str(peer), *extra),
                functools.partial(healthy, port), "GET /health 200",
            ))
            pids.append(proc.popen.pid)
        deadline = time.monotonic() + START_DEADLINE
        while http_status(pa, "PUT", "/kv/bench-probe", b"x") not in (200, 201, 204):
            if time.monotonic() > deadline:
                raise RuntimeError("node a never forwarded a PUT to node b")
            time.sleep(0.05)
        prefill(HOST, pa, keys=args.keys, value_size=args.value_size)
        for method in ("GET", "PUT"):
            c0 = cpu_seconds(pids)
            r = run_load(HOST, pa, method=method, connections=args.connections,
                         duration=args.duration, keys=args.keys, value_size=args.value_size,
                         engine=engine)
            c1 = cpu_seconds(pids)
            cpu_us = (c1 - c0) / r.requests * 1e6 if c0 is not None and c1 is not None and r.requests else None
            out[method] = (r.rps, cpu_us)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Cost of the cluster bus's authentication.")
    p.add_argument("--frames", type=int, default=200_000, help="frames per transport run")
    p.add_argument("--value-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per HTTP measurement")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--engine", default="auto", choices=["auto", "wrk", "asyncio"])
    p.add_argument("--no-forward", action="store_true", help="skip the HTTP forwarding arms")
    args = p.parse_args(argv)
    engine = choose_engine(args.engine)
    ring = new_ring()
    key_file = tempfile.NamedTemporaryFile("w", suffix=".key", delete=False)
    with key_file:
        key_file.write(ring.primary.decode() + "\n")
    runs: dict[str, list[float]] = {}
    cpu_runs: dict[str, list[float]] = {}  # CPU microseconds per frame / per request
    try:
        for rnd in range(args.rounds):
            for arm, r in (("open", None), ("auth", ring)):
                fps, fpcpu = asyncio.run(transport_rate(args.frames, args.value_size, r))
                runs.setdefault(f"transport_{arm}", []).append(fps)
                cpu_runs.setdefault(f"transport_{arm}", []).append(1e6 / fpcpu)
                print(f"round {rnd + 1} transport {arm:4s} {fps:10.0f} frames/s "
                      f"{1e6 / fpcpu:6.2f} us CPU/frame", file=sys.stderr)
                if not args.no_forward:
                    rates = forward_rates(args, key_file.name if r else None, engine)
                    for method, (rps, cpu_us) in rates.items():
                        name = f"forward_{method.lower()}_{arm}"
                        runs.setdefault(name, []).append(rps)
                        if cpu_us is not None:
                            cpu_runs.setdefault(name, []).append(cpu_us)
                        print(f"round {rnd + 1} forward {method} {arm:4s} {rps:10.0f} req/s "
                              f"{cpu_us or 0:7.1f} us CPU/req", file=sys.stderr)
    finally:
        os.unlink(key_file.name)
    best = {k: max(v) for k, v in runs.items()}
    # CPU per unit barely moves with the share of the machine a run gets: the median is kept
    cpu = {k: sorted(v)[len(v) // 2] for k, v in cpu_runs.items()}
    t_seal, t_open = seal_open_us(args.value_size)

    def ratio(name: str) -> float | None:
        a, o = best.get(f"{name}_auth"), best.get(f"{name}_open")
        return round(a / o, 3) if a and o else None

    def cpu_ratio(name: str) -> float | None:
        """open CPU per unit / authenticated: comparable to a throughput ratio (CPU-bound)."""
        a, o = cpu.get(f"{name}_auth"), cpu.get(f"{name}_open")
        return round(o / a, 3) if a and o else None

    print(f"{'measurement':24s} {'open':>9s} {'auth':>9s} {'ratio':>6s}  "
          f"{'CPU us open':>11s} {'CPU us auth':>11s} {'CPU ratio':>9s}")
    for name, unit in (("transport", "frames/s"), ("forward_get", "req/s"), ("forward_put", "req/s")):
        if f"{name}_open" in best:
            print(f"{name + ' (' + unit + ')':24s} {best[f'{name}_open']:9.0f} "
                  f"{best[f'{name}_auth']:9.0f} {ratio(name)!s:>6s}  "
                  f"{cpu.get(f'{name}_open', 0):11.2f} {cpu.get(f'{name}_auth', 0):11.2f} "
                  f"{cpu_ratio(name)!s:>9s}")
    print(f"seal {t_seal:.2f} us/frame, open {t_open:.2f} us/frame "
          f"(a Forward(Put) of {args.value_size} bytes)")
    out: dict[str, Any] = {
        "benchmark": "bus_auth",
        "value_size": args.value_size,
        "frames": args.frames,
        "rounds": args.rounds,
        **{f"best_{k}": round(v, 1) for k, v in sorted(best.items())},
        "seal_us": round(t_seal, 3),
        "open_us": round(t_open, 3),
        **{f"cpu_us_{k}": round(v, 2) for k, v in sorted(cpu.items())},
        "ratio_transport": ratio("transport"),
        "ratio_forward_get": ratio("forward_get"),
        "ratio_forward_put": ratio("forward_put"),
        "cpu_ratio_transport": cpu_ratio("transport"),
        "cpu_ratio_forward_get": cpu_ratio("forward_get"),
        "cpu_ratio_forward_put": cpu_ratio("forward_put"),
        "runs": {k: [round(x, 1) for x in v] for k, v in sorted(runs.items())},
        "cpu_runs": {k: [round(x, 2) for x in v] for k, v in sorted(cpu_runs.items())},
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
