"""Start a local storelab cluster, wait until it is ready, show how to use it, stop it cleanly.

Theory of operation
-------------------
The cluster is ``examples/cluster.toml`` (3 nodes on 127.0.0.1, slots split evenly), or the
file given with ``--config``. Each node is one ``python -m realnet.node --config FILE --id ID``
process in its own session, so a Ctrl-C in the terminal reaches this script only, and the script
stops every node itself, by the handle of the process it started (SIGTERM, then a wait, then
SIGKILL if a node does not exit within 10 s). Nothing is ever stopped by name.

``--base-port N`` moves the cluster to other ports (node i gets HTTP port N+i and peer port
N+10000+i); ``--base-port 0`` picks free ports (retrying with fresh ones if another process
takes one first). The effective configuration and each node's log go to a work directory that is
printed (and removed at the end unless ``--keep``).

Ready means: every node answers ``GET /health``, reports a complete slot map, holds every
member alive, and has synced with another member (a static member serves only once it has: it
cannot tell a first start from a restart that lost its data). Then the script prints the commands to try and waits for Ctrl-C (or SIGTERM);
with ``--smoke`` it sets a key through the first node, reads it back through the last one (which
forwards to the owner), and stops. Exit status 0 on a clean stop, 1 if the cluster did not start
or the smoke test failed.

    python examples/local_cluster.py              # ports 7001-7003; Ctrl-C stops it
    python examples/local_cluster.py --smoke --base-port 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from realnet.client import Client, NodeConnection  # noqa: E402

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
ATTEMPTS = 3


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the kernel says are free now (bound together, then closed)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def toml_text(config: dict[str, Any]) -> str:
    """Write back the few shapes a cluster file uses: tables of scalars, ``[[cluster.nodes]]``."""
    lines: list[str] = []

    def scalars(table: dict[str, Any]) -> None:
        for k, v in table.items():
            if not isinstance(v, dict | list):
                lines.append(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")

    for name, table in config.items():
        if name == "cluster":
            continue
        lines.append(f"[{name}]")
        scalars(table)
    cluster = config.get("cluster", {})
    lines.append("[cluster]")
    scalars(cluster)
    for node in cluster.get("nodes", []):
        lines.append("[[cluster.nodes]]")
        scalars(node)
    return "\n".join(lines) + "\n"


def with_ports(config: dict[str, Any], base: int | None) -> dict[str, Any]:
    """The config with node i on HTTP port base+i and peer port base+10000+i (0: free ports)."""
    if base is None:
        return config
    nodes = config["cluster"]["nodes"]
    if base == 0:
        ports = free_ports(2 * len(nodes))
        pairs = [(ports[2 * i], ports[2 * i + 1]) for i in range(len(nodes))]
    else:
        pairs = [(base + i, base + 10000 + i) for i in range(len(nodes))]
    out = {**config, "cluster": {**config["cluster"], "nodes": []}}
    for node, (http, peer) in zip(nodes, pairs, strict=True):
        out["cluster"]["nodes"].append({**node, "addr": f"127.0.0.1:{http}", "peer_addr": f"127.0.0.1:{peer}"})
    return out


class Node:
    """One node process, started by this script and stopped by its handle."""

    def __init__(self, node_id: str, addr: str, config: Path, log: Path) -> None:
        self.id, self.addr, self.log = node_id, addr, log
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "realnet.node", "--config", str(config), "--id", node_id],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # Ctrl-C reaches the script, which stops the node itself
            )

    def get(self, path: str) -> Any:
        conn = NodeConnection(self.addr, timeout=2.0)
        try:
            status, _, body = conn.request("GET", path)
        finally:
            conn.close()
        return json.loads(body) if status == 200 else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM, wait, SIGKILL if it does not exit in time; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        return self.proc.returncode


def ready(nodes: list[Node]) -> bool:
    """Every node healthy, synced, with a complete slot map and every member alive in its view."""
    ids = {n.id for n in nodes}
    for n in nodes:
        try:
            slots = n.get("/cluster/slots")
            members = n.get("/cluster/members")
            info = n.get("/cluster/info")
        except OSError:
            return False
        if not slots or slots.get("unassigned") or not members or not info or info.get("syncing"):
            return False
        if {m["id"] for m in members if m["state"] == "alive"} != ids:
            return False
    return True


def start(config: dict[str, Any], work: Path, attempt: int) -> list[Node]:
    """Start every node and wait until the cluster is ready; RuntimeError if it does not get there."""
    path = work / f"cluster-{attempt}.toml"
    path.write_text(toml_text(config))
    nodes = [Node(m["id"], m["addr"], path, work / f"{m['id']}-{attempt}.log") for m in config["cluster"]["nodes"]]
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not ready(nodes):
            for n in nodes:
                if n.proc.poll() is not None:
                    raise RuntimeError(f"Node {n.id} exited with status {n.proc.returncode}:\n{n.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"The cluster was not ready after {START_TIMEOUT:g} s.")
            time.sleep(0.1)
    except BaseException:
        stop(nodes, quiet=True)
        raise
    return nodes


def stop(nodes: list[Node], quiet: bool = False) -> None:
    for n in nodes:
        status = n.stop()
        if not quiet:
            print(f"stopped {n.id} (pid {n.proc.pid}, exit status {status})", flush=True)


def smoke(nodes: list[Node]) -> bool:
    """Set a key through the first node, read it through the last one (a forward)."""
    with Client(nodes[0].addr) as c:
        c.set("example:greeting", "hello from storelab")
    conn = NodeConnection(nodes[-1].addr, timeout=5.0)
    try:
        status, _, body = conn.request("GET", "/kv/example:greeting")
    finally:
        conn.close()
    ok = status == 200 and body == b"hello from storelab"
    verdict = "ok" if ok else f"FAILED ({status} {body[:80]!r})"
    print(f"smoke: set through {nodes[0].id}, read through {nodes[-1].id}: {verdict}", flush=True)
    return ok


def usage(nodes: list[Node]) -> str:
    a, z = nodes[0].addr, nodes[-1].addr
    return "\n".join([
        f"The cluster is ready: {', '.join(f'{n.id} at http://{n.addr} (pid {n.proc.pid})' for n in nodes)}.",
        "Try, in another terminal:",
        f"  storelab set greeting hello --node {a}",
        f"  storelab get greeting --node {z}",
        f"  storelab cluster info {a}",
        f"  storelab cluster members {a}",
        f"  curl -s http://{z}/cluster/slots",
        "Press Ctrl-C to stop the cluster.",
    ])


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python examples/local_cluster.py", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=Path(__file__).with_name("cluster.toml"),
                   help="the cluster file (default: examples/cluster.toml)")
    p.add_argument("--base-port", type=int, metavar="N",
                   help="node i listens on N+i (peer port N+10000+i); 0 picks free ports")
    p.add_argument("--smoke", action="store_true", help="set and get one key, then stop (a self-test)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (config and logs)")
    args = p.parse_args(argv)
    if args.base_port is not None and not (args.base_port == 0 or 1024 <= args.base_port <= 55000):
        p.error("--base-port must be 0 or within 1024-55000")
    with open(args.config, "rb") as f:
        base_config = tomllib.load(f)
    work = Path(tempfile.mkdtemp(prefix="storelab-example-"))
    print(f"work directory (config, node logs): {work}", flush=True)
    # SIGTERM to this script stops the cluster the way Ctrl-C does
    signal.signal(signal.SIGTERM, _interrupt)
    nodes: list[Node] = []
    status = 0
    try:
        for attempt in range(ATTEMPTS if args.base_port == 0 else 1):
            try:
                nodes = start(with_ports(base_config, args.base_port), work, attempt)
                break
            except RuntimeError as e:
                lost_race = args.base_port == 0 and "in use" in str(e)
                if not lost_race or attempt == ATTEMPTS - 1:
                    print(f"local_cluster: {e}", file=sys.stderr)
                    return 1
        if args.smoke:
            status = 0 if smoke(nodes) else 1
        else:
            print(usage(nodes), flush=True)
            while all(n.proc.poll() is None for n in nodes):
                time.sleep(0.5)
            print("a node exited by itself; stopping the others", flush=True)
    except KeyboardInterrupt:
        print("\nstopping the cluster", flush=True)
    finally:
        stop(nodes)
        if args.keep:
            print(f"kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
