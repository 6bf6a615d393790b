"""Send 10^5 hostile peer streams to live nodes (with and without a cluster secret).

Usage::

    PYTHONPATH=. python tests/tools/hostile_peer.py [--count 100000] [--concurrency 32] [--seed 1]

Theory of operation
-------------------
For each arm (``secret``: the node has a generated ``--secret-file``; ``open``: no secret) it
starts one ``python -m realnet.node`` on free 127.0.0.1 ports, PUTs a key, then sends ``--count``
streams drawn by :func:`tests.tools.hostile.hostile_stream` from one seeded ``random.Random``,
each on a connection of its own, ``--concurrency`` at a time. Then it checks what issue 10 asks:
the process is alive and serves (``/health``; with a secret the key still reads back and nobody
joined), no traceback was written, the log grew by a bounded number of lines (rate-limited
logging), the refusals were counted (``frames_malformed`` in ``/cluster/info``), and the resident
memory stayed bounded. The node is stopped through its own handle (SIGTERM, then kill).

Output: a table, then as the LAST line one JSON object with the figures per arm and ``ok``.
Exit status 0 when every check held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from kvwire import auth  # noqa: E402
from tests.tools.hostile import hostile_stream  # noqa: E402

HOST = "127.0.0.1"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://{HOST}:{port}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


async def send_one(port: int, data: bytes) -> None:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
    except (OSError, TimeoutError):
        return
    try:
        writer.write(data)
        if writer.can_write_eof():
            writer.write_eof()
        await asyncio.wait_for(reader.read(), 15)
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


async def flood(port: int, streams: list[bytes], concurrency: int) -> None:
    it = iter(streams)

    async def worker() -> None:
        for data in it:
            await send_one(port, data)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def run_arm(name: str, secret: bool, count: int, concurrency: int, seed: int, work: Path) -> dict[str, Any]:
    port, peer = free_ports(2)
    log_path = work / f"{name}.log"
    args = [sys.executable, "-m", "realnet.node", "--id", "target", "--port", str(port),
            "--peer-port", str(peer), "--log-level", "info"]
    if secret:
        key = work / f"{name}.key"
        key.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
        args += ["--secret-file", str(key)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"node did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        assert http(port, "PUT", "/kv/before", b"1")[0] == 204
        lines_before = len(log_path.read_text(errors="replace").splitlines())
        rss_before = rss_kb(proc.pid)
        other = auth.Keyring((base64.b64encode(secrets.token_bytes(32)),))
        rng = random.Random(seed)
        t0 = time.monotonic()
        sent = 0
        batch = 5000
        while sent < count:
            n = min(batch, count - sent)
            streams = [hostile_stream(rng, other) for _ in range(n)]
            asyncio.run(flood(peer, streams, concurrency))
            sent += n
        elapsed = time.monotonic() - t0
        alive = proc.poll() is None
        health = http(port, "GET", "/health")[0] if alive else 0
        info = json.loads(http(port, "GET", "/cluster/info")[1]) if alive else {}
        members = json.loads(http(port, "GET", "/cluster/members")[1]) if alive else []
        still = http(port, "GET", "/kv/before") if alive else (0, b"")
        text = log_path.read_text(errors="replace")
        refused = sum(info.get("transport", {}).get("frames_malformed", {}).values())
        out = {
            "arm": name,
            "streams": sent,
            "seconds": round(elapsed, 1),
            "streams_per_s": round(sent / elapsed),
            "alive": alive,
            "health": health,
            "refused_counted": refused,
            "log_lines_added": len(text.splitlines()) - lines_before,
            "tracebacks": text.count("Traceback"),
            "rss_kb_before": rss_before,
            "rss_kb_after": rss_kb(proc.pid),
            "members": sorted(m["id"] for m in members),
            "key_still_readable": still == (200, b"1"),
        }
        checks = [alive, health == 200, out["tracebacks"] == 0, out["log_lines_added"] <= 200,
                  refused >= sent // 2,
                  out["rss_kb_after"] < max(4 * rss_before, rss_before + 100_000)]
        if secret:
            checks += [out["members"] == ["target"], out["key_still_readable"]]
        out["ok"] = all(checks)
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=100_000, help="streams per arm (default 10^5)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--arms", default="secret,open", help="comma-separated: secret, open")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="hostile-peer-") as tmp:
        for arm in args.arms.split(","):
            results.append(run_arm(arm, arm == "secret", args.count, args.concurrency, args.seed,
                                   Path(tmp)))
    cols = ["arm", "streams", "seconds", "streams_per_s", "alive", "refused_counted",
            "log_lines_added", "tracebacks", "rss_kb_before", "rss_kb_after", "ok"]
    print(" ".join(f"{c:>16}" for c in cols))
    for r in results:
        print(" ".join(f"{r[c]!s:>16}" for c in cols))
    ok = all(r["ok"] for r in results)
    print(json.dumps({"benchmark": "hostile_peer", "ok": ok, "arms": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
