"""Fixtures that run real ``python -m realnet.node`` processes on 127.0.0.1.

Every node is a child process started with ``sys.executable`` on ports picked by binding port 0
(then closed and handed to the child). A start that loses the race for a port ("address in use",
exit status 2) is retried with fresh ports. Readiness is ``GET /health`` polled against a
deadline; nothing sleeps a fixed time. Every process is stopped through its own Popen handle
(terminate, wait with a timeout, kill), also when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kvcore.slots import Range, even_split, format_ranges
from realnet.client import NodeConnection

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_DEADLINE = 30.0  # seconds for a node to answer /health (generous: busy CI machines)
START_ATTEMPTS = 3

#: Node settings for clusters where nodes die: a forward to a dead owner times out after 1 s.
FAST_SETTINGS: dict[str, float] = {"forward_timeout": 1.0}
#: SWIM timings for clusters where nodes die, so that failure detection takes about a second on
#: loopback: a probe every 0.2 s (0.1 s for the direct ack), suspicion for 2 intervals before
#: "dead", gossip every 50 ms, a full-state exchange every second (how a restarted node learns
#: that it was declared dead and refutes), and join retries at most a second apart.
FAST_SWIM: dict[str, Any] = {
    "preset": "local",
    "probe_interval": 0.2,
    "probe_timeout": 0.1,
    "suspicion_mult": 2,
    "gossip_interval": 0.05,
    "push_pull_interval": 1.0,
    "join_backoff_max": 1.0,
}
#: For clusters where no node dies: a generous forward timeout, so that no request fails on a
#: stalled process...
STEADY_SETTINGS: dict[str, float] = {"forward_timeout": 10.0}
#: ...and frequent probes (RTTs show up quickly) with a suspicion timeout of 10 s, so that a
#: process stalled on a busy machine is refuted long before it could be declared dead (a
#: suspect owner is still forwarded to: no request fails with owner_down).
STEADY_SWIM: dict[str, Any] = {**FAST_SWIM, "suspicion_mult": 50}


#: every port this test process has handed out: never handed out twice, so two nodes started one
#: after the other cannot be given the same port before the first has bound it
_HANDED_OUT: set[int] = set()


def _own_port_range() -> range:
    """Ports below the kernel's ephemeral range, a slice of them per pytest-xdist worker.

    A port handed out from the ephemeral range can be taken, once a node that held it is killed,
    as the source port of any outgoing connection on the machine (another worker's client, this
    process's own), and the node's restart on the same port then fails with "address already in
    use". Below the range the kernel hands out no port by itself, and the workers' slices do not
    overlap."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    k = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    span = 4000
    top = low - span * k
    return range(max(1024, top - span), max(1024, top))


_OWN_PORTS = _own_port_range()
_next_own = iter(_OWN_PORTS)


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now (bound together, then closed), none of them handed out
    before by this process: from this worker's slice below the ephemeral range (see
    :func:`_own_port_range`), else, should it run out, from the kernel."""
    socks = []
    try:
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            port = next(_next_own, 0)
            try:
                s.bind((HOST, port))
            except OSError:
                s.close()  # in use by someone else: the next one (bounded by the slice)
                continue
            if s.getsockname()[1] in _HANDED_OUT:
                s.close()  # bounded: the kernel's ephemeral range is far larger than a session's use
                continue
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
        _HANDED_OUT.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string for the plain strings used here


class NodeProc:
    """One node process and the addresses it serves."""

    def __init__(self, node_id: str | None, port: int, peer_port: int, log_path: Path) -> None:
        self.id = node_id
        self.port = port
        self.peer_port = peer_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.args: list[str] = []
        #: environment variables added to the process's (kept for restarts; a test's fault hook)
        self.env: dict[str, str] = {}
        self._conn: NodeConnection | None = None
        #: another process answered on our port while we started (see wait_healthy)
        self.lost_race = False

    @property
    def addr(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def peer_addr(self) -> str:
        return f"{HOST}:{self.peer_port}"

    def launch(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Start the process; ``env``: variables added to this one's (None: the last launch's)."""
        self.args = list(args)
        if env is not None:
            self.env = dict(env)
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "realnet.node", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=full_env,
            )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_healthy(self, deadline: float) -> bool:
        """Poll /health until it answers 200 (True) or the process exits (False)."""
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                return False
            try:
                status, _, body = self.request("GET", "/health", timeout=2.0)
                if status == 200:
                    got = json.loads(body)["id"]
                    if self.id is None:
                        self.id = got
                    if got != self.id:
                        # another process (another test worker's node) took our port before we
                        # bound it: our node cannot bind, so this start lost the race; retry
                        self.lost_race = True
                        try:
                            self.proc.wait(timeout=10)
                        except subprocess.TimeoutExpired:
                            pass
                        return False
                    return True
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.id} on {self.addr} not healthy:\n{self.log_text()}")
            time.sleep(0.05)

    # --- HTTP ----------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes | None = None, timeout: float = 10.0
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a keep-alive connection (reopened after any failure)."""
        if self._conn is None or self._conn.timeout != timeout:
            if self._conn is not None:
                self._conn.close()
            self._conn = NodeConnection(self.addr, timeout=timeout)
        return self._conn.request(method, path, body)

    def get_json(self, path: str) -> Any:
        status, _, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def info(self) -> dict[str, Any]:
        return self.get_json("/cluster/info")  # type: ignore[no-any-return]

    def members(self) -> dict[str, dict[str, Any]]:
        """``/cluster/members`` by id."""
        return {m["id"]: m for m in self.get_json("/cluster/members")}

    def states(self) -> dict[str, str]:
        """Every member's state in this node's view, by id (itself included)."""
        return {mid: m["state"] for mid, m in self.members().items()}

    def restart(self, deadline: float = START_DEADLINE) -> None:
        """Start the process again with the same arguments (same id, same ports)."""
        self.close_conn()
        self.launch(self.args)
        if not self.wait_healthy(time.monotonic() + deadline):
            raise RuntimeError(f"node {self.id} exited during restart:\n{self.log_text()}")

    # --- lifecycle -----------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """``kill -9``."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.close_conn()

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        """Terminate, wait, kill if needed. Safe to call twice."""
        self.close_conn()
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


class Cluster:
    """Nodes started from one TOML config; ``nodes`` by id, in config order."""

    def __init__(self, nodes: dict[str, NodeProc], config_path: Path | None) -> None:
        self.nodes = nodes
        self.config_path = config_path

    def __getitem__(self, node_id: str) -> NodeProc:
        return self.nodes[node_id]

    def __iter__(self) -> Iterator[NodeProc]:
        return iter(self.nodes.values())

    def stop(self) -> None:
        for n in self.nodes.values():
            n.stop()


def _address_in_use(node: NodeProc) -> bool:
    return node.proc is not None and node.proc.poll() == 2 and "in use" in node.log_text()


class Launcher:
    """Starts nodes and clusters in a directory and stops every one of them at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[NodeProc] = []
        self._seq = 0

    def _log(self, name: str) -> Path:
        self._seq += 1
        return self.workdir / f"{self._seq:02d}-{name}.log"

    def cluster(
        self,
        ids: Sequence[str] = ("a", "b", "c"),
        settings: Mapping[str, float | int] | None = None,
        slots: Mapping[str, list[Range]] | None = None,
        swim: Mapping[str, Any] | None = None,
        wired: bool = True,
    ) -> Cluster:
        """Start a static cluster (slots: ``even_split(ids)`` unless given); wait until healthy
        (and, with ``wired``, until every peer link is connected)."""
        assignment = dict(slots) if slots is not None else even_split(list(ids))
        last = ""
        for attempt in range(START_ATTEMPTS):
            ports = free_ports(2 * len(ids))
            nodes = {
                nid: NodeProc(nid, ports[2 * i], ports[2 * i + 1], self._log(f"{nid}-{attempt}"))
                for i, nid in enumerate(ids)
            }
            lines = []
            lines += toml_tables(settings=settings, swim=swim)
            lines += ["[cluster]", "epoch = 1"]
            for nid, n in nodes.items():
                lines += [
                    "[[cluster.nodes]]",
                    f"id = {toml_value(nid)}",
                    f"addr = {toml_value(n.addr)}",
                    f"peer_addr = {toml_value(n.peer_addr)}",
                    f"slots = {toml_value(format_ranges(assignment.get(nid, [])))}",
                ]
            config = self.workdir / f"cluster-{self._seq}.toml"
            config.write_text("\n".join(lines) + "\n")
            for nid, n in nodes.items():
                n.launch(["--config", str(config), "--id", nid, "--log-level", "warning"])
                self.started.append(n)
            if self._wait_all(list(nodes.values())):
                cluster = Cluster(nodes, config)
                if wired:
                    wait_wired(cluster)
                return cluster
            last = "\n".join(n.log_text() for n in nodes.values())
            for n in nodes.values():
                n.stop()
        raise RuntimeError(f"cluster did not start after {START_ATTEMPTS} attempts:\n{last}")

    def standalone(self, extra: Sequence[str] = ()) -> NodeProc:
        """Start ``python -m realnet.node --port P --peer-port Q`` (no config)."""
        last = ""
        for attempt in range(START_ATTEMPTS):
            port, peer = free_ports(2)
            n = NodeProc(None, port, peer, self._log(f"standalone-{attempt}"))
            n.launch(["--port", str(port), "--peer-port", str(peer), "--log-level", "warning", *extra])
            self.started.append(n)
            if self._wait_all([n]):
                return n
            last = n.log_text()
            n.stop()
        raise RuntimeError(f"standalone node did not start:\n{last}")

    def node(
        self,
        node_id: str,
        *,
        seeds: Sequence[str] = (),
        settings: Mapping[str, float | int] | None = None,
        swim: Mapping[str, Any] | None = None,
        raft: Mapping[str, Any] | None = None,
        ports: tuple[int, int] | None = None,
        extra: Sequence[str] = (),
        wait: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> NodeProc:
        """Start one node with its own TOML file (``[settings]``, ``[swim]``) and ``--seeds``
        (peer addresses); no static cluster, so with no seeds it is standalone. ``ports``
        (HTTP, peer) are used as given, else picked free (and retried on a lost race). ``env``:
        environment variables added to the process's (a test's fault hook)."""
        last = ""
        for attempt in range(START_ATTEMPTS if ports is None else 1):
            port, peer = ports if ports is not None else free_ports(2)
            n = NodeProc(node_id, port, peer, self._log(f"{node_id}-{attempt}"))
            config = self.workdir / f"{node_id}-{self._seq}.toml"
            config.write_text("\n".join(toml_tables(settings=settings, swim=swim, raft=raft)) + "\n")
            args = [
                "--id", node_id, "--port", str(port), "--peer-port", str(peer),
                "--config", str(config), "--log-level", "info", *extra,
            ]
            if seeds:
                args += ["--seeds", ",".join(seeds)]
            n.launch(args, env)
            self.started.append(n)
            if not wait or self._wait_all([n]):
                return n
            last = n.log_text()
            n.stop()
        raise RuntimeError(f"node {node_id} did not start:\n{last}")

    def _wait_all(self, nodes: list[NodeProc]) -> bool:
        deadline = time.monotonic() + START_DEADLINE
        for n in nodes:
            if not n.wait_healthy(deadline):
                if any(m.lost_race or _address_in_use(m) for m in nodes):
                    return False  # lost a port race: the caller retries with fresh ports
                raise RuntimeError(f"node {n.id} exited during start:\n{n.log_text()}")
        return True

    def stop_all(self) -> None:
        for n in self.started:
            n.stop()


def toml_tables(
    *, settings: Mapping[str, Any] | None = None, swim: Mapping[str, Any] | None = None,
    raft: Mapping[str, Any] | None = None,
) -> list[str]:
    """``[settings]``, ``[swim]`` and ``[raft]`` tables as TOML lines (empty tables are left out)."""
    lines: list[str] = []
    for name, table in (("settings", settings), ("swim", swim), ("raft", raft)):
        if table:
            lines.append(f"[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return lines


def wait_wired(cluster: Cluster, timeout: float = START_DEADLINE) -> None:
    """Wait until every node's outbound link to every peer is connected, and every node has
    synced with a member (a static member answers 503 try_again until then) and had its own
    join answered (a member may sync first by hearing another's join)."""

    def wired() -> bool:
        return all(
            all(link["state"] == "connected" for link in info["transport"]["links"].values())
            and not info.get("syncing") and info.get("joined")
            for info in (n.info() for n in cluster)
        )

    poll(wired, timeout=timeout, what="every peer link to be connected")


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    lx = Launcher(tmp_path)
    try:
        yield lx
    finally:
        lx.stop_all()


@pytest.fixture(scope="module")
def module_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    lx = Launcher(tmp_path_factory.mktemp("nodes"))
    try:
        yield lx
    finally:
        lx.stop_all()


@pytest.fixture(scope="module")
def cluster3(module_launcher: Launcher) -> Cluster:
    """A 3-node cluster (a, b, c; even split) shared by the tests of one module."""
    return module_launcher.cluster(("a", "b", "c"), settings=STEADY_SETTINGS, swim=STEADY_SWIM)


def metric(n: NodeProc, name: str) -> float:
    """The value of sample ``name`` in ``n``'s ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = n.request("GET", "/metrics")
    assert status == 200
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            if s.name == name:
                return float(s.value)
    raise AssertionError(f"{name} not in {n.id}'s /metrics")


def poll(
    fn: Callable[[], Any], *, timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Call ``fn`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}: last={last!r}")
        time.sleep(interval)


# --- request helpers shared by the real-process tests --------------------------------------


def keys_in(lo: int, hi: int, n: int, prefix: str = "k") -> list[bytes]:
    """The first ``n`` keys ``{prefix}-{i}`` whose slots fall in ``lo``..``hi``."""
    from kvcore.slots import key_slot

    out: list[bytes] = []
    i = 0
    while len(out) < n:
        k = f"{prefix}-{i}".encode()
        if lo <= key_slot(k) <= hi:
            out.append(k)
        i += 1
    return out


def eventually_ok(node: NodeProc, method: str, key: bytes, body: bytes | None = None,
                  timeout: float = 30.0) -> bytes:
    """The body of the first 2xx answer; only 503 owner_down or try_again and 504 are retried (a
    stalled process on a busy machine can be declared dead for a moment before it refutes; a
    node restarted with a data dir serves once it has synced)."""
    import json

    from realnet.client import kv_path

    deadline = time.monotonic() + timeout
    while True:
        status, _, data = node.request(method, kv_path(key), body)
        if 200 <= status < 300:
            return data
        assert status in (503, 504), (node.id, method, key, status, data)
        if status == 503:
            assert json.loads(data)["error"] in ("owner_down", "try_again"), data
        assert time.monotonic() < deadline, f"{method} {key!r} kept failing: {status} {data!r}"
        time.sleep(0.05)
