"""Configuration: how one node behaves (:class:`NodeConfig`) and who is in a static cluster.

Theory of operation
-------------------
One frozen dataclass per layer, every field documented with its unit and why it has its default
(memberlist's ``config.go`` style). ``validate()`` returns full sentences, one per problem, so an
operator reads what is wrong rather than a stack trace (etcd/raft's ``Config.validate``).
Tables from a file become these dataclasses through :func:`kvcore.tables.from_table`, the one
reader of every table (unknown keys, keys that no longer exist, wrong types, then ``validate``).

:class:`ClusterConfig` is the static cluster: node ids, their client (HTTP) and peer addresses,
and manual slot ranges, with a config epoch. It is built from plain dicts (what ``tomllib``
returns), so kvcore parses a TOML file's *content* without touching the file system:

.. code-block:: toml

    [cluster]
    epoch = 1
    [[cluster.nodes]]
    id = "n1"
    addr = "127.0.0.1:7001"        # client HTTP address
    peer_addr = "127.0.0.1:17001"  # defaults to the HTTP port + 10000
    slots = "0-5460"
    [cluster.slots]                # optional extra assignments by node id
    n2 = "5461-10922"

A cluster that leaves slots unassigned is valid (requests for them answer 503 slot unassigned);
``cluster verify`` is where full coverage is demanded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kvcore.slots import Range, SlotMap, SlotRangeError, format_ranges, parse_ranges
from kvcore.tables import ConfigError as ConfigError
from kvcore.tables import from_table, read_table

PEER_PORT_OFFSET = 10000


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """How one node behaves. Times are in seconds, sizes in bytes."""

    #: How long a forwarded request waits for the owner before the client gets 504. Longer
    #: than a few RTTs on a loaded LAN, short enough that a dead owner is noticed quickly.
    forward_timeout: float = 2.0
    #: Largest key. memcached's limit is 250 bytes; Redis allows 512 MB; 1 KiB is a roomy
    #: middle ground that keeps the slot index small.
    max_key_bytes: int = 1024
    #: Largest value: 1 MiB, memcached's default item size.
    max_value_bytes: int = 1024 * 1024
    #: Largest peer frame. Must hold the largest value plus the key and message overhead.
    max_frame_bytes: int = 4 * 1024 * 1024
    #: How long the owner remembers the replies to forwarded requests, so that a duplicated
    #: Forward is answered from memory instead of being applied twice. Several forward timeouts.
    dedup_window: float = 10.0
    #: Write every change of the store and of open slot migrations through to the Runtime's
    #: durable storage and reload them on start, so a crash loses nothing acknowledged (a disk
    #: with an fsync per write). Off by default: a node's data then lives in memory only, as in
    #: Redis without persistence, and a crash loses it until replication lands.
    durable: bool = False

    def problems(self) -> list[str]:
        out: list[str] = []
        for name in ("forward_timeout", "dedup_window"):
            if not getattr(self, name) > 0:
                out.append(f"{name} must be a positive number of seconds, not {getattr(self, name)!r}.")
        for name in ("max_key_bytes", "max_value_bytes", "max_frame_bytes"):
            if not getattr(self, name) > 0:
                out.append(f"{name} must be a positive number of bytes, not {getattr(self, name)!r}.")
        if self.max_frame_bytes < self.max_value_bytes + self.max_key_bytes + 1024:
            out.append(
                f"max_frame_bytes ({self.max_frame_bytes}) must exceed max_value_bytes plus "
                f"max_key_bytes plus 1024 bytes of framing, or the largest value cannot be forwarded."
            )
        return out

    def validate(self) -> NodeConfig:
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], where: str = "[settings]", gone: Mapping[str, str] | None = None
    ) -> NodeConfig:
        """Build from a TOML table (:func:`kvcore.tables.from_table`): unknown keys, keys in
        ``gone`` (name -> what replaced it), wrong types and bad values, as sentences."""
        return from_table(cls, d, where, noun="node setting", gone=gone)


def parse_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` → (host, port); raises ValueError with a sentence."""
    host, sep, port_s = addr.rpartition(":")
    if not sep or not host:
        raise ValueError(f"Address {addr!r} is not HOST:PORT.")
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"Address {addr!r} has a port that is not a number.") from None
    if not 0 < port < 65536:
        raise ValueError(f"Address {addr!r} has a port outside 1-65535.")
    return host.strip("[]"), port


def default_peer_addr(addr: str) -> str:
    host, port = parse_addr(addr)
    if ":" in host:  # IPv6: put back the brackets parse_addr removed
        host = f"[{host}]"
    return f"{host}:{port + PEER_PORT_OFFSET}"


@dataclass(frozen=True)
class NodeSpec:
    """One member of a static cluster."""

    id: str
    addr: str  # client HTTP address, HOST:PORT
    peer_addr: str  # peer TCP address, HOST:PORT
    slots: tuple[Range, ...] = ()


@dataclass(frozen=True)
class ClusterConfig:
    """A static cluster: members, their slot ranges, and the config epoch of that assignment."""

    nodes: tuple[NodeSpec, ...]
    epoch: int = 1
    #: assignments to node ids made outside the node entries ([cluster.slots]); may name unknown
    #: nodes, which validation reports
    extra_slots: tuple[tuple[str, tuple[Range, ...]], ...] = field(default=())

    def problems(self, self_id: str | None = None) -> list[str]:
        out: list[str] = []
        ids: dict[str, int] = {}
        addrs: dict[str, str] = {}
        if not self.nodes:
            out.append("The cluster has no nodes.")
        for n in self.nodes:
            if not n.id:
                out.append("A node has an empty id.")
            if n.id in ids:
                out.append(f"Node id {n.id!r} appears twice.")
            ids[n.id] = 1
            for a in (n.addr, n.peer_addr):
                try:
                    parse_addr(a)
                except ValueError as e:
                    out.append(f"Node {n.id!r}: {e}")
                    continue
                if a in addrs and addrs[a] != n.id:
                    out.append(f"Address {a} is used by both node {addrs[a]!r} and node {n.id!r}.")
                elif a in addrs:
                    out.append(f"Node {n.id!r} uses address {a} for both HTTP and peers.")
                addrs[a] = n.id
        for nid, _ in self.extra_slots:
            if nid not in ids:
                out.append(f"Slots are assigned to unknown node {nid!r}; known nodes: {', '.join(sorted(ids))}.")
        out.extend(self._self_problem(self_id))
        owner: dict[int, str] = {}
        for nid, ranges in self._all_assignments():
            for lo, hi in ranges:
                if not (0 <= lo <= hi <= 16383):
                    out.append(f"Node {nid!r} has slot range {lo}-{hi} outside 0-16383.")
                    continue
                clash = sorted({owner[s] for s in range(lo, hi + 1) if s in owner})
                if clash:
                    overlap = [s for s in range(lo, hi + 1) if s in owner]
                    out.append(
                        f"Slot ranges of node {nid!r} and node {clash[0]!r} overlap at "
                        f"{format_ranges((s, s) for s in overlap)}."
                    )
                for s in range(lo, hi + 1):
                    owner.setdefault(s, nid)
        if self.epoch < 0:
            out.append(f"The config epoch must be zero or more, not {self.epoch}.")
        return out

    def validate(self, self_id: str | None = None) -> ClusterConfig:
        # The general checks cost O(slots); a sim builds thousands of nodes from one config, so
        # their result is remembered on the (immutable) config and only self_id is checked anew.
        problems = self.__dict__.get("_problems")
        if problems is None:
            problems = self.problems()
            object.__setattr__(self, "_problems", problems)
        problems = problems + self._self_problem(self_id)
        if problems:
            raise ConfigError(list(problems))
        return self

    def _self_problem(self, self_id: str | None) -> list[str]:
        if self_id is None or self_id in self._by_id():
            return []
        ids = sorted({n.id for n in self.nodes})
        return [f"This node's id {self_id!r} is not a member of the cluster ({', '.join(ids)})."]

    def _by_id(self) -> dict[str, NodeSpec]:
        """id -> spec (the first one of an id), built once per config: thousands of sim nodes
        look themselves up in one config."""
        cached: dict[str, NodeSpec] | None = self.__dict__.get("_by_id_cache")
        if cached is None:
            cached = {}
            for n in self.nodes:
                cached.setdefault(n.id, n)
            object.__setattr__(self, "_by_id_cache", cached)
        return cached

    def _all_assignments(self) -> list[tuple[str, tuple[Range, ...]]]:
        return [(n.id, n.slots) for n in self.nodes] + list(self.extra_slots)

    def static_members(self) -> list[tuple[str, str, str, str, int]]:
        """(id, addr, peer_addr, slot ranges, epoch) of every member, computed once per config
        (a sim builds thousands of nodes from one config; the strings are shared)."""
        cached = self.__dict__.get("_static")
        if cached is None:
            assignment = self.slot_map().assignment()
            cached = [
                (n.id, n.addr, n.peer_addr, format_ranges(assignment.get(n.id, [])), self.epoch)
                for n in self.nodes
            ]
            object.__setattr__(self, "_static", cached)
        return cached

    def node(self, node_id: str) -> NodeSpec:
        return self._by_id()[node_id]

    def ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    def slot_map(self) -> SlotMap:
        """A fresh SlotMap of this assignment (each caller gets its own copy to change)."""
        cached = self.__dict__.get("_slot_map")
        if cached is None:
            assignment: dict[str, list[Range]] = {}
            for nid, ranges in self._all_assignments():
                assignment.setdefault(nid, []).extend(ranges)
            cached = SlotMap.from_assignment(assignment, self.epoch)
            object.__setattr__(self, "_slot_map", cached)
        return cached.copy()

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "nodes": [
                {"id": n.id, "addr": n.addr, "peer_addr": n.peer_addr, "slots": format_ranges(n.slots)}
                for n in self.nodes
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClusterConfig:
        """Build from the ``[cluster]`` table of a TOML file; problems raise ConfigError."""
        problems: list[str] = []
        epoch = d.get("epoch", 1)
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            problems.append(f"The cluster epoch must be an integer, not {epoch!r}.")
            epoch = 1
        raw_nodes = d.get("nodes", [])
        if not isinstance(raw_nodes, list):
            raise ConfigError(["[cluster] nodes must be a list of tables ([[cluster.nodes]])."])
        nodes: list[NodeSpec] = []
        for i, rn in enumerate(raw_nodes):
            node = _node_entry(rn, f"[[cluster.nodes]] #{i + 1}", f"Cluster node #{i + 1}", problems)
            if node is not None:
                nodes.append(node)
        extra: list[tuple[str, tuple[Range, ...]]] = []
        raw_slots = d.get("slots", {})
        if not isinstance(raw_slots, Mapping):
            problems.append("[cluster.slots] must map node ids to slot ranges.")
            raw_slots = {}
        for nid, text in raw_slots.items():
            try:
                extra.append((nid, tuple(_ranges(text))))
            except SlotRangeError as e:
                problems.append(f"[cluster.slots] {nid}: {e}")
        if problems:
            raise ConfigError(problems)
        return cls(tuple(nodes), epoch, tuple(extra))


def _node_entry(rn: Any, where: str, name: str, problems: list[str]) -> NodeSpec | None:
    """One ``[[cluster.nodes]]`` table as a NodeSpec, or None with its problems appended.

    Keys and types are checked by :func:`kvcore.tables.read_table` (an unknown key is named with
    the entry's place, ``[[cluster.nodes]] #2``); a key that is present with the wrong type is not
    reported a second time as missing.
    """
    if not isinstance(rn, Mapping):
        problems.append(f"{name} is not a table.")
        return None
    fields, bad = read_table(NodeSpec, rn, where)
    problems.extend(bad)
    nid = fields.get("id")
    if not nid:
        if "id" not in rn or nid == "":
            problems.append(f"{name} has no id (a non-empty string).")
        return None
    addr = fields.get("addr")
    if addr is None:
        if "addr" not in rn:
            problems.append(f"Node {nid!r} has no addr (its client HTTP address, HOST:PORT).")
        return None
    peer = fields.get("peer_addr")
    if peer is None:
        if "peer_addr" in rn:
            return None  # wrong type, reported
        try:
            peer = default_peer_addr(addr)
        except ValueError as e:
            problems.append(f"Node {nid!r}: {e}")
            return None
    try:
        ranges = tuple(_ranges(rn.get("slots", "")))
    except SlotRangeError as e:
        problems.append(f"Node {nid!r}: {e}")
        return None
    return NodeSpec(nid, addr, peer, ranges)


def _ranges(value: Any) -> list[Range]:
    if isinstance(value, str):
        return parse_ranges(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return parse_ranges(",".join(value))
    raise SlotRangeError(f"Slots must be a string like \"0-5460,5461-10922\", not {value!r}.")
