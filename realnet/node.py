"""``python -m realnet.node``: one storelab node as one process.

Theory of operation
-------------------
The process wires the pure :class:`kvcore.node.Node` to the real world and gets out of the way:

1. **Configure** (:func:`realnet.settings.load_settings`): flags (:func:`build_parser`), then an
   optional TOML file, then defaults. All problems are collected as sentences
   (:class:`~kvcore.tables.ConfigError`) and reported together on stderr with exit status 2,
   before anything is bound. The precedence rules and the file's layout are in
   :mod:`realnet.settings`.
2. **Bind** (:func:`bind`): the peer port, then the client HTTP port, as plain sockets first,
   so that the node is built knowing the addresses it really listens on (``--port 0`` picks a
   free port, and that is the port gossip must advertise). A port that cannot be bound (in use,
   no permission) is exit status 2. A host name binds its first address.
3. **Build** (:func:`build`): the runtime, the node (its gossip membership starts from the static
   ``[cluster]``, or joins through ``--seeds``, or is standalone), the peer transport
   (:class:`realnet.transport.PeerTransport`) with its links following membership, and the HTTP
   API (:class:`realnet.api.Api`). Nothing runs yet. A replicated group the node remembers is
   opened here: a Raft log that is damaged, missing or cannot be opened (a file where ``raft/``
   belongs, a directory where the log belongs) stops the start with a sentence, exit status 2
   (:mod:`realnet.raftopen`).
4. **Run** (:func:`run`): serve the peer transport and the HTTP API on the bound sockets,
   ``node.start()``, open the links to the static peers, start the automatic rebalancer if asked
   (:mod:`realnet.autorebalance`), print ``ready id=... http=HOST:PORT peer=HOST:PORT`` on
   stderr, and wait for SIGTERM or SIGINT (stop) or ``POST /cluster/leave`` (leave, then stop;
   it answers 202 first). Exit status 0 either way. With a cluster secret
   (``--secret-file``, read before binding: an unusable file is exit status 2), SIGHUP reads it
   again (key rotation, :mod:`realnet.busauth`); without one, the node says its bus is open.
   A failed write or fsync of the storage log or of the Raft log stops the node (CRITICAL, the
   reason; exit status 1), answering none of the writes it could not make durable; a restart
   recovers from what is on disk.
5. **Stop** (SIGTERM, SIGINT): stopping a process does not change the cluster, as a Redis
   Cluster node that is shut down stays in ``nodes.conf`` of the others. The node tells nobody:
   its peers hold it suspect, then dead (its slots answer ``owner_down``), and the same member
   comes back with its slots when it restarts: its data directory keeps its members and their
   peer addresses, its claim and epochs, its incarnation and the cluster name
   (:mod:`kvcore.node.restore`), so it rejoins without ``--seeds``. ``node.stop()`` (pending
   forwards are answered 500, outcome unknown), stop the HTTP server gracefully (in-flight
   responses are written), close the peer links, exit 0. A second signal during shutdown exits
   at once with status 1.
6. **Leave** (``POST /cluster/leave``, which ``storelab cluster remove-node`` sends once the
   node's slots moved away): with automatic rebalancing, move this node's slots away first
   (:meth:`~realnet.autorebalance.AutoRebalancer.drain`); tell the cluster we are leaving
   (``membership.leave()``: a Dead about ourselves at a new incarnation, which everyone holds as
   *left*, so our slots answer ``owner_down`` at once rather than after a failure detection; it
   also forgets the members it kept, so a restart does not rejoin), let gossip carry it for at
   most ``LEAVE_LINGER`` (0.5 s; less once the update went out its full number of times), then
   stop as above.

A static ``[cluster]`` member does not serve client requests until it has exchanged full state
with another member (503 ``try_again`` until then; ``/cluster/info`` says ``"syncing"``): it
cannot tell a first start from a restart that lost its data, and its configured map may be
stale (slots moved since). A node restarted with its data directory waits the same way.

:func:`serve` is steps 2 to 6 for a resolved :class:`~realnet.settings.Settings`; :func:`main`
is the command. A new flag goes into :func:`build_parser`, then into
:class:`~realnet.settings.Settings` and :func:`realnet.settings.merge`.

Membership is SWIM gossip (:mod:`kvcore.membership`; the glue is :mod:`realnet.gossip`). The node
advertises ``advertise_host`` (default: the bind host) with its bound ports; a static member
advertises its ``[cluster]`` entry. The cluster name is the one thing a peer's Hello is checked
against (see :mod:`realnet.transport`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from kvcore.config import PEER_PORT_OFFSET, ConfigError, parse_addr
from kvcore.membership import INCARNATION_KEY, LEFT_KEY, MEMBER_PREFIX
from kvcore.node import GroupUnusable, Node
from kvcore.node.node import GROUP_KEY
from kvcore.runtime import Storage
from kvwire.auth import Keyring, KeyringError, read_keyring
from realnet.api import Api, http_limits
from realnet.autorebalance import (
    AUTO_REBALANCE_RETRIES,
    DRAIN_STABLE_TIMEOUT,
    AutoRebalancer,
    run_in_thread,
)
from realnet.busauth import install_reload, reload_keyring, say_bus
from realnet.gossip import RttMeter, follow_membership, observe_probes
from realnet.http import (
    PARSERS,
    batch_answerer,
    default_max_connections,
    rate_limited_exception_handler,
    server_stats,
    start_http_server,
    stop_http_server,
)
from realnet.httpparse_rules import HttpLimits
from realnet.kvlog import StorageLayoutConflict, StorageLogCorrupt
from realnet.raftlog import RaftLogCorrupt, RaftLogUnusable, discard_staged, group_logs
from realnet.raftopen import RAFT_DIR, RaftOpener
from realnet.runtime import EVENT_LOOPS, AsyncioRuntime, event_loop_name, loop_factory, open_storage
from realnet.security import HostCheck, secret_file_warnings
from realnet.settings import (
    AUTO_REBALANCE_SETTLE,
    DEFAULT_HOST,
    DEFAULT_PORT,
    PRESETS,
    WILDCARDS,
    Settings,
    load_settings,
)
from realnet.transport import PeerTransport, TransportConfig

log = logging.getLogger("realnet.node")

EXIT_OK = 0
#: the storage failed (a write or fsync of the data directory): the node stopped
EXIT_STORAGE = 1
EXIT_CONFIG = 2
LOG_LEVELS = ("debug", "info", "warning", "error")
#: how long in-flight HTTP requests get to finish on shutdown
SHUTDOWN_GRACE = 2.0
#: longest wait for a graceful leave to be gossiped before the node stops
LEAVE_LINGER = 0.5


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
        "--secret-file",
        metavar="FILE",
        help="the cluster secret: every peer connection is authenticated with its keys (one per "
        "line, the first used to dial, all accepted; read again on SIGHUP); default: "
        "[security] secret_file, else an open bus",
    )
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
    p.add_argument(
        "--event-loop", choices=list(EVENT_LOOPS), default="asyncio",
        help="asyncio (the standard library's, the default) or uvloop (libuv's, faster; "
        "pip install 'storelab[fast]')",
    )
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="default: info")
    sec = p.add_argument_group("HTTP security (also [security] in the TOML file; realnet.security)")
    sec.add_argument("--admin-token-file", metavar="FILE",
                     help="every POST /cluster/... must carry Authorization: Bearer <the file's text>")
    sec.add_argument("--client-token-file", metavar="FILE",
                     help="every /kv/ request must carry Authorization: Bearer <the file's text>")
    sec.add_argument("--allowed-host", action="append", metavar="NAME",
                     help="one more name the Host header may carry (repeatable)")
    sec.add_argument("--max-clients", type=int, metavar="N",
                     help="client connections open at once; more get 503 (default: from the fd limit)")
    sec.add_argument("--head-timeout", type=float, metavar="SECONDS",
                     help="time a whole request head may take to arrive; then 408 (default 10)")
    sec.add_argument("--request-timeout", type=float, metavar="SECONDS",
                     help="time a whole request, head and body, may take to arrive; then 408 "
                     "(default 75)")
    sec.add_argument("--max-buffered-bodies", type=int, metavar="BYTES",
                     help="request body bytes buffered across all connections (default 64 MiB)")
    return p


# --- bind --------------------------------------------------------------------------------------


@dataclass
class Sockets:
    """The two listening sockets, bound before anything is built."""

    peer: socket.socket
    http: socket.socket

    @property
    def peer_port(self) -> int:
        return int(self.peer.getsockname()[1])

    @property
    def http_port(self) -> int:
        return int(self.http.getsockname()[1])


def bind(settings: Settings) -> Sockets | None:
    """Bind the peer port, then the HTTP port; None (a sentence on stderr) if either fails."""
    try:
        peer_sock = _bind(settings.host, settings.peer_port)
    except OSError as e:
        _bind_error(settings.host, settings.peer_port, "peer", e)
        return None
    try:
        http_sock = _bind(settings.host, settings.port)
    except OSError as e:
        peer_sock.close()
        _bind_error(settings.host, settings.port, "HTTP", e)
        return None
    return Sockets(peer=peer_sock, http=http_sock)


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
    if isinstance(e, socket.gaierror):  # getaddrinfo's own codes are not errnos
        reason = f"the host {host!r} cannot be resolved ({e.strerror or e})"
    else:
        reason = os.strerror(e.errno) if e.errno else (e.strerror or str(e))
    print(
        f"storelab node: cannot listen on {_fmt(host, port)} ({what} port): {reason.lower()}.",
        file=sys.stderr,
        flush=True,
    )




# --- build -------------------------------------------------------------------------------------


@dataclass
class Parts:
    """The pieces of a running node process, built by :func:`build`, run by :func:`run`."""

    runtime: AsyncioRuntime
    node: Node
    transport: PeerTransport
    meter: RttMeter
    #: set to end the process (SIGTERM, SIGINT, POST /cluster/leave, a test)
    stop: asyncio.Event
    #: the client HTTP address advertised to peers and used by the admin library
    addr: str
    api: Api = field(init=False)
    #: the HTTP server, once :func:`run` serves it
    http_server: asyncio.Server | None = None
    #: ``POST /cluster/leave`` asked this node to leave (a signal only stops it)
    leave_requested: bool = False
    #: opens the replicated group's log in ``<data-dir>/raft/`` (realnet.raftopen)
    raft_opener: RaftOpener | None = None
    #: why the storage failed (a write or fsync), or "": the process then stops with status 1
    storage_failed: str = ""

    def request_leave(self) -> None:
        """Leave the cluster, then stop (the API's ``/cluster/leave``)."""
        self.leave_requested = True
        self.stop.set()

    def storage_failure(self, why: str) -> None:
        """The storage cannot make writes durable any more: stop (a restart recovers)."""
        if not self.storage_failed:
            log.critical("%s; stopping, so that a restart recovers from what is on disk", why)
        self.storage_failed = why
        self.stop.set()


def build(
    settings: Settings,
    storage: Storage,
    sockets: Sockets,
    stop: asyncio.Event | None = None,
    keyring: Keyring | None = None,
) -> Parts:
    """The runtime, the node, the peer transport with its gossip links, and the HTTP API.

    ``keyring``: the cluster secret's keys (:func:`load_keyring`); read from the settings'
    secret file when not given."""
    if keyring is None and settings.security.secret_file:
        keyring = read_keyring(settings.security.secret_file)
    loop = asyncio.get_running_loop()
    node_id = settings.node_id
    adv_host = settings.advertise_host or settings.host
    if adv_host.strip("[]") in WILDCARDS and settings.cluster is None:
        log.warning(
            "advertising the wildcard address %s to peers, which cannot reach it there; "
            "give --advertise-host", adv_host,
        )
    addr, peer_addr = _fmt(adv_host, sockets.http_port), _fmt(adv_host, sockets.peer_port)

    runtime = AsyncioRuntime(node_id, loop=loop, storage=storage)
    settings = _keep_cluster_name(settings, storage)
    in_static = settings.cluster is not None
    # a replicated group's log: <data-dir>/raft/, refused without a data dir (realnet.raftopen);
    # a group the node remembers is opened here, so a damaged log stops the start (RaftLogCorrupt),
    # and so does a missing one (RaftLogMissing: it must exist; only forming a group creates it)
    # a new group's log is staged until the node's record of the group is durable (raftopen)
    opener = RaftOpener(settings.data_dir, loop.time, record_durable=storage.on_durable)
    opener.must_exist = storage.get(GROUP_KEY) is not None
    node = Node(
        runtime,
        settings.config,
        settings.cluster,
        swim=settings.swim,
        replica=settings.replica,
        seeds=["@" + a for a in settings.seeds],
        # a static member advertises its [cluster] entry (what every other member was told)
        addr=None if in_static else addr,
        peer_addr=None if in_static else peer_addr,
        # a static member cannot tell its first start from a restart that lost its data
        sync_first=in_static,
        raft_opener=opener,
        # the Raft group's role changes, elections and removal, as they happen
        raft_log=logging.getLogger("realnet.raft").info,
        # a node that finds it lost its state (a group counts it a member, or the cluster knows a
        # claim of it that it does not hold): said once, at ERROR
        alarm=log.error,
    )
    opener.must_exist = False  # from now on a log is opened by forming a new group: created
    transport, meter = _peer_transport(settings, node, runtime, addr, keyring)
    parts = Parts(runtime, node, transport, meter, stop if stop is not None else asyncio.Event(), addr)
    parts.raft_opener = opener
    if hasattr(storage, "on_failure"):  # the storage log (realnet.kvlog): stop when it fails
        storage.on_failure = parts.storage_failure
    # the Raft log too (realnet.raftopen): a failed write or fsync stops the node, exit status 1
    opener.on_failure = parts.storage_failure
    if opener.failed:  # failed while the node was built (a group's first sync)
        parts.storage_failure(opener.failed)
    parts.api = Api(
        node,
        transport,
        loop=loop,
        http_stats=lambda: server_stats(parts.http_server),
        rtt=meter,
        swim_preset=settings.swim_preset,
        on_leave=parts.request_leave,
        drains_on_leave=settings.auto_rebalance,
        admin_token=settings.admin_token,
        client_token=settings.client_token,
        hosts=HostCheck(settings.host, adv_host, settings.http_security.allowed_hosts),
    )
    parts.api.raft_opener = opener  # /metrics reads its commit latency (realnet.raftmetrics)
    return parts


def _peer_transport(settings: Settings, node: Node, runtime: AsyncioRuntime, addr: str,
                    keyring: Keyring | None) -> tuple[PeerTransport, RttMeter]:
    """The node's peer transport (dialling a static configuration's members from the start),
    the runtime's sink, with the RTT meter watching its probes; both forget a member that
    membership forgets."""
    loop = runtime.loop
    peers: dict[str, tuple[str, int]] = {}
    if settings.cluster is not None:
        for n in settings.cluster.nodes:
            if n.id != settings.node_id:
                peers[n.id] = parse_addr(n.peer_addr)
    meter = RttMeter(loop.time)
    transport = PeerTransport(
        node_id=settings.node_id,
        peers=peers,
        resolve=node.membership.address_of,
        on_message=node.on_message,
        node_stats=node.stats,
        rng=runtime.random,
        config=TransportConfig(max_frame_bytes=settings.config.max_frame_bytes),
        cluster_name=settings.cluster_name,
        loop=loop,
        http_addr=addr,
        keyring=keyring,
    )
    runtime.sink = transport
    observe_probes(transport, meter)

    def forget(member: str) -> None:
        transport.forget(member)
        meter.forget(member)

    follow_membership(node.membership, forget)
    return transport, meter


#: where the cluster name is kept in the node's storage
CLUSTER_NAME_KEY = "cluster.name"


def _keep_cluster_name(settings: Settings, storage: Storage) -> Settings:
    """The cluster name is kept with the rest of the cluster state: a node restarted without
    ``--cluster-name`` keeps the name it had; a name given replaces the kept one."""
    if settings.cluster_name:
        if (storage.get(CLUSTER_NAME_KEY) or b"").decode("utf-8", "replace") != settings.cluster_name:
            storage.put(CLUSTER_NAME_KEY, settings.cluster_name.encode())
            storage.sync()
        return settings
    kept = storage.get(CLUSTER_NAME_KEY)
    if kept:
        return dataclasses.replace(settings, cluster_name=kept.decode("utf-8", "replace"))
    return settings


# --- run ---------------------------------------------------------------------------------------


async def run(settings: Settings, parts: Parts, sockets: Sockets, freeze_gc: bool = False) -> int:
    """Serve both ports until ``parts.stop`` is set, then leave and stop; the exit status.

    ``freeze_gc``: the process is the node's own (``main``): freeze what is built, once ready."""
    loop = asyncio.get_running_loop()
    node, transport = parts.node, parts.transport
    limits = _client_limits(settings)
    loop.set_exception_handler(rate_limited_exception_handler)
    try:
        await transport.listen(sock=sockets.peer)
        http_server = await start_http_server(
            parts.api, None, 0, limits, sock=sockets.http, parser=settings.http_parser,
            head_check=parts.api.head_refusal, lane=parts.api.lane,
        )
    except OSError as e:  # pragma: no cover - the sockets are bound already
        _bind_error(settings.host, settings.port, "HTTP", e)
        sockets.http.close()
        await transport.close()
        return EXIT_CONFIG
    parts.http_server = http_server
    parts.api.answer_batch = batch_answerer(http_server)
    installed = _install_signals(loop, parts.stop, settings.node_id)
    installed += install_reload(loop, parts.transport, settings.security.secret_file)
    _say_security(settings, parts, sockets)

    node.start()
    transport.connect_all()
    # listening from now on: the static members added at construction are not joins
    auto = (
        AutoRebalancer(node, parts.addr, loop, settings.auto_rebalance_settle, settings.admin_token)
        if settings.auto_rebalance else None
    )
    _say_serving(settings, parts, limits, loop)
    seeds = f" seeds={','.join(settings.seeds)}" if settings.seeds else ""
    if freeze_gc:
        # Everything built so far (modules, the node, its members and slot map) lives as long as
        # the process: frozen, no full collection scans it again (a full collection of an
        # unfrozen node took 40-70 ms under load, every request waiting on it; /metrics:
        # storelab_gc_frozen_objects). Start-up's garbage is collected first, not kept frozen.
        # Not in a process that runs nodes in turn (tests).
        gc.collect()
        gc.freeze()
    print(
        f"ready id={settings.node_id} http={_fmt(settings.host, sockets.http_port)} "
        f"peer={_fmt(settings.host, sockets.peer_port)}{seeds}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await parts.stop.wait()
        if parts.leave_requested:
            if auto is not None:
                await auto.drain()
            try:
                await leave_gracefully(node)
            except Exception:  # a failed goodbye must not stop the shutdown
                log.exception("leaving the cluster failed; stopping anyway")
    finally:
        node.stop()
        if parts.raft_opener is not None:
            parts.raft_opener.close()
        await stop_http_server(http_server, grace=SHUTDOWN_GRACE)
        await transport.close()
        _close_storage(node.rt.storage)
        for signum in installed:
            loop.remove_signal_handler(signum)
    log.info("stopped")
    return EXIT_STORAGE if parts.storage_failed else EXIT_OK


def _client_limits(settings: Settings) -> HttpLimits:
    """The HTTP door's limits: the key and value bounds, and the ``[security]`` deadlines and caps."""
    sec = settings.http_security
    return dataclasses.replace(
        http_limits(settings.config.max_key_bytes, settings.config.max_value_bytes),
        head_timeout=sec.head_timeout,
        request_timeout=sec.request_timeout,
        max_connections=sec.max_clients or default_max_connections(),
        max_buffered_bodies=sec.max_buffered_bodies,
    )


def _say_security(settings: Settings, parts: Parts, sockets: Sockets) -> None:
    """Log how the bus is secured and what is wrong with the secret and token files."""
    say_bus(parts.transport, settings.security.secret_file, settings.host, sockets.peer_port)
    for warning in secret_file_warnings((
        ("admin token", settings.http_security.admin_token_file),
        ("client token", settings.http_security.client_token_file),
        ("cluster secret", settings.security.secret_file),
    )):
        log.warning("%s", warning)


def _say_serving(settings: Settings, parts: Parts, limits: HttpLimits, loop: asyncio.AbstractEventLoop) -> None:
    """Log whom a restarted node syncs with first, and how its HTTP door is set."""
    node = parts.node
    kept = [m.node for m in node.membership.live_members()]
    if node.router.gated and kept:
        log.info("syncing with %s before serving (503 try_again until then)%s", ", ".join(kept[:5]),
                 "" if settings.seeds or settings.cluster is not None else
                 f": the members kept in {settings.data_dir}")
    log.info(
        "HTTP: admin %s, client %s, %d client connections at most, Host one of %s; event loop %s",
        "needs a token" if settings.admin_token else "OPEN (no --admin-token-file)",
        "needs a token" if settings.client_token else "open",
        limits.max_connections, ", ".join(parts.api.hosts.names()) if parts.api.hosts else "any",
        event_loop_name(loop),
    )


def _close_storage(storage: Storage) -> None:
    """Flush and close a storage that can be closed (a clean stop loses no write)."""
    close = getattr(storage, "close", None)
    if close is None:
        return
    try:
        close()
    except OSError:
        log.exception("closing the storage failed: writes not yet flushed may be lost")


def _install_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event, node_id: str) -> list[int]:
    """SIGTERM and SIGINT set ``stop``; a second one exits at once with status 1."""
    signals_seen = 0

    def on_signal(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            print(f"storelab node {node_id}: {signame} again; exiting now.", file=sys.stderr, flush=True)
            os._exit(1)
        log.info("%s received; stopping (the cluster keeps this member: it is down until it "
                 "restarts; storelab cluster remove-node makes a member leave)", signame)
        stop.set()

    installed: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests drive stop instead)
    return installed


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


async def serve(
    settings: Settings, storage: Storage | None = None, stop: asyncio.Event | None = None,
    freeze_gc: bool = False,
) -> int:
    """Run a node until ``stop`` is set (or SIGTERM/SIGINT arrives). Returns the exit status.

    ``storage`` defaults to :func:`realnet.runtime.open_storage` of the settings' data dir;
    ``freeze_gc``: :func:`run`'s.
    """
    if storage is None:
        try:
            storage = open_storage(settings.data_dir)
        except OSError as e:
            _print_problems([f"Cannot use data directory {settings.data_dir!r}: {e.strerror or e}."])
            return EXIT_CONFIG
        except StorageLogCorrupt as e:
            _print_problems([_corrupt_storage(e)])
            return EXIT_CONFIG
    if settings.data_dir:
        problem = _check_node_id(settings, storage)
        if problem:
            return _refuse_start(problem, storage)
    raft_dir = os.path.join(settings.data_dir, RAFT_DIR) if settings.data_dir else ""
    if raft_dir and storage.get(GROUP_KEY) is None:
        # a join a crash cut short before the node's record of the group was durable left its
        # log staged: the node never joined (add-node run again joins it); realnet.raftlog
        try:
            discarded = discard_staged(raft_dir)
        except OSError as e:
            return _refuse_start(f"Cannot remove what a join cut short by a crash left in {raft_dir}: "
                                 f"{e.strerror or e}. {_RESTORE.capitalize()}", storage)
        for path in discarded:
            log.info("removed %s, left by a join of a replicated group that a crash cut short before "
                     "this node recorded the group: the node never joined it", path)
        orphans = group_logs(raft_dir)
        if orphans:  # (a log gets its name once its record is durable)
            return _refuse_start(
                f"The data directory {settings.data_dir!r} holds a Raft log ({orphans[0]}) but not this "
                "node's record of its group (its storage.log was lost or replaced): started so, it would "
                f"serve as an unreplicated node, outside its group. {_RESTORE.capitalize()}", storage)
    if storage.get(LEFT_KEY) is not None:
        if settings.cluster is None:
            return _refuse_start(_left_before(settings), storage)
        storage.delete(LEFT_KEY)  # a static member rejoins: its configuration lists it
        storage.sync()
    keyring = None
    if settings.security.secret_file:
        try:
            keyring = read_keyring(settings.security.secret_file)
        except KeyringError as e:
            _print_problems([str(e)])
            return EXIT_CONFIG
    # Bind first: the node must advertise the ports it really listens on.
    sockets = bind(settings)
    if sockets is None:
        return EXIT_CONFIG
    try:
        parts = build(settings, storage, sockets, stop, keyring)
    except GroupUnusable as e:  # refused, not served as an unreplicated node (split brain)
        return _refuse_start(f"{_sentence(str(e))} The node does not start outside its group; "
                             f"{_RESTORE}", storage, sockets)
    except RaftLogUnusable as e:  # refused, not served: a log with a hole could lose writes
        return _refuse_start(_unusable_raft_log(e), storage, sockets)
    if parts.storage_failed:  # the Raft log failed while the node was built: said, stop
        sockets.http.close()
        sockets.peer.close()
        if parts.raft_opener is not None:
            parts.raft_opener.close()
        _close_storage(storage)
        return EXIT_STORAGE
    return await run(settings, parts, sockets, freeze_gc)


#: what a node refused for the state of its data directory can do about it
_RESTORE = "restore the data directory, or remove it and add the node again (add-node)."


def _refuse_start(problem: str, storage: Storage, sockets: Sockets | None = None) -> int:
    """Say why the node does not start, free its ports and its data directory: exit status 2."""
    _print_problems([problem])
    if sockets is not None:
        sockets.http.close()
        sockets.peer.close()
    _close_storage(storage)
    return EXIT_CONFIG


#: where a data directory records the id of the node it belongs to (at its first start)
NODE_ID_KEY = "node_id"


def _check_node_id(settings: Settings, storage: Storage) -> str:
    """Why the node may not start under ``settings.node_id`` on this data directory ("" if it
    may). A data directory belongs to one node: its Raft log holds that node's term, vote and
    entries, its storage its incarnation and claim. Started under another id, two processes
    could share one Raft identity with different votes, and the cluster would gain a member
    that runs another's group. The id is recorded at the first start; a directory from before
    ids were recorded takes the id it is started with (logged once), unless it names that id as
    another node's (a member it knew by that id, or a group it formed whose voters lack it)."""
    nid = settings.node_id
    where = settings.data_dir
    stored = storage.get(NODE_ID_KEY)
    if stored is not None:
        owner = stored.decode("utf-8", "replace")
        if owner == nid:
            return ""
        return (f"The data directory {where!r} belongs to node {owner!r}, not {nid!r}: started as {nid!r} "
                f"it would bring {owner!r}'s Raft log, votes and keys into the cluster as another member. "
                f"Start it with --id {owner}, or give node {nid!r} an empty --data-dir.")
    evidence = ""
    if storage.get(MEMBER_PREFIX + nid) is not None:
        evidence = f"it knew {nid!r} as another member of its cluster"
    group = storage.get(GROUP_KEY)
    if not evidence and group is not None:
        try:
            voters = list(json.loads(group).get("voters", []))
        except (ValueError, TypeError, AttributeError):
            voters = []
        if voters and nid not in voters:
            evidence = f"it formed a replicated group whose voters ({', '.join(map(str, voters))}) do not include {nid!r}"
    if evidence:
        return (f"The data directory {where!r} records no node id (it is older than that record) and "
                f"belongs to another node than {nid!r}: {evidence}. Start it with the id it was made "
                f"under, or give node {nid!r} an empty --data-dir.")
    if storage.get(INCARNATION_KEY) is not None:  # an earlier life, before ids were recorded
        log.info("the data directory %s records no node id (made by an older storelab); it is "
                 "node %s's from now on", where, nid)
    storage.put(NODE_ID_KEY, nid.encode())
    storage.sync()
    return ""


def _sentence(text: str) -> str:
    """``text`` ending with a full stop (the logs' own messages may end without one)."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


def _unusable_raft_log(e: RaftLogUnusable) -> str:
    """Why the node does not start on its Raft log, and what to do (a missing or unusable log
    is refused as a damaged one is: starting without it could lose acknowledged writes)."""
    what = "on a damaged Raft log" if isinstance(e, RaftLogCorrupt) else "without its Raft log"
    return f"{_sentence(str(e))} The node does not start {what}; {_RESTORE}"


def _left_before(settings: Settings) -> str:
    """Why a node that left its cluster does not start on the same data directory: it would
    come back as a zombie (a replicated one campaigning for a group that removed it, one that
    owned slots advertising a claim it gave away), and the cluster keeps it as left."""
    where = settings.data_dir or "its data directory"
    return (f"Node {settings.node_id!r} left its cluster (storelab cluster remove-node or POST "
            f"/cluster/leave), and {where} holds the state of that membership; to start a fresh "
            "node, give it an empty --data-dir and add it with storelab cluster add-node (under "
            "another --id if it left owning slots, as a member of a replicated group does), or "
            "move this directory aside.")


# --- the command -------------------------------------------------------------------------------


def _open_storage(settings: Settings) -> tuple[Storage, str]:
    """The node's storage and its final id (a standalone node's id is kept in its data dir)."""
    node_id = settings.node_id
    try:
        storage = open_storage(settings.data_dir)
        if settings.generated_id:
            stored = storage.get(NODE_ID_KEY)
            if stored:
                node_id = stored.decode("utf-8", "replace")
            elif settings.data_dir:
                storage.put(NODE_ID_KEY, node_id.encode())
                storage.sync()
    except OSError as e:
        raise ConfigError(
            [f"Cannot use data directory {settings.data_dir!r}: {e.strerror or e}."]
        ) from None
    except StorageLogCorrupt as e:
        raise ConfigError([_corrupt_storage(e)]) from None
    return storage, node_id


def _corrupt_storage(e: StorageLogCorrupt) -> str:
    if isinstance(e, StorageLayoutConflict):
        return str(e)  # it says what to keep
    return f"{_sentence(str(e))} The node does not start on a damaged storage log; {_RESTORE}"


def _print_problems(problems: Sequence[str]) -> None:
    for p in problems:
        print(f"storelab node: {p}", file=sys.stderr)
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args)
        factory = loop_factory(settings.event_loop)
        storage, node_id = _open_storage(settings)
    except ConfigError as e:
        _print_problems(e.problems)
        return EXIT_CONFIG
    except ImportError as e:
        _print_problems([f"{e}."])
        return EXIT_CONFIG
    settings = dataclasses.replace(settings, node_id=node_id)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format=f"%(asctime)s %(levelname)s [{node_id}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(settings, storage, freeze_gc=True))


__all__ = [
    # old import paths of what moved to realnet.settings and realnet.autorebalance
    "AUTO_REBALANCE_RETRIES",
    "AUTO_REBALANCE_SETTLE",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DRAIN_STABLE_TIMEOUT",
    "AutoRebalancer",
    "Settings",
    "load_settings",
    "run_in_thread",
    # this module's own
    "CLUSTER_NAME_KEY",
    "EXIT_CONFIG",
    "EXIT_OK",
    "LEAVE_LINGER",
    "NODE_ID_KEY",
    "Parts",
    "SHUTDOWN_GRACE",
    "Sockets",
    "bind",
    "build",
    "build_parser",
    "leave_gracefully",
    "main",
    "reload_keyring",
    "run",
    "serve",
]


if __name__ == "__main__":
    sys.exit(main())
