"""``python -m realnet.node``: one storelab node as one process.

Theory of operation
-------------------
The process wires the pure :class:`kvcore.node.Node` to the real world and gets out of the way:

1. **Configure** (:func:`load_settings`): flags, then an optional TOML file, then defaults. All
   problems are collected as sentences (kvcore's :class:`~kvcore.config.ConfigError` style) and
   reported together on stderr with exit status 2, before anything is bound.
2. **Bind** (:func:`serve`): the peer port (:class:`realnet.transport.PeerTransport`) and the
   client HTTP port (:func:`realnet.http.start_http_server` with :class:`realnet.api.Api`). A
   port that cannot be bound (in use, no permission) is also exit status 2.
3. **Run**: ``node.start()`` (the health check's ping timer), open the outbound links to every
   peer, print ``ready id=... http=HOST:PORT peer=HOST:PORT`` on stderr, and wait for SIGTERM or
   SIGINT.
4. **Stop**: ``node.stop()`` (pending forwards are answered 500, outcome unknown), stop the HTTP
   server gracefully (in-flight responses are written), close the peer links, exit 0. A second
   signal during shutdown exits at once with status 1.

Configuration precedence, highest first: flags; the ``[node]`` table (ignored when ``--id``
names another node than its ``id``, so one file can serve all nodes); this node's entry in
``[cluster]`` (its ``addr`` gives host and port, its ``peer_addr`` the peer port); defaults
(127.0.0.1, port 7000, peer port = HTTP port + 10000, as Redis does). One host is bound for both
ports. In cluster mode the id is required (flag or ``[node] id``), unless ``--port`` names
exactly one member's ``addr`` port. A node started without ``[cluster]`` is standalone and owns
every slot; its id, unless given, is ``node-`` and 10 random hex digits (Redis's nodes are named
randomly too), kept in the data directory when there is one so that a restart keeps it.

TOML layout::

    [node]            # this process's identity (flags override)
    id = "a"
    host = "127.0.0.1"
    port = 7001
    peer_port = 17001
    data_dir = "/var/lib/storelab/a"   # optional
    [settings]        # optional: kvcore.config.NodeConfig fields
    ping_interval = 0.5
    [cluster]         # optional: kvcore.config.ClusterConfig.from_dict (plus an optional name)
    epoch = 1
    name = "lab"      # optional; peers with a different non-empty name are refused
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
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvcore.config import PEER_PORT_OFFSET, ClusterConfig, ConfigError, NodeConfig, parse_addr
from kvcore.node import Node
from kvcore.runtime import Storage
from realnet.api import Api, Member, http_limits
from realnet.http import start_http_server, stop_http_server
from realnet.runtime import AsyncioRuntime, open_storage
from realnet.transport import PeerTransport, TransportConfig

log = logging.getLogger("realnet.node")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7000
EXIT_OK = 0
EXIT_CONFIG = 2
LOG_LEVELS = ("debug", "info", "warning", "error")
_NODE_KEYS = ("id", "host", "port", "peer_port", "data_dir")
_TOP_TABLES = ("node", "settings", "cluster")
#: how long in-flight HTTP requests get to finish on shutdown
SHUTDOWN_GRACE = 2.0


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
    p.add_argument("--config", metavar="FILE", help="TOML file with [node], [settings], [cluster]")
    p.add_argument("--data-dir", metavar="DIR", help="durable state directory (default: memory)")
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
        problems.append(f"Unknown top-level key {k!r} in the config file; known: node, settings, cluster.")
    node_t = _table(doc, "node", problems)
    for k in sorted(set(node_t) - set(_NODE_KEYS)):
        problems.append(f"Unknown key {k!r} in [node]; known: {', '.join(_NODE_KEYS)}.")
    settings_t = _table(doc, "settings", problems)
    cluster_t = _table(doc, "cluster", problems) if "cluster" in doc else None

    config = NodeConfig()
    try:
        config = NodeConfig.from_dict(settings_t)
    except ConfigError as e:
        problems.extend(e.problems)

    cluster: ClusterConfig | None = None
    cluster_name = ""
    if cluster_t is not None:
        name = cluster_t.get("name", "")
        if not isinstance(name, str):
            problems.append(f"The cluster name must be a string, not {name!r}.")
        else:
            cluster_name = name
        try:
            cluster = ClusterConfig.from_dict({k: v for k, v in cluster_t.items() if k != "name"})
        except ConfigError as e:
            problems.extend(e.problems)

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
    )


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
    runtime = AsyncioRuntime(node_id, loop=loop, storage=storage)
    node = Node(runtime, settings.config, settings.cluster)
    peers: dict[str, tuple[str, int]] = {}
    members: dict[str, Member] = {}
    if settings.cluster is not None:
        for n in settings.cluster.nodes:
            members[n.id] = Member(n.id, n.addr, n.peer_addr)
            if n.id != node_id:
                peers[n.id] = parse_addr(n.peer_addr)
    transport = PeerTransport(
        node_id=node_id,
        peers=peers,
        on_message=node.on_message,
        node_stats=node.stats,
        rng=runtime.random,
        config=TransportConfig(max_frame_bytes=settings.config.max_frame_bytes),
        cluster_name=settings.cluster_name,
        loop=loop,
    )
    runtime.sink = transport

    http_server: asyncio.Server | None = None
    try:
        _, peer_port = await transport.listen(settings.host, settings.peer_port)
        limits = http_limits(settings.config.max_key_bytes, settings.config.max_value_bytes)
        holder: list[asyncio.Server] = []
        api = Api(
            node,
            transport,
            members,
            loop=loop,
            http_stats=lambda: getattr(holder[0], "server_stats", None) if holder else None,
        )
        http_server = await start_http_server(api, settings.host, settings.port, limits)
        holder.append(http_server)
    except OSError as e:
        what = "peer" if transport.server is None else "HTTP"
        port = settings.peer_port if transport.server is None else settings.port
        print(
            f"storelab node: cannot listen on {_fmt(settings.host, port)} ({what} port): "
            f"{(os.strerror(e.errno) if e.errno else str(e)).lower()}.",
            file=sys.stderr,
            flush=True,
        )
        await transport.close()
        return EXIT_CONFIG
    http_port = http_server.sockets[0].getsockname()[1]
    if settings.cluster is None:
        members[node_id] = Member(
            node_id, _fmt(settings.host, http_port), _fmt(settings.host, peer_port)
        )
        api.members = dict(sorted(members.items()))

    stop = stop if stop is not None else asyncio.Event()
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            print(f"storelab node {node_id}: {signame} again; exiting now.", file=sys.stderr, flush=True)
            os._exit(1)
        log.info("%s received; stopping", signame)
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
    print(
        f"ready id={node_id} http={_fmt(settings.host, http_port)} "
        f"peer={_fmt(settings.host, peer_port)}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
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
    settings = dataclasses.replace(settings, node_id=node_id)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format=f"%(asctime)s %(levelname)s [{node_id}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(serve(settings, storage))


if __name__ == "__main__":
    sys.exit(main())
