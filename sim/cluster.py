"""SimCluster: N storelab nodes on one SimPy environment, built from one seed.

Theory of operation
-------------------
``SimCluster(seed, n, config)`` builds a static cluster of ``n`` nodes (``n1`` … ``nN``) that
split the 16384 slots evenly, a :class:`~sim.network.SimNetwork`, and a :class:`~sim.trace.Trace`.
Every random stream derives from the seed (:mod:`sim.rand`): each node incarnation, the network,
each client. Same seed, same trace digest, in any process.

Scenario verbs act at simulated times: ``crash``, ``restart``, ``partition``, ``heal``,
``set_loss``, ``set_latency``, ``set_duplicate``, ``slow_node``, ``set_link``, ``hold``,
``release``. Each takes ``at=`` (absolute simulated time; default: now) and records itself in
:attr:`SimCluster.faults` and the trace when it fires, so a run reports its faults on the same
time axis as its operations.

A crash drops the node object (its memory: store, pending forwards, timers) and keeps its
``storage``; messages to it are dropped as ``down``; requests to it get no answer (the client
times out: outcome unknown). ``restart`` builds a new incarnation with a fresh random stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import simpy

from kvcore.config import ClusterConfig, NodeConfig, NodeSpec
from kvcore.messages import Reply
from kvcore.metrics import NodeStats
from kvcore.node import Node
from kvcore.runtime import MemoryStorage
from kvcore.slots import even_split
from sim.clients import History, SimClient, Workload
from sim.latency import Latency, LogNormal
from sim.network import Endpoint, SimNetwork, schedule_call
from sim.rand import stream
from sim.runtime import SimRuntime
from sim.trace import Trace


@dataclass
class Fault:
    """One scenario verb as it fired: when, what, on what."""

    time: float
    verb: str
    args: str
    end: float | None = None  # for faults that are later undone (heal, restart, ...)


@dataclass
class _Slot:
    """Everything the cluster keeps about one node id across incarnations."""

    node_id: str
    endpoint: Endpoint
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    runtime: SimRuntime | None = None
    incarnation: int = 0
    down_since: float | None = None
    downtime: float = 0.0
    #: counters of earlier incarnations, so totals survive crashes
    past_stats: list[NodeStats] = field(default_factory=list)


def sim_cluster_config(n: int, epoch: int = 1) -> ClusterConfig:
    ids = [f"n{i}" for i in range(1, n + 1)]
    split = even_split(ids)
    return ClusterConfig(
        tuple(NodeSpec(nid, f"{nid}.sim:7000", f"{nid}.sim:17000", tuple(split[nid])) for nid in ids),
        epoch,
    )


class SimCluster:
    def __init__(
        self,
        seed: int,
        n: int,
        config: NodeConfig | None = None,
        *,
        latency: Latency | None = None,
        codec: bool = True,
        keep_trace: bool = False,
        cluster: ClusterConfig | None = None,
        node_factory: Callable[[SimRuntime, NodeConfig, ClusterConfig], Any] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("a cluster has at least one node")
        self.seed = seed
        self.config = (config or NodeConfig()).validate()
        self.cluster_config = cluster or sim_cluster_config(n)
        self.env = simpy.Environment()
        self.trace = Trace(keep=keep_trace)
        self.net = SimNetwork(
            self.env, stream(seed, "network"), self.trace,
            latency or LogNormal(0.001, 0.5), codec=codec,
        )
        self.history = History()
        self.clients: list[SimClient] = []
        self.faults: list[Fault] = []
        self._node_factory = node_factory or (lambda rt, cfg, cl: Node(rt, cfg, cl))
        self._slots: dict[str, _Slot] = {}
        for spec in self.cluster_config.nodes:
            slot = _Slot(spec.id, self.net.attach(spec.id, spec.peer_addr))
            self._slots[spec.id] = slot
            self._boot(slot)

    # --- nodes -------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        return list(self._slots)

    def node(self, node_id: str) -> Any:
        """The live node object (None while crashed)."""
        return self._slots[node_id].endpoint.node

    def nodes(self) -> list[Any]:
        return [s.endpoint.node for s in self._slots.values() if s.endpoint.node is not None]

    def alive(self) -> list[str]:
        return [nid for nid, s in self._slots.items() if s.endpoint.node is not None]

    def is_up(self, node_id: str) -> bool:
        return self._slots[node_id].endpoint.node is not None

    def _boot(self, slot: _Slot) -> None:
        slot.incarnation += 1
        rt = SimRuntime(
            self.env, self.net, self.trace, slot.node_id,
            stream(self.seed, "node", slot.node_id, slot.incarnation), slot.storage,
        )
        node = self._node_factory(rt, self.config, self.cluster_config)
        slot.runtime = rt
        slot.endpoint.node = node
        slot.endpoint.stats = node.stats
        node.start()

    def submit(self, node_id: str, op: Any, reply: Callable[[Reply], None]) -> bool:
        """Hand a client operation to a node now; False (and no reply ever) if it is down."""
        node = self._slots[node_id].endpoint.node
        if node is None:
            self.trace.record((self.env.now, "refused", node_id))
            return False
        node.on_client_request(op, reply)
        return True

    # --- scenario verbs ----------------------------------------------------------------------

    def _at(self, at: float | None, verb: str, args: str, fn: Callable[[], None]) -> None:
        def fire(_e: Any = None) -> None:
            self.faults.append(Fault(self.env.now, verb, args))
            self.trace.record((self.env.now, "fault", verb, args))
            fn()

        if at is None or at <= self.env.now:
            fire()
        else:
            schedule_call(self.env, at - self.env.now, fire)

    def crash(self, node_id: str, at: float | None = None) -> None:
        slot = self._slots[node_id]

        def do() -> None:
            if slot.endpoint.node is None:
                return
            assert slot.runtime is not None
            slot.runtime.alive = False
            slot.past_stats.append(slot.endpoint.node.stats)
            slot.endpoint.node = None
            slot.endpoint.stats = NodeStats()
            slot.down_since = self.env.now

        self._at(at, "crash", node_id, do)

    def restart(self, node_id: str, at: float | None = None) -> None:
        slot = self._slots[node_id]

        def do() -> None:
            if slot.endpoint.node is not None:
                return
            if slot.down_since is not None:
                slot.downtime += self.env.now - slot.down_since
                self._close_fault("crash", node_id)
                slot.down_since = None
            self._boot(slot)

        self._at(at, "restart", node_id, do)

    def partition(
        self, a: Iterable[str], b: Iterable[str] | None = None, *, oneway: bool = False, at: float | None = None
    ) -> None:
        sa = sorted(a)
        sb = sorted(b) if b is not None else None
        desc = f"{','.join(sa)} | {','.join(sb) if sb is not None else 'rest'}" + (" oneway" if oneway else "")
        self._at(at, "partition", desc, lambda: self.net.partition(sa, sb, oneway))

    def heal(self, at: float | None = None) -> None:
        def do() -> None:
            self.net.heal()
            self._close_fault("partition", None)

        self._at(at, "heal", "", do)

    def set_loss(self, probability: float, at: float | None = None) -> None:
        self._at(at, "set_loss", f"{probability:g}", lambda: self.net.set_loss(probability))

    def set_duplicate(self, probability: float, at: float | None = None) -> None:
        self._at(at, "set_duplicate", f"{probability:g}", lambda: self.net.set_duplicate(probability))

    def set_latency(self, latency: Latency, at: float | None = None) -> None:
        self._at(at, "set_latency", repr(latency), lambda: self.net.set_latency(latency))

    def slow_node(self, node_id: str, extra: Latency, at: float | None = None) -> None:
        self._at(at, "slow_node", f"{node_id} +{extra!r}", lambda: self.net.slow_node(node_id, extra))

    def set_link(self, src: str, dst: str, *, latency: Latency | None = None, loss: float = 0.0,
                 both_ways: bool = True, at: float | None = None) -> None:
        self._at(at, "set_link", f"{src}->{dst}",
                 lambda: self.net.set_link(src, dst, latency, loss, both_ways))

    def clear_links(self, at: float | None = None) -> None:
        self._at(at, "clear_links", "", self.net.clear_links)

    def hold(self, src: str | None = None, dst: str | None = None, at: float | None = None) -> None:
        self._at(at, "hold", f"{src or '*'}->{dst or '*'}", lambda: self.net.hold(src, dst))

    def release(self, at: float | None = None) -> None:
        self._at(at, "release", "", self.net.release)

    def _close_fault(self, verb: str, args: str | None) -> None:
        for f in reversed(self.faults):
            if f.verb == verb and f.end is None and (args is None or f.args == args):
                f.end = self.env.now
                if args is not None:
                    return

    # --- clients and running -----------------------------------------------------------------

    def add_clients(
        self,
        count: int,
        workload: Workload | None = None,
        *,
        link: Latency | None = None,
        targets: Sequence[str | None] | None = None,
    ) -> list[SimClient]:
        """Start ``count`` clients; each sends to a random live-or-not node unless targeted."""
        w = workload or Workload()
        out = []
        for i in range(count):
            idx = len(self.clients)
            c = SimClient(
                self.env, idx, stream(self.seed, "client", idx), self.history, self.trace,
                lambda: self.ids, self.submit, w, link,
                target=targets[i] if targets is not None else None,
            )
            self.clients.append(c)
            out.append(c)
        return out

    def run(self, until: float | None = None) -> None:
        """Run to ``until`` (simulated seconds), or until every client has finished."""
        if until is not None:
            self.env.run(until=until)
            return
        procs = [c.process for c in self.clients]
        if not procs:
            raise ValueError("run() without until needs clients to wait for")
        self.env.run(until=self.env.all_of(procs))

    @property
    def now(self) -> float:
        return float(self.env.now)

    def digest(self) -> str:
        return self.trace.digest()

    # --- observation -------------------------------------------------------------------------

    def all_stats(self) -> list[NodeStats]:
        """Counters of every incarnation of every node."""
        out: list[NodeStats] = []
        for s in self._slots.values():
            out.extend(s.past_stats)
            if s.endpoint.node is not None:
                out.append(s.endpoint.node.stats)
        return out

    def messages_by_kind(self) -> dict[str, tuple[int, int]]:
        """kind -> (messages sent, bytes sent), summed over nodes and incarnations."""
        out: dict[str, list[int]] = {}
        for st in self.all_stats():
            for k, c in st.sent.items():
                out.setdefault(k, [0, 0])[0] += c
            for k, b in st.sent_bytes.items():
                out.setdefault(k, [0, 0])[1] += b
        return {k: (v[0], v[1]) for k, v in sorted(out.items())}

    def downtime(self) -> dict[str, float]:
        out = {}
        for nid, s in self._slots.items():
            d = s.downtime + (self.env.now - s.down_since if s.down_since is not None else 0.0)
            if d:
                out[nid] = d
        return out
