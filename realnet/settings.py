"""A node process's settings: command-line flags over a TOML file over defaults.

Theory of operation
-------------------
:func:`load_settings` turns the parsed flags (``python -m realnet.node``'s argument parser) and
the optional TOML file into one frozen :class:`Settings`, or raises
:class:`~kvcore.tables.ConfigError` listing *every* problem as a sentence, before anything is
bound. It reads the file, hands each top-level table to the one function that owns it, then
merges the flags over what the tables gave:

- :func:`top_tables`: only ``[node]``, ``[settings]``, ``[swim]``, ``[cluster]``, ``[security]``,
  ``[raft]`` exist, each a table;
- :func:`node_table`: this process's identity and addresses (:class:`NodeTable`);
- :func:`settings_table`: :class:`kvcore.config.NodeConfig`;
- :func:`swim_table`: a preset of :class:`kvcore.membership.SwimConfig` and field overrides;
- :func:`cluster_table`: :class:`kvcore.config.ClusterConfig` plus the process options
  (:class:`ClusterOptions`: name, automatic rebalancing);
- :func:`raft_table`: :class:`kvcore.replica.ReplicaConfig` (a replicated group's ticks, retries,
  snapshots and read mode: etcd's ``--heartbeat-interval``, ``--election-timeout``,
  ``--snapshot-count``, and its ``ReadOnlyOption``);
- :func:`security_table`: the secrets' files (:class:`SecuritySettings`; the cluster secret
  ``secret_file``, read by ``realnet.node`` with :func:`kvwire.auth.read_keyring`);
- :func:`http_security`: the HTTP side's keys of ``[security]`` (tokens, Host names, client
  connection limits; :mod:`realnet.security`), flags over them, the token files read;
- :func:`merge`: flags over the file, then the addresses (this node's ``[cluster]`` entry,
  defaults).

Every table is read by :func:`kvcore.tables.from_table` (or its first half,
:func:`~kvcore.tables.read_table`), so unknown keys, keys that no longer exist (``GONE_SETTINGS``,
``GONE_SWIM``: ``ping_interval`` and ``down_after`` were replaced by SWIM), wrong types and bad
values read alike in every table. A new flag goes into the parser (``realnet.node.build_parser``),
a field of :class:`Settings`, and one line of :func:`merge`.

Configuration precedence, highest first: flags; the ``[node]`` table (ignored when ``--id``
names another node than its ``id``, so one file can serve all nodes); this node's entry in
``[cluster]`` (its ``addr`` gives host and port, its ``peer_addr`` the peer port); defaults
(127.0.0.1, port 7000, peer port = HTTP port + 10000, as Redis does). One host is bound for both
ports. In cluster mode the id is required (flag or ``[node] id``), unless ``--port`` names
exactly one member's ``addr`` port. A node started without ``[cluster]`` nodes and without
seeds is standalone and owns every slot; its id, unless given, is ``node-`` and 10 random hex
digits (Redis's nodes are named randomly too), kept in the data directory when there is one so
that a restart keeps it (``generated_id``; see ``realnet.node``).

- ``--seeds HOST:PORT,...`` (or ``[node] seeds``) are *peer* addresses of running nodes to join
  through. A node bound to a wildcard address (0.0.0.0, ::) that joins through seeds must be told
  what to advertise (``--advertise-host``).
- ``[swim]`` picks a preset (``lan``, the default; ``wan``; ``local``) and overrides any
  ``SwimConfig`` field; ``--swim-preset`` overrides the preset.
- A ``[cluster]`` table holding only a name (and the options) names the cluster without making
  it static.

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
    [security]        # optional; flags of the same names win
    secret_file = "/etc/storelab/cluster.key"         # the cluster bus's keys, like --secret-file
    admin_token_file = "/etc/storelab/admin.token"    # POST /cluster/... needs it
    client_token_file = "/etc/storelab/client.token"  # /kv/ needs it
    allowed_hosts = ["kv.example.internal"]           # more names the Host header may carry
    max_clients = 1000             # client connections at once (default: from the fd limit)
    head_timeout = 10.0            # seconds for a whole request head
    request_timeout = 75.0         # seconds for a whole request, head and body
    max_buffered_bodies = 67108864 # bytes of request bodies buffered across connections
    [raft]            # optional: kvcore.replica.ReplicaConfig fields (a replicated group)
    tick = 0.05                    # seconds per Raft tick
    election_tick = 10             # ticks without a leader before a (pre-)campaign
    heartbeat_tick = 1
    snapshot_entries = 10000       # compact the log past this many applied entries
    read_only = "safe"             # or "lease": reads on the leader's lease, no heartbeat round
                                   # (thesis §6.4.1; linearizable only while clock rates differ
                                   # by at most lease_drift_ticks per election timeout)
    lease_drift_ticks = 1          # the lease lasts election_tick - lease_drift_ticks ticks
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from kvcore.config import PEER_PORT_OFFSET, ClusterConfig, NodeConfig, parse_addr
from kvcore.membership import SwimConfig
from kvcore.replica import ReplicaConfig
from kvcore.tables import ConfigError, from_table, read_table
from realnet.security import HttpSecurity, http_security_table, read_token

log = logging.getLogger("realnet.settings")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7000
#: default seconds between a join or leave and the automatic rebalance it triggers
AUTO_REBALANCE_SETTLE = 1.0
TOP_TABLES = ("node", "settings", "swim", "cluster", "security", "raft")
WILDCARDS = ("0.0.0.0", "::", "")

#: preset name -> constructor taking field overrides
PRESETS: dict[str, Callable[..., SwimConfig]] = {
    "lan": SwimConfig.lan,
    "wan": SwimConfig.wan,
    "local": SwimConfig.local,
}
DEFAULT_PRESET = "lan"

_SWIM_NOW = (
    "failure detection is SWIM gossip now, tuned in [swim] (probe_interval, probe_timeout, "
    "suspicion_mult, ...)."
)
#: [settings] keys that existed once -> what replaced them
GONE_SETTINGS = {"ping_interval": _SWIM_NOW, "down_after": _SWIM_NOW}
#: [swim] keys of the old failure detector -> their SWIM counterparts
GONE_SWIM = {
    "ping_interval": "SWIM probes one member every probe_interval seconds instead.",
    "down_after": (
        "a suspect member is declared dead after suspicion_mult * max(1, log10(N+1)) * "
        "probe_interval seconds instead (tune suspicion_mult)."
    ),
}


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
    #: the HTTP request parser (a name in realnet.httpparse.PARSERS; ``--http-parser``)
    http_parser: str = "httptools"
    #: the event loop (``--event-loop``): "asyncio" (the standard library's), or "uvloop"
    event_loop: str = "asyncio"
    #: the secrets' files (``[security]``, ``--secret-file``)
    security: SecuritySettings = field(default_factory=lambda: SecuritySettings())
    #: the HTTP side's [security] keys and flags (realnet.security)
    http_security: HttpSecurity = field(default_factory=HttpSecurity)
    #: a replicated group's settings (``[raft]``)
    replica: ReplicaConfig = field(default_factory=ReplicaConfig)
    #: the tokens read from their files (never shown: repr=False)
    admin_token: str | None = field(default=None, repr=False)
    client_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SecuritySettings:
    """The ``[security]`` table: where the secrets are. Each flag of the same name beats it.

    A new secret is one more field here, one flag, and one line in :func:`merge`."""

    #: the cluster bus's keys (``--secret-file``): text lines, the first the primary key, the
    #: others accepted too (kvwire.auth); None: the bus is open (unauthenticated)
    secret_file: str | None = None

    def validate(self) -> SecuritySettings:
        if self.secret_file is not None and not self.secret_file.strip():
            raise ConfigError(["[security] secret_file must be a path, not an empty string."])
        return self


SECURITY_KEYS = tuple(f.name for f in fields(SecuritySettings))


@dataclass(frozen=True)
class NodeTable:
    """The ``[node]`` table: this process's identity; every flag of the same name beats it."""

    id: str | None = None
    host: str | None = None
    port: int | None = None
    peer_port: int | None = None
    data_dir: str | None = None
    #: a list of HOST:PORT strings, or one comma-separated string (parsed by the merge)
    seeds: Any = None
    advertise_host: str | None = None


NODE_KEYS = tuple(f.name for f in fields(NodeTable))


@dataclass(frozen=True)
class ClusterOptions:
    """The keys of ``[cluster]`` that configure this process rather than the static cluster."""

    #: peers whose Hello names another non-empty cluster name are refused
    name: str = ""
    #: rebalance on joins and graceful leaves; drain before leaving
    auto_rebalance: bool = False
    #: seconds to wait after a join or leave (each further event restarts the wait)
    auto_rebalance_settle: float = AUTO_REBALANCE_SETTLE

    def validate(self) -> ClusterOptions:
        if not self.auto_rebalance_settle >= 0:
            raise ConfigError([
                "auto_rebalance_settle must be a number of seconds >= 0, not "
                f"{self.auto_rebalance_settle:g}."
            ])
        return self


CLUSTER_OPTIONS = tuple(f.name for f in fields(ClusterOptions))


# --- the file and its tables -------------------------------------------------------------------


def read_file(path: str) -> dict[str, Any]:
    """The TOML document at ``path``; raises ConfigError with a sentence."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError([f"Cannot read config file {path!r}: {e.strerror or e}."]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"Config file {path!r} is not valid TOML: {e}."]) from None


def top_tables(doc: Mapping[str, Any], problems: list[str]) -> dict[str, Mapping[str, Any] | None]:
    """The top-level tables (an absent one is ``{}``, an absent ``[cluster]`` is None)."""
    for k in sorted(set(doc) - set(TOP_TABLES)):
        problems.append(
            f"Unknown top-level key {k!r} in the config file; known: {', '.join(TOP_TABLES)}."
        )
    out: dict[str, Mapping[str, Any] | None] = {}
    for name in TOP_TABLES:
        t = doc.get(name, {})
        if not isinstance(t, Mapping):
            problems.append(f"[{name}] must be a table.")
            t = {}
        out[name] = t
    if "cluster" not in doc:
        out["cluster"] = None
    return out


def node_table(table: Mapping[str, Any], flag_id: str | None) -> tuple[dict[str, Any], list[str]]:
    """The well-typed keys of ``[node]`` and the problems.

    With ``--id`` naming another node than the table's ``id``, the file is shared by every node
    and its ``[node]`` describes another one: none of its values apply (only its unknown keys
    are still reported).
    """
    if flag_id is not None and table.get("id") not in (None, flag_id):
        log.warning("ignoring [node] (it describes node %r, this is %r)", table["id"], flag_id)
        table = {k: v for k, v in table.items() if k not in NODE_KEYS}
    return read_table(NodeTable, table, "[node]")


def settings_table(table: Mapping[str, Any]) -> NodeConfig:
    """``[settings]``: the node's :class:`~kvcore.config.NodeConfig`."""
    return NodeConfig.from_dict(table, "[settings]", gone=GONE_SETTINGS)


def swim_table(table: Mapping[str, Any], preset: str | None = None) -> tuple[str, SwimConfig]:
    """``[swim]``: (preset name, SwimConfig); ``preset`` (the flag) beats the table's ``preset``.

    The preset gives the base values (memberlist's three) and every other key overrides one
    field. Raises ConfigError with one sentence per problem.
    """
    problems: list[str] = []
    name = preset if preset is not None else table.get("preset", DEFAULT_PRESET)
    if not isinstance(name, str) or name not in PRESETS:
        problems.append(f"The SWIM preset must be one of {', '.join(PRESETS)}, not {name!r}.")
        name = DEFAULT_PRESET
    config = PRESETS[name]()
    try:
        config = from_table(SwimConfig, table, "[swim]", noun="SWIM setting", gone=GONE_SWIM,
                            handled=("preset",), build=PRESETS[name])
    except ConfigError as e:
        problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return name, config


def cluster_table(table: Mapping[str, Any] | None) -> tuple[ClusterConfig | None, ClusterOptions]:
    """``[cluster]``: the static cluster (None without one) and this process's options.

    A ``[cluster]`` holding only options names the cluster without making it static.
    """
    if table is None:
        return None, ClusterOptions()
    problems: list[str] = []
    options = ClusterOptions()
    try:
        options = from_table(
            ClusterOptions, {k: v for k, v in table.items() if k in CLUSTER_OPTIONS}, "[cluster]"
        )
    except ConfigError as e:
        problems.extend(e.problems)
    cluster = None
    static = {k: v for k, v in table.items() if k not in CLUSTER_OPTIONS}
    if static:
        try:
            cluster = ClusterConfig.from_dict(static)
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return cluster, options


def raft_table(table: Mapping[str, Any]) -> ReplicaConfig:
    """``[raft]``: a replicated group's :class:`~kvcore.replica.ReplicaConfig`."""
    return from_table(ReplicaConfig, table, "[raft]", noun="Raft setting")


def security_table(table: Mapping[str, Any]) -> SecuritySettings:
    """``[security]``'s bus keys: the files that hold the cluster's secrets (their content is read
    by the node). The HTTP side's keys of the same table are read by :func:`http_security`."""
    bus = {k: v for k, v in table.items() if k in SECURITY_KEYS}
    return from_table(SecuritySettings, bus, "[security]")


# --- flags over the file -----------------------------------------------------------------------


def load_settings(args: argparse.Namespace) -> Settings:
    """Resolve flags, the TOML file and defaults; raises ConfigError listing every problem."""
    doc: dict[str, Any] = read_file(args.config) if args.config else {}
    problems: list[str] = []
    tables = top_tables(doc, problems)
    node_values, bad = node_table(tables["node"] or {}, args.id)
    problems.extend(bad)
    config = _collect(problems, NodeConfig(), settings_table, tables["settings"] or {})
    swim_preset, swim = _collect(
        problems, ("lan", SwimConfig.lan()), swim_table, tables["swim"] or {}, args.swim_preset
    )
    cluster, options = _collect(problems, (None, ClusterOptions()), cluster_table, tables["cluster"])
    security = _collect(problems, SecuritySettings(), security_table, tables["security"] or {})
    replica = _collect(problems, ReplicaConfig(), raft_table, tables["raft"] or {})
    sec, admin_token, client_token = http_security(args, tables["security"] or {}, problems)
    settings = merge(args, node_values, config, swim_preset, swim, cluster, options, problems)
    return dataclasses.replace(
        settings, security=merge_security(args, security), http_security=sec, replica=replica,
        admin_token=admin_token, client_token=client_token,
    )


def merge_security(args: argparse.Namespace, table: SecuritySettings) -> SecuritySettings:
    """The flags of the same names over ``[security]``."""
    values = {
        k: getattr(args, k) for k in SECURITY_KEYS if getattr(args, k, None) is not None
    }
    return dataclasses.replace(table, **values) if values else table


# --- the HTTP side of [security] (kept apart from the peer bus's secret_file) -------------------


def http_security(
    args: argparse.Namespace, table: Mapping[str, Any], problems: list[str]
) -> tuple[HttpSecurity, str | None, str | None]:
    """The HTTP side's ``[security]`` keys with their flags over them, and the two tokens read
    from their files (:mod:`realnet.security`). Problems are appended as sentences."""
    values, bad = http_security_table(table)
    problems.extend(bad)
    flags = {
        "admin_token_file": getattr(args, "admin_token_file", None),
        "client_token_file": getattr(args, "client_token_file", None),
        "max_clients": getattr(args, "max_clients", None),
        "head_timeout": getattr(args, "head_timeout", None),
        "request_timeout": getattr(args, "request_timeout", None),
        "max_buffered_bodies": getattr(args, "max_buffered_bodies", None),
    }
    for key, flag in flags.items():
        if flag is not None:
            values[key] = flag
    extra = getattr(args, "allowed_host", None)
    if extra:
        values["allowed_hosts"] = (*values.get("allowed_hosts", ()), *extra)
    values = {k: v for k, v in values.items() if v is not None}
    sec = HttpSecurity(**values)
    if sec.max_clients < 0:
        problems.append("--max-clients must be 0 (derived from the file-descriptor limit) or positive.")
    if not 0 < sec.head_timeout < 86400:
        problems.append("--head-timeout must be a number of seconds above 0 and below a day.")
    if not 0 < sec.request_timeout < 86400:
        problems.append("--request-timeout must be a number of seconds above 0 and below a day.")
    if sec.max_buffered_bodies < 1024:
        problems.append("--max-buffered-bodies must be at least 1024 bytes.")
    tokens: list[str | None] = []
    for path, what in ((sec.admin_token_file, "admin token"), (sec.client_token_file, "client token")):
        token = None
        if path is not None:
            try:
                token = read_token(path, what)
            except ConfigError as e:
                problems.extend(e.problems)
        tokens.append(token)
    return sec, tokens[0], tokens[1]


def _collect(problems: list[str], default: Any, read: Callable[..., Any], *a: Any) -> Any:
    try:
        return read(*a)
    except ConfigError as e:
        problems.extend(e.problems)
        return default


def merge(
    args: argparse.Namespace,
    node_values: Mapping[str, Any],
    config: NodeConfig,
    swim_preset: str,
    swim: SwimConfig,
    cluster: ClusterConfig | None,
    options: ClusterOptions,
    problems: list[str],
) -> Settings:
    """Flags over the file's values, then the addresses; raises ConfigError with ``problems``
    and every further one."""

    def pick(key: str) -> Any:
        flag = getattr(args, key)
        return flag if flag is not None else node_values.get(key)

    node_id = _node_id(_non_empty(pick("id"), "The node id", problems), problems)
    port = _port(pick("port"), "HTTP port", problems)
    peer_port = _port(pick("peer_port"), "peer port", problems)
    host = _non_empty(pick("host"), "The host", problems)
    data_dir = pick("data_dir")
    seeds = _seeds(pick("seeds"), problems)
    advertise_host = _non_empty(pick("advertise_host"), "advertise_host", problems)
    if cluster is not None:
        node_id, host, port, peer_port = _cluster_member(cluster, node_id, host, port, peer_port, problems)
    if problems:
        raise ConfigError(problems)
    host = host or DEFAULT_HOST
    port = DEFAULT_PORT if port is None else port
    peer_port = _default_peer_port(port, peer_port)
    if seeds and advertise_host is None and cluster is None and host.strip("[]") in WILDCARDS:
        raise ConfigError([
            f"This node binds the wildcard address {host} and joins through seeds, so it must be "
            "told which address its peers can reach it at: give --advertise-host."
        ])
    generated = node_id is None
    if node_id is None:
        node_id = "node-" + secrets.token_hex(5)
    return Settings(
        node_id=node_id,
        host=host,
        port=port,
        peer_port=peer_port,
        config=config,
        cluster=cluster,
        cluster_name=args.cluster_name if args.cluster_name is not None else options.name,
        data_dir=data_dir,
        generated_id=generated,
        seeds=seeds,
        advertise_host=advertise_host,
        swim=swim,
        swim_preset=swim_preset,
        auto_rebalance=args.auto_rebalance if args.auto_rebalance is not None else options.auto_rebalance,
        auto_rebalance_settle=options.auto_rebalance_settle,
        http_parser=getattr(args, "http_parser", None) or "httptools",
        event_loop=getattr(args, "event_loop", None) or "asyncio",
    )


def _cluster_member(
    cluster: ClusterConfig,
    node_id: str | None,
    host: str | None,
    port: int | None,
    peer_port: int | None,
    problems: list[str],
) -> tuple[str | None, str | None, int | None, int | None]:
    """(id, host, port, peer port) of this static member: its id (from ``--port`` if need be)
    and the addresses its ``[cluster]`` entry gives where no flag or ``[node]`` key did."""
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
    if problems or node_id is None:
        return node_id, host, port, peer_port
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
    return node_id, host, port, peer_port


def _default_peer_port(port: int, peer_port: int | None) -> int:
    if peer_port is None:
        peer_port = port + PEER_PORT_OFFSET if port else 0
        if peer_port > 65535:
            raise ConfigError([
                f"The default peer port {peer_port} (HTTP port + {PEER_PORT_OFFSET}) is "
                "over 65535; give --peer-port."
            ])
    if port and peer_port and port == peer_port:
        raise ConfigError([f"The HTTP port and the peer port are both {port}."])
    return peer_port


def _non_empty(value: Any, what: str, problems: list[str]) -> Any:
    # the types were checked by read_table (file) and argparse (flags); left: the empty string
    if value is not None and (not isinstance(value, str) or not value):
        problems.append(f"{what} must be a non-empty string, not {value!r}.")
        return None
    return value


def _node_id(value: str | None, problems: list[str]) -> str | None:
    """A node id is one printable word: it is written in member files, log lines, the ready
    line and CLI tables, and a peer's handshake carries at most 256 characters of it."""
    if value is None:
        return None
    if len(value) > 200 or not value.isprintable() or any(c.isspace() for c in value):
        problems.append(f"The node id must be printable, without spaces, at most 200 characters, "
                        f"not {value[:80]!r}.")
        return None
    return value


def _port(value: Any, what: str, problems: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        problems.append(f"The {what} must be a port number 0-65535, not {value!r}.")
        return None
    return value


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


__all__ = [
    "AUTO_REBALANCE_SETTLE",
    "CLUSTER_OPTIONS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_PRESET",
    "GONE_SETTINGS",
    "GONE_SWIM",
    "NODE_KEYS",
    "PRESETS",
    "ClusterOptions",
    "NodeTable",
    "SECURITY_KEYS",
    "SecuritySettings",
    "Settings",
    "cluster_table",
    "http_security",
    "load_settings",
    "merge",
    "node_table",
    "read_file",
    "security_table",
    "settings_table",
    "swim_table",
]
