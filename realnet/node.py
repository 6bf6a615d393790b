"""``python -m realnet.node``: one storelab node as one process.

Theory of operation
-------------------
The process wires the pure :class:`kvcore.node.Node` to the real world and gets out of the way:

1. **Configure** (:func:`load_settings`): flags, then an optional TOML file, then defaults. All
   problems are collected as sentences (kvcore's :class:`~kvcore.config.ConfigError` style) and
   reported together on stderr with exit status 2, before anything is bound.
2. **Bind** (:func:`serve`): the peer port, then the client HTTP port, as plain sockets first,
   so that the node is built knowing the addresses it really listens on (``--port 0`` picks a
   free port, and that is the port gossip must advertise). A port that cannot be bound (in use,
   no permission) is exit status 2. A host name binds its first address.
3. **Run**: build the node (its gossip membership starts from the static ``[cluster]``, or joins
   through ``--seeds``, or is standalone), serve the peer transport
   (:class:`realnet.transport.PeerTransport`) and the HTTP API (:class:`realnet.api.Api`),
   ``node.start()``, open the links to the static peers, print ``ready id=... http=HOST:PORT
   peer=HOST:PORT`` on stderr, and wait for SIGTERM or SIGINT.
4. **Leave and stop**: tell the cluster we are leaving (``membership.leave()``: a Dead about
   ourselves at a new incarnation, which everyone holds as *left*, so our slots answer
   ``owner_down`` at once rather than after a failure detection), let gossip carry it for at
   most ``LEAVE_LINGER`` (0.5 s; less once the update went out its full number of times), then
   ``node.stop()`` (pending forwards are answered 500, outcome unknown), stop the HTTP server
   gracefully (in-flight responses are written), close the peer links, exit 0. A second signal
   during shutdown exits at once with status 1.

Configuration precedence, highest first: flags; the ``[node]`` table (ignored when ``--id``
names another node than its ``id``, so one file can serve all nodes); this node's entry in
``[cluster]`` (its ``addr`` gives host and port, its ``peer_addr`` the peer port); defaults
(127.0.0.1, port 7000, peer port = HTTP port + 10000, as Redis does). One host is bound for both
ports. In cluster mode the id is required (flag or ``[node] id``), unless ``--port`` names
exactly one member's ``addr`` port. A node started without ``[cluster]`` nodes and without
seeds is standalone and owns every slot; its id, unless given, is ``node-`` and 10 random hex
digits (Redis's nodes are named randomly too), kept in the data directory when there is one so
that a restart keeps it.

Membership is SWIM gossip (:mod:`kvcore.membership`, settings in :mod:`realnet.gossip`):

- ``--seeds HOST:PORT,...`` (or ``[node] seeds``) are *peer* addresses of running nodes; the node
  joins through them (retrying with a bounded backoff while none answers) and owns no slots.
- The node advertises ``advertise_host`` (default: the bind host) with its bound ports. A node
  bound to a wildcard address (0.0.0.0, ::) must be told what to advertise when it joins through
  seeds (``--advertise-host``); a static member advertises its ``[cluster]`` entry.
- ``[swim]`` picks a preset (``lan``, the default; ``wan``; ``local``) and overrides any
  :class:`~kvcore.membership.SwimConfig` field; ``--swim-preset`` overrides the preset.
- The cluster name (``[cluster] name``, or ``--cluster-name``) is the one thing a peer's Hello
  is checked against (see :mod:`realnet.transport`). A ``[cluster]`` table holding only a name
  (and the options below) names the cluster without making it static.

Leaving through the API: ``POST /cluster/leave`` (:mod:`realnet.api`) answers 202 and then
stops the process exactly as SIGTERM does (step 4), with exit status 0.

**Automatic rebalancing** (``[cluster] auto_rebalance = true`` or ``--auto-rebalance``;
:class:`AutoRebalancer`), the same option on every node:

- When a member *joins* (or comes back after having left) or *leaves gracefully*, the node waits
  ``auto_rebalance_settle`` seconds (default 1; every further event restarts the wait), then, if
  it is the alive member with the lowest id in its view, runs :func:`realnet.admin.auto_rebalance`:
  the rebalance plan with empty nodes taking part, carried out over the HTTP API like
  ``storelab cluster rebalance --use-empty``. Crashes (dead members) are ignored: a dead node's
  keys cannot move. The run happens in a daemon thread (the admin library is blocking HTTP,
  partly to this very node), never on the event loop, and one at a time: an event during a run
  schedules one more run after it. A cluster that is not quiet (open migration, nodes that
  disagree, a member not alive) is tried again after the settle time, up to
  ``AUTO_REBALANCE_RETRIES`` times.
- A node with the option that is asked to leave (SIGTERM, SIGINT, ``/cluster/leave``) and owns
  slots first moves them to the other alive members (:meth:`realnet.admin.Admin.drain`), then
  leaves: a graceful leave loses no key. A run of the rebalancer in progress stops after its
  current move first. If the cluster is not quiet within ``DRAIN_STABLE_TIMEOUT`` (10 s; a dead
  member, say) or the drain fails, the node logs it and leaves anyway, with its keys. A second
  signal still exits at once.

TOML layout::

    [node]            # this process's identity (flags override)
    id = "a"
    host = "127.0.0.1"
    port = 7001
    peer_port = 17001
    data_dir = "/var/lib/storelab/a"   # optional
    seeds = ["127.0.0.1:17002"]        # optional: peer addresses to join through
    advertise_host = "10.0.0.5"        # optional
    [settings]        # optional: kvcore.config.NodeConfig fields
    forward_timeout = 1.0
    [swim]            # optional: a preset and kvcore.membership.SwimConfig fields
    preset = "local"
    probe_interval = 0.5
    [cluster]         # optional: kvcore.config.ClusterConfig.from_dict (plus the keys below)
    epoch = 1
    name = "lab"      # optional; peers with a different non-empty name are refused
    auto_rebalance = true          # optional (default false), like --auto-rebalance
    auto_rebalance_settle = 1.0    # optional: seconds to wait after a join or leave
    [[cluster.nodes]]
    id = "a"
    addr = "127.0.0.1:7001"
    peer_addr = "127.0.0.1:17001"
    slots = "0-8191"
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvcore.config import PEER_PORT_OFFSET, ClusterConfig, ConfigError, NodeConfig, parse_addr
from kvcore.membership import ALIVE, LEFT, Member, SwimConfig
from kvcore.node import Node
from kvcore.runtime import Storage
from realnet import admin
from realnet.api import Api, http_limits
from realnet.gossip import PRESETS, RttMeter, follow_membership, observe_probes, swim_from_dict
from realnet.http import PARSERS, start_http_server, stop_http_server
from realnet.runtime import AsyncioRuntime, open_storage
from realnet.transport import PeerTransport, TransportConfig

log = logging.getLogger("realnet.node")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7000
EXIT_OK = 0
EXIT_CONFIG = 2
LOG_LEVELS = ("debug", "info", "warning", "error")
_NODE_KEYS = ("id", "host", "port", "peer_port", "data_dir", "seeds", "advertise_host")
_TOP_TABLES = ("node", "settings", "swim", "cluster")
_WILDCARDS = ("0.0.0.0", "::", "")
#: how long in-flight HTTP requests get to finish on shutdown
SHUTDOWN_GRACE = 2.0
#: longest wait for a graceful leave to be gossiped before the node stops
LEAVE_LINGER = 0.5
#: default seconds between a join or leave and the automatic rebalance it triggers
AUTO_REBALANCE_SETTLE = 1.0
#: how many times an automatic rebalance is tried again while the cluster is not quiet
AUTO_REBALANCE_RETRIES = 20
#: how long a node leaving with auto_rebalance waits for a quiet cluster before it drains
DRAIN_STABLE_TIMEOUT = 10.0
_CLUSTER_OPTIONS = ("name", "auto_rebalance", "auto_rebalance_settle")


@dataclass(frozen=True)
class Settings:
    """Everything a node process needs, resolved and validated."""

    node_id: str
    host: str
    port: int
    peer_port: int
    config: NodeConfig
    cluster: ClusterConfig | None
    cluster_name: str
    data_dir: str | None
    #: the id was made up here (standalone without --id); persisted in the data dir if any
    generated_id: bool = False
    #: peer addresses (HOST:PORT) of nodes to join through
    seeds: tuple[str, ...] = ()
    #: host advertised to peers (default: the bind host)
    advertise_host: str | None = None
    swim: SwimConfig = field(default_factory=SwimConfig.lan)
    swim_preset: str = "lan"
    #: rebalance automatically on joins and graceful leaves; drain before leaving
    auto_rebalance: bool = False
    auto_rebalance_settle: float = AUTO_REBALANCE_SETTLE
    #: the HTTP request parser (realnet.httpparse.PARSERS)
    http_parser: str = "httptools"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m realnet.node",
        description="Run one storelab node: a client HTTP port and a peer TCP port.",
    )
    p.add_argument("--id", help="this node's id (required in a cluster unless --port tells it)")
    p.add_argument("--host", help=f"address to bind both ports on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, help=f"client HTTP port (default {DEFAULT_PORT})")
    p.add_argument(
        "--peer-port", type=int, help=f"peer TCP port (default: HTTP port + {PEER_PORT_OFFSET})"
    )
    p.add_argument(
        "--config", metavar="FILE", help="TOML file with [node], [settings], [swim], [cluster]"
    )
    p.add_argument("--data-dir", metavar="DIR", help="durable state directory (default: memory)")
    p.add_argument(
        "--seeds",
        action="append",
        metavar="HOST:PORT,...",
        help="peer addresses of running nodes to join through (repeatable, comma-separated)",
    )
    p.add_argument(
        "--advertise-host", metavar="HOST", help="host that peers reach this node at (default: --host)"
    )
    p.add_argument(
        "--swim-preset",
        choices=sorted(PRESETS),
        help="SWIM timing preset (default: [swim] preset, else lan)",
    )
    p.add_argument("--cluster-name", metavar="NAME", help="refuse peers of another named cluster")
    p.add_argument(
        "--auto-rebalance",
        action="store_true",
        default=None,
        help="rebalance slots automatically when a node joins or leaves gracefully, and move this "
        "node's slots away before it leaves (default: [cluster] auto_rebalance, else off)",
    )
    p.add_argument(
        "--http-parser", choices=list(PARSERS), default="httptools", help="default: httptools"
    )
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="default: info")
    return p


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError([f"Cannot read config file {path!r}: {e.strerror or e}."]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"Config file {path!r} is not valid TOML: {e}."]) from None


def _table(doc: Mapping[str, Any], name: str, problems: list[str]) -> Mapping[str, Any]:
    t = doc.get(name, {})
    if not isinstance(t, Mapping):
        problems.append(f"[{name}] must be a table.")
        return {}
    return t


def _port(value: Any, what: str, problems: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        problems.append(f"The {what} must be a port number 0-65535, not {value!r}.")
        return None
    return value


def load_settings(args: argparse.Namespace) -> Settings:
    """Resolve flags, the TOML file and defaults; raises ConfigError listing every problem."""
    doc: dict[str, Any] = _read_toml(args.config) if args.config else {}
    problems: list[str] = []
    for k in sorted(set(doc) - set(_TOP_TABLES)):
        problems.append(
            f"Unknown top-level key {k!r} in the config file; known: {', '.join(_TOP_TABLES)}."
        )
    node_t = _table(doc, "node", problems)
    for k in sorted(set(node_t) - set(_NODE_KEYS)):
        problems.append(f"Unknown key {k!r} in [node]; known: {', '.join(_NODE_KEYS)}.")
    settings_t = _table(doc, "settings", problems)
    swim_t = _table(doc, "swim", problems)
    cluster_t = _table(doc, "cluster", problems) if "cluster" in doc else None

    config = NodeConfig()
    try:
        config = NodeConfig.from_dict(settings_t)
    except ConfigError as e:
        problems.extend(e.problems)
        removed = sorted(k for k in ("ping_interval", "down_after") if k in settings_t)
        if removed:
            problems.append(
                f"{' and '.join(removed)} no longer exist{'s' if len(removed) == 1 else ''}: "
                "failure detection is SWIM gossip now, tuned in [swim] (probe_interval, "
                "probe_timeout, suspicion_mult, ...)."
            )

    swim_preset, swim = "lan", SwimConfig.lan()
    try:
        swim_preset, swim = swim_from_dict(swim_t, args.swim_preset)
    except ConfigError as e:
        problems.extend(e.problems)

    cluster: ClusterConfig | None = None
    cluster_name = ""
    auto_rebalance, auto_settle = False, AUTO_REBALANCE_SETTLE
    if cluster_t is not None:
        name = cluster_t.get("name", "")
        if not isinstance(name, str):
            problems.append(f"The cluster name must be a string, not {name!r}.")
        else:
            cluster_name = name
        auto = cluster_t.get("auto_rebalance", False)
        if not isinstance(auto, bool):
            problems.append(f"auto_rebalance must be true or false, not {auto!r}.")
        else:
            auto_rebalance = auto
        settle = cluster_t.get("auto_rebalance_settle", AUTO_REBALANCE_SETTLE)
        if isinstance(settle, bool) or not isinstance(settle, (int, float)) or not settle >= 0:
            problems.append(f"auto_rebalance_settle must be a number of seconds >= 0, not {settle!r}.")
        else:
            auto_settle = float(settle)
        static = {k: v for k, v in cluster_t.items() if k not in _CLUSTER_OPTIONS}
        if static:  # a [cluster] with only a name names the cluster without making it static
            try:
                cluster = ClusterConfig.from_dict(static)
            except ConfigError as e:
                problems.extend(e.problems)
    if args.cluster_name is not None:
        cluster_name = args.cluster_name
    if args.auto_rebalance is not None:
        auto_rebalance = args.auto_rebalance

    node_id = args.id if args.id is not None else node_t.get("id")
    if node_id is not None and (not isinstance(node_id, str) or not node_id):
        problems.append(f"The node id must be a non-empty string, not {node_id!r}.")
        node_id = None
    if args.id is not None and node_t.get("id") not in (None, args.id):
        # One file shared by every node, started with --id: its [node] table describes another
        # node, so none of its addresses apply to this one.
        log.warning("ignoring [node] (it describes node %r, this is %r)", node_t["id"], args.id)
        node_t = {}

    def pick(flag: Any, key: str) -> Any:
        return flag if flag is not None else node_t.get(key)

    port = _port(pick(args.port, "port"), "HTTP port", problems)
    peer_port = _port(pick(args.peer_port, "peer_port"), "peer port", problems)
    host = pick(args.host, "host")
    if host is not None and (not isinstance(host, str) or not host):
        problems.append(f"The host must be a non-empty string, not {host!r}.")
        host = None
    data_dir = pick(args.data_dir, "data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        problems.append(f"data_dir must be a string, not {data_dir!r}.")
        data_dir = None
    seeds = _seeds(args.seeds if args.seeds is not None else node_t.get("seeds"), problems)
    advertise_host = pick(args.advertise_host, "advertise_host")
    if advertise_host is not None and (not isinstance(advertise_host, str) or not advertise_host):
        problems.append(f"advertise_host must be a non-empty string, not {advertise_host!r}.")
        advertise_host = None

    generated = False
    if cluster is not None:
        if node_id is None:
            matches = []
            if port:
                for n in cluster.nodes:
                    try:
                        if parse_addr(n.addr)[1] == port:
                            matches.append(n.id)
                    except ValueError:
                        pass
            if len(matches) == 1:
                node_id = matches[0]
            else:
                problems.append(
                    "This node's id is not given: use --id or [node] id "
                    f"(cluster members: {', '.join(cluster.ids())})."
                )
        if node_id is not None:
            try:
                cluster.validate(node_id)
            except ConfigError as e:
                problems.extend(e.problems)
        if problems:
            raise ConfigError(problems)
        assert node_id is not None
        me = cluster.node(node_id)
        ahost, aport = parse_addr(me.addr)
        _, pport = parse_addr(me.peer_addr)
        host = host or ahost
        if port is None:
            port = aport
        elif port != aport:
            log.warning("HTTP port %d differs from this node's addr %s in [cluster]", port, me.addr)
        if peer_port is None:
            # The member's own peer_addr, unless the HTTP port was moved away from its addr.
            peer_port = pport if port == aport else port + PEER_PORT_OFFSET
    if problems:
        raise ConfigError(problems)
    host = host or DEFAULT_HOST
    port = DEFAULT_PORT if port is None else port
    if peer_port is None:
        peer_port = port + PEER_PORT_OFFSET if port else 0
        if peer_port > 65535:
            too_big = (
                f"The default peer port {peer_port} (HTTP port + {PEER_PORT_OFFSET}) is "
                "over 65535; give --peer-port."
            )
            raise ConfigError([too_big])
    if port and peer_port and port == peer_port:
        raise ConfigError([f"The HTTP port and the peer port are both {port}."])
    if seeds and advertise_host is None and cluster is None and host.strip("[]") in _WILDCARDS:
        raise ConfigError([
            f"This node binds the wildcard address {host} and joins through seeds, so it must be "
            "told which address its peers can reach it at: give --advertise-host."
        ])
    if node_id is None:
        node_id = "node-" + secrets.token_hex(5)
        generated = True
    return Settings(
        node_id=node_id,
        host=host,
        port=port,
        peer_port=peer_port,
        config=config,
        cluster=cluster,
        cluster_name=cluster_name,
        data_dir=data_dir,
        generated_id=generated,
        seeds=seeds,
        advertise_host=advertise_host,
        swim=swim,
        swim_preset=swim_preset,
        auto_rebalance=auto_rebalance,
        auto_rebalance_settle=auto_settle,
    )


def _seeds(value: Any, problems: list[str]) -> tuple[str, ...]:
    """Seeds from flags (a list of comma-separated strings) or TOML (a list, or one string)."""
    if value is None:
        return ()
    items: list[Any] = [value] if isinstance(value, str) else value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            problems.append(f"Seeds must be peer addresses (HOST:PORT strings), not {item!r}.")
            continue
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                parse_addr(part)
            except ValueError as e:
                problems.append(f"Seed {part!r}: {e}")
                continue
            if part not in out:
                out.append(part)
    return tuple(out)


def _open_storage(settings: Settings) -> tuple[Storage, str]:
    """The node's storage and its final id (a standalone node's id is kept in its data dir)."""
    node_id = settings.node_id
    try:
        storage = open_storage(settings.data_dir)
        if settings.generated_id:
            stored = storage.get("node_id")
            if stored:
                node_id = stored.decode("utf-8", "replace")
            elif settings.data_dir:
                storage.put("node_id", node_id.encode())
    except OSError as e:
        raise ConfigError(
            [f"Cannot use data directory {settings.data_dir!r}: {e.strerror or e}."]
        ) from None
    return storage, node_id


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (the first address the host resolves to).

    SO_REUSEADDR as asyncio sets it, so a restarted node gets its ports back at once even with
    connections of its previous life in TIME_WAIT. Raises OSError.
    """
    infos = socket.getaddrinfo(
        host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
    )
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"{host} resolves to no address")
    family, type_, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_error(host: str, port: int, what: str, e: OSError) -> None:
    reason = os.strerror(e.errno) if e.errno else (e.strerror or str(e))
    print(
        f"storelab node: cannot listen on {_fmt(host, port)} ({what} port): {reason.lower()}.",
        file=sys.stderr,
        flush=True,
    )


async def leave_gracefully(node: Node, linger: float = LEAVE_LINGER) -> None:
    """Announce that we leave, then give gossip up to ``linger`` seconds to carry it.

    The wait ends early once the broadcast queue is empty (every update, our Dead included, went
    out its full number of times). Nobody to tell (standalone): no wait.
    """
    ms = node.membership
    if not node.running or not ms.live_members():
        return
    ms.leave()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + linger
    while len(ms.broadcasts) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0)  # let the transport flush what the last round wrote


def run_in_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any], name: str) -> asyncio.Future[Any]:
    """Run blocking ``fn`` in a daemon thread (it never holds up the process's exit); its result
    or exception resolves the returned future on ``loop``."""
    fut: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def run() -> None:
        try:
            result: tuple[bool, Any] = (True, fn())
        except BaseException as e:  # handed to the loop, which logs it
            result = (False, e)
        try:
            loop.call_soon_threadsafe(settle, *result)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut


class AutoRebalancer:
    """Rebalances the cluster when members join or leave gracefully (module docstring)."""

    def __init__(self, node: Node, addr: str, loop: asyncio.AbstractEventLoop,
                 settle: float = AUTO_REBALANCE_SETTLE) -> None:
        self.node = node
        self.addr = addr
        self.loop = loop
        self.settle = settle
        #: one orchestration at a time in this process (a rebalance run, the drain before leaving)
        self.lock = threading.Lock()
        #: set when the node is leaving: a run stops after its current move
        self.cancel = threading.Event()
        self.runs = 0
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._again = False
        self._retries = 0
        self._last: dict[str, str] = {}
        node.membership.listeners.append(self.on_event)

    def on_event(self, event: str, node_id: str, m: Member) -> None:
        if node_id == self.node.id:
            return
        before = self._last.get(node_id)
        self._last[node_id] = m.state
        if self.cancel.is_set() or self.node.membership.leaving:
            return
        joined = (event == "join" and m.state == ALIVE) or (event == ALIVE and before == LEFT)
        if joined or event == LEFT:  # a crash ("dead") is not a reason: its keys cannot move
            log.info("member %s %s; rebalancing in %gs if this node leads", node_id,
                     "joined" if joined else "left", self.settle)
            self._retries = 0
            self.schedule()

    def schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.settle, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.cancel.is_set():
            return
        if self._running:
            self._again = True
            return
        ms = self.node.membership
        alive = sorted(m.node for m in ms.members.values() if m.state == ALIVE)
        if not alive or alive[0] != self.node.id:
            return  # the alive member with the lowest id does it
        self._running = True
        run_in_thread(self.loop, self._run, "auto-rebalance").add_done_callback(self._done)

    def _run(self) -> str:
        with self.lock:
            if self.cancel.is_set():
                return "not rebalancing: this node is leaving"
            return admin.auto_rebalance(self.addr, self.node.id, self.cancel, log=log.info)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._running = False
        self.runs += 1
        exc = fut.exception()
        if isinstance(exc, admin.Refused) and self._retries < AUTO_REBALANCE_RETRIES:
            self._retries += 1
            log.info("automatic rebalance postponed (%s: %s); trying again in %gs", exc.message,
                     "; ".join(exc.problems[:3]), self.settle)
            self.schedule()
        elif exc is not None:
            log.warning("automatic rebalance failed: %s", getattr(exc, "message", None) or repr(exc))
        else:
            log.info("automatic rebalance: %s", fut.result())
        if self._again and not self.cancel.is_set():
            self._again = False
            self.schedule()

    async def drain(self) -> None:
        """Before leaving: stop rebalancing, and move this node's slots to the others."""
        self.cancel.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        node = self.node
        owned = node.slot_map.slot_counts().get(node.id, 0)
        if not owned or not node.membership.live_members():
            return
        log.info("moving this node's %d slots to the other members before leaving", owned)

        def run() -> list[Any]:
            with self.lock, admin.Admin(log=log.info) as a:
                return a.drain(self.addr, node.id, stable_timeout=DRAIN_STABLE_TIMEOUT)

        try:
            moves = await run_in_thread(self.loop, run, "drain")
        except Exception as e:
            log.error("could not move this node's slots away (%s); leaving anyway, with its keys",
                      getattr(e, "message", None) or repr(e))
            return
        log.info("moved %d slots away in %d moves", sum(m.count for m in moves), len(moves))


async def serve(
    settings: Settings, storage: Storage | None = None, stop: asyncio.Event | None = None
) -> int:
    """Run a node until ``stop`` is set (or SIGTERM/SIGINT arrives). Returns the exit status.

    ``storage`` defaults to :func:`realnet.runtime.open_storage` of the settings' data dir.
    """
    loop = asyncio.get_running_loop()
    node_id = settings.node_id
    if storage is None:
        try:
            storage = open_storage(settings.data_dir)
        except OSError as e:
            _print_problems([f"Cannot use data directory {settings.data_dir!r}: {e.strerror or e}."])
            return EXIT_CONFIG

    # Bind first: the node must advertise the ports it really listens on.
    try:
        peer_sock = _bind(settings.host, settings.peer_port)
    except OSError as e:
        _bind_error(settings.host, settings.peer_port, "peer", e)
        return EXIT_CONFIG
    try:
        http_sock = _bind(settings.host, settings.port)
    except OSError as e:
        peer_sock.close()
        _bind_error(settings.host, settings.port, "HTTP", e)
        return EXIT_CONFIG
    peer_port = peer_sock.getsockname()[1]
    http_port = http_sock.getsockname()[1]
    adv_host = settings.advertise_host or settings.host
    if adv_host.strip("[]") in _WILDCARDS and settings.cluster is None:
        log.warning(
            "advertising the wildcard address %s to peers, which cannot reach it there; "
            "give --advertise-host", adv_host,
        )
    addr, peer_addr = _fmt(adv_host, http_port), _fmt(adv_host, peer_port)

    runtime = AsyncioRuntime(node_id, loop=loop, storage=storage)
    in_static = settings.cluster is not None
    node = Node(
        runtime,
        settings.config,
        settings.cluster,
        swim=settings.swim,
        seeds=["@" + a for a in settings.seeds],
        # a static member advertises its [cluster] entry (what every other member was told)
        addr=None if in_static else addr,
        peer_addr=None if in_static else peer_addr,
    )
    peers: dict[str, tuple[str, int]] = {}
    if settings.cluster is not None:
        for n in settings.cluster.nodes:
            if n.id != node_id:
                peers[n.id] = parse_addr(n.peer_addr)
    meter = RttMeter(loop.time)
    transport = PeerTransport(
        node_id=node_id,
        peers=peers,
        resolve=node.membership.address_of,
        on_message=node.on_message,
        node_stats=node.stats,
        rng=runtime.random,
        config=TransportConfig(max_frame_bytes=settings.config.max_frame_bytes),
        cluster_name=settings.cluster_name,
        loop=loop,
    )
    runtime.sink = transport
    observe_probes(transport, meter)

    def forget(member: str) -> None:
        transport.forget(member)
        meter.forget(member)

    follow_membership(node.membership, forget)

    stop = stop if stop is not None else asyncio.Event()
    holder: list[asyncio.Server] = []
    api = Api(
        node,
        transport,
        loop=loop,
        http_stats=lambda: getattr(holder[0], "server_stats", None) if holder else None,
        rtt=meter,
        swim_preset=settings.swim_preset,
        on_leave=stop.set,
        drains_on_leave=settings.auto_rebalance,
    )
    limits = http_limits(settings.config.max_key_bytes, settings.config.max_value_bytes)
    try:
        await transport.listen(sock=peer_sock)
        http_server = await start_http_server(
            api, None, 0, limits, sock=http_sock, parser=settings.http_parser
        )
    except OSError as e:  # pragma: no cover - the sockets are bound already
        _bind_error(settings.host, settings.port, "HTTP", e)
        http_sock.close()
        await transport.close()
        return EXIT_CONFIG
    holder.append(http_server)
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            print(f"storelab node {node_id}: {signame} again; exiting now.", file=sys.stderr, flush=True)
            os._exit(1)
        log.info("%s received; leaving the cluster and stopping", signame)
        stop.set()

    installed: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests drive stop instead)

    node.start()
    transport.connect_all()
    # listening from now on: the static members added at construction are not joins
    auto = AutoRebalancer(node, addr, loop, settings.auto_rebalance_settle) if settings.auto_rebalance else None
    seeds = f" seeds={','.join(settings.seeds)}" if settings.seeds else ""
    print(
        f"ready id={node_id} http={_fmt(settings.host, http_port)} "
        f"peer={_fmt(settings.host, peer_port)}{seeds}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
        if auto is not None:
            await auto.drain()
        try:
            await leave_gracefully(node)
        except Exception:  # a failed goodbye must not stop the shutdown
            log.exception("leaving the cluster failed; stopping anyway")
    finally:
        node.stop()
        await stop_http_server(http_server, grace=SHUTDOWN_GRACE)
        await transport.close()
        for signum in installed:
            loop.remove_signal_handler(signum)
    log.info("stopped")
    return EXIT_OK


def _print_problems(problems: Sequence[str]) -> None:
    for p in problems:
        print(f"storelab node: {p}", file=sys.stderr)
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args)
        storage, node_id = _open_storage(settings)
    except ConfigError as e:
        _print_problems(e.problems)
        return EXIT_CONFIG
    settings = dataclasses.replace(settings, node_id=node_id, http_parser=args.http_parser)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format=f"%(asctime)s %(levelname)s [{node_id}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(serve(settings, storage))


if __name__ == "__main__":
    sys.exit(main())
