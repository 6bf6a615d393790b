"""SimCluster: N storelab nodes on one SimPy environment, built from one seed.

Theory of operation
-------------------
``SimCluster(seed, n, config)`` builds a static cluster of ``n`` nodes (``n1`` … ``nN``) that
split the 16384 slots evenly, a :class:`~sim.network.SimNetwork`, and a :class:`~sim.trace.Trace`.
Every random stream derives from the seed (:mod:`sim.rand`): each node incarnation, the network,
each client. Same seed, same trace digest, in any process.

Scenario verbs act at simulated times: ``crash``, ``power_loss``, ``restart``, ``partition``, ``heal``,
``set_loss``, ``set_latency``, ``set_duplicate``, ``slow_node``, ``set_link``, ``hold``,
``release``, ``skew_clock`` and ``restore_clock`` (a node's clock runs fast or slow:
:mod:`sim.runtime`'s "Clock skew"), and the membership verbs ``add_node`` (a new node joins through the seeds) and
``leave`` (graceful). Each takes ``at=`` (absolute simulated time; default: now) and records
itself in :attr:`SimCluster.faults` and the trace when it fires, so a run reports its faults on
the same time axis as its operations.

Clients (:meth:`SimCluster.add_clients`) pick each operation's node among
:meth:`SimCluster.client_nodes`: every node the cluster has had, or, in a replicated cluster, the
members of the newest configuration a live node knows committed (a removed voter is no choice
once its removal committed, an added node is one once its addition committed).

Membership is SWIM gossip (:mod:`kvcore.membership`), configured by ``swim=``. With
``join="static"`` (the default) every node starts from the static cluster configuration (all
members known, slots split evenly); with ``join="seeds"`` only the first ``seeds`` nodes form
the initial cluster (owning all the slots between them) and every other node joins through them
at start, owning nothing, as a real deployment grows.

Ground truth for measurements: :attr:`SimCluster.truth` holds each node's real condition (up,
down, left) and :attr:`SimCluster.member_events` every membership event every node observed,
``(time, observer, event, subject, incarnation)``, from which :mod:`sim.measure` derives
convergence curves and false positives.

A crash drops the node object (its memory: store, pending forwards, timers) and keeps what its
``storage`` (a :class:`~sim.storage.SimStorage`) had synced: unsynced writes are lost. With
``sync_time=None`` (the default) a sync is instantaneous and kvcore syncs every durable write,
so nothing durable is lost; ``sync_time="const:0.002"`` makes syncs take simulated time (group
commit; see :mod:`sim.storage`). Messages to a crashed node are dropped as ``down``; requests
to it get no answer (the client times out: outcome unknown). ``power_loss`` crashes several nodes
at once. ``restart`` builds a new incarnation with a fresh random stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import simpy

from checker.raftprops import RaftProperties
from kvcore.config import ClusterConfig, NodeConfig, NodeSpec
from kvcore.membership import Member, MemberEvent, SwimConfig
from kvcore.membership.member import UP
from kvcore.messages import Reply
from kvcore.metrics import NodeStats
from kvcore.node import Node
from kvcore.raft.messages import ConfState
from kvcore.replica import ReplicaConfig
from kvcore.slotmove import Fix, MoveSlots
from kvcore.slots import even_split
from sim.clients import History, SimClient, Workload
from sim.latency import Latency, LogNormal, parse_latency
from sim.network import Endpoint, SimEnvironment, SimNetwork, schedule_call
from sim.raftcheck import Figure3Feed
from sim.rand import stream
from sim.replicas import after_change, ask_leader, committed_conf, mend_hints
from sim.runtime import Clock, SimRuntime, check_rate, rate_of, read_clock, retime
from sim.slotmove import drive
from sim.storage import SimStorage, SyncStats
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
    storage: SimStorage = field(default_factory=SimStorage)
    runtime: SimRuntime | None = None
    incarnation: int = 0
    down_since: float | None = None
    downtime: float = 0.0
    #: counters of earlier incarnations, so totals survive crashes
    past_stats: list[NodeStats] = field(default_factory=list)
    #: the node's clock (skew_clock; sim.runtime.Clock): the machine's, so a restarted
    #: incarnation reads it on, at its rate (None: never skewed, the simulated time)
    clock: Clock | None = None


def sim_spec(nid: str, slots: tuple[tuple[int, int], ...] = ()) -> NodeSpec:
    """A sim node's addresses: ``{id}.sim:7000`` for clients, ``{id}.sim:17000`` for peers."""
    return NodeSpec(nid, f"{nid}.sim:7000", f"{nid}.sim:17000", slots)


def sim_cluster_config(n: int, epoch: int = 1, first: int = 1) -> ClusterConfig:
    ids = [f"n{i}" for i in range(first, first + n)]
    split = even_split(ids)
    return ClusterConfig(tuple(sim_spec(nid, tuple(split[nid])) for nid in ids), epoch)


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
        swim: SwimConfig | None = None,
        join: str = "static",
        seeds: int = 3,
        observe: bool = True,
        node_factory: Callable[..., Any] | None = None,
        sync_time: Latency | str | None = None,
        replicas: int = 1,
        replica: ReplicaConfig | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("a cluster has at least one node")
        if replicas != 1 and replicas != n:
            raise ValueError(f"replicas must be 1 (the unreplicated store) or the number of nodes ({n}): "
                             "one Raft group over all nodes; several groups over more nodes come next")
        if replicas > 1 and join != "static":
            raise ValueError("a replicated cluster starts static (join='static')")
        #: 1: today's store; n: one Raft group of every node serving the whole key space
        self.replicas = replicas
        self.replica_config = replica or ReplicaConfig()
        #: Figure 3's properties, checked on every Ready of a replicated run (None: R = 1)
        self.raft_check: RaftProperties | None = RaftProperties() if replicas > 1 else None
        if join not in ("static", "seeds"):
            raise ValueError(f"join must be 'static' or 'seeds', not {join!r}")
        self.seed = seed
        #: how long a storage sync takes (None: no time; sim.storage)
        self.sync_time = parse_latency(sync_time) if isinstance(sync_time, str) else sync_time
        self.config = (config or NodeConfig()).validate()
        self.swim = (swim or SwimConfig.lan()).validate()
        self.join = join
        self.observe = observe
        self.cluster_config = cluster or sim_cluster_config(n)
        n_seeds = max(1, min(seeds, len(self.cluster_config.nodes)))
        seed_specs = self.cluster_config.nodes[:n_seeds]
        #: the static configuration the seed nodes (or, with join="static", all nodes) start from
        self.core_config = (
            self.cluster_config if join == "static"
            else ClusterConfig(
                tuple(NodeSpec(s.id, s.addr, s.peer_addr, tuple(even_split([x.id for x in seed_specs])[s.id]))
                      for s in seed_specs),
                self.cluster_config.epoch,
            )
        )
        self.core_ids = {s.id for s in self.core_config.nodes}
        #: where joining nodes go: the seed nodes' peer addresses
        self.seed_addrs = ["@" + s.peer_addr for s in seed_specs]
        self.truth: dict[str, str] = {}
        #: ground-truth log for sim.measure: (time, node, "up" | "down" | "left") appended at
        #: every change of ``truth`` (via _set_truth), so measurements can ask "was it up at t?"
        self.truth_log: list[tuple[float, str, str]] = []
        self.member_events: list[tuple[float, str, str, str, int]] = []
        self.env = SimEnvironment()
        self.trace = Trace(keep=keep_trace)
        self.net = SimNetwork(
            self.env, stream(seed, "network"), self.trace,
            latency or LogNormal(0.001, 0.5), codec=codec,
        )
        self.history = History()
        self.clients: list[SimClient] = []
        self.faults: list[Fault] = []
        self._node_factory = node_factory or self._default_node
        self._slots: dict[str, _Slot] = {}
        self._specs: dict[str, NodeSpec] = {}
        #: joined nodes restarted with ``seeds=False``: they rejoin from what their storage kept
        self._no_seeds: set[str] = set()
        #: the newest committed configuration seen, with its index (client_nodes): kept while no
        #: live node runs the group (a power loss), so the clients' choice does not fall back
        self._members: tuple[int, ConfState] | None = None
        #: client_nodes' answer for the configuration at that index
        self._client_nodes: tuple[int, list[str]] = (-1, [])
        self._hints_lock: simpy.Resource | None = None
        for spec in self.cluster_config.nodes:
            self._add_slot(spec)

    def _default_node(self, rt: SimRuntime, spec: NodeSpec) -> Node:
        if self.replicas > 1:
            node = Node(rt, self.config, self.core_config if spec.id in self.core_ids else None,
                        swim=self.swim, replica=self.replica_config,
                        raft_observer=Figure3Feed(self.raft_check) if self.raft_check is not None else None,
                        seeds=() if spec.id in self.core_ids else self.seed_addrs,
                        addr=spec.addr, peer_addr=spec.peer_addr)
            if node.replica is None:  # a first start: every core node forms the one group
                node.form_group(sorted(self.core_ids) if spec.id in self.core_ids else [])
            return node
        if spec.id in self.core_ids:
            return Node(rt, self.config, self.core_config, swim=self.swim)
        seeds = () if spec.id in self._no_seeds else self.seed_addrs
        return Node(rt, self.config, None, swim=self.swim, seeds=seeds,
                    addr=spec.addr, peer_addr=spec.peer_addr)

    def _add_slot(self, spec: NodeSpec) -> None:
        storage = (SimStorage() if self.sync_time is None
                   else SimStorage(self.env, self.sync_time, stream(self.seed, "sync", spec.id)))
        slot = _Slot(spec.id, self.net.attach(spec.id, spec.peer_addr), storage)
        self._slots[spec.id] = slot
        self._specs[spec.id] = spec
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

    def client_nodes(self) -> list[str]:
        """The nodes a client picks among (:class:`~sim.clients.SimClient`), in the order of :attr:`ids`.

        In a replicated cluster, the members, voters and learners, of the newest configuration a
        live node knows committed (:func:`sim.replicas.committed_conf`): what a client told the
        cluster's members would know, as Jepsen's member nemesis tells its clients. A node that
        a configuration change added becomes one once its addition committed; a removed one
        stops being one once its removal committed, before it leaves. A crashed or cut-off
        member stays one: only its removal makes it no member. While the group keeps the nodes
        it was formed with, those are every node, in the order of :attr:`ids`, so the clients
        pick exactly as they did before they followed the members.

        Otherwise (unreplicated, or while no live node runs the group and none was seen yet):
        every node the cluster has had, :attr:`ids`, live or not, left or not.
        """
        if self.replicas > 1:
            newest = committed_conf(self)
            if newest is not None and (self._members is None or newest[0] > self._members[0]):
                self._members = newest
        if self._members is None:
            return self.ids
        at, conf = self._members
        if self._client_nodes[0] != at:  # (asked per operation: the list changes with the conf only)
            members = [nid for nid in self._slots if nid in conf.voters or nid in conf.learners]
            self._client_nodes = (at, members or self.ids)
        return self._client_nodes[1]

    def alive(self) -> list[str]:
        return [nid for nid, s in self._slots.items() if s.endpoint.node is not None]

    def is_up(self, node_id: str) -> bool:
        return self._slots[node_id].endpoint.node is not None

    def _boot(self, slot: _Slot) -> None:
        slot.incarnation += 1
        rt = SimRuntime(
            self.env, self.net, self.trace, slot.node_id,
            stream(self.seed, "node", slot.node_id, slot.incarnation), slot.storage, slot.clock,
        )
        node = self._node_factory(rt, self._specs[slot.node_id])
        slot.runtime = rt
        slot.endpoint.node = node
        slot.endpoint.stats = node.stats
        self._set_truth(slot.node_id, "up")
        if self.observe and hasattr(node, "membership"):
            observer = slot.node_id
            log = self.member_events
            env = self.env

            def on_event(event: MemberEvent, subject: str, m: Member, observer: str = observer) -> None:
                log.append((env.now, observer, event, subject, m.incarnation))

            node.membership.listeners.append(on_event)
        node.start()

    def _set_truth(self, node_id: str, state: str) -> None:
        """Record a node's real condition now, in ``truth`` and the ``truth_log`` (sim.measure)."""
        self.truth[node_id] = state
        self.truth_log.append((float(self.env.now), node_id, state))

    def submit(self, node_id: str, op: Any, reply: Callable[[Reply], None]) -> bool:
        """Hand a client operation to a node now; False (and no reply ever) if it is down."""
        node = self._slots[node_id].endpoint.node
        if node is None:
            self.trace.record((self.env.now, "refused", node_id))
            return False
        node.on_client_request(op, reply)
        return True

    # --- scenario verbs ----------------------------------------------------------------------

    def _at(self, at: float | None, verb: str, args: str, fn: Callable[[], object]) -> None:
        """Apply the fault ``fn`` (its result, if any, is ignored) at simulated time ``at`` (now
        if None or past), recording it as ``verb args``."""
        def fire(_e: Any = None) -> None:
            self.faults.append(Fault(self.env.now, verb, args))
            self.trace.record((self.env.now, "fault", verb, args))
            fn()

        if at is None or at <= self.env.now:
            fire()
        else:
            schedule_call(self.env, at - self.env.now, fire)

    def storage(self, node_id: str) -> SimStorage:
        """A node's storage (it outlives the node's incarnations)."""
        return self._slots[node_id].storage

    def sync_stats(self) -> SyncStats:
        """Every node's storage counters summed (``max_group``: the largest of them)."""
        out = SyncStats()
        for slot in self._slots.values():
            st = slot.storage.stats
            out.sync_calls += st.sync_calls
            out.flushes += st.flushes
            out.writes_flushed += st.writes_flushed
            out.max_group = max(out.max_group, st.max_group)
            out.crashes += st.crashes
            out.lost_writes += st.lost_writes
        return out

    def crash(self, node_id: str, at: float | None = None) -> None:
        """The node's process dies: its memory is gone, and its storage keeps only what was
        synced (with the default sync time, every durable write: kvcore syncs each one)."""
        self._at(at, "crash", node_id, lambda: self._crash_now(node_id))

    def power_loss(self, node_ids: Iterable[str], at: float | None = None) -> None:
        """The power fails under the nodes at once: each live one crashes and loses every write
        its storage had not synced (one Fault ``powerloss``; ``restart`` brings each back)."""
        ids = sorted(node_ids)
        for nid in ids:
            if nid not in self._slots:
                raise ValueError(f"unknown node {nid!r}")

        def do() -> None:
            for nid in ids:
                self._crash_now(nid)

        self._at(at, "powerloss", ",".join(ids), do)

    def _crash_now(self, node_id: str) -> None:
        slot = self._slots[node_id]
        if slot.endpoint.node is None:
            return
        assert slot.runtime is not None
        slot.runtime.alive = False
        slot.storage.crash()
        slot.past_stats.append(slot.endpoint.node.stats)
        slot.endpoint.node = None
        slot.endpoint.stats = NodeStats()
        slot.down_since = self.env.now
        self._set_truth(node_id, "down")

    def add_node(self, node_id: str | None = None, at: float | None = None) -> str:
        """A new, empty node joins through the seeds when ``at`` comes; returns its id."""
        nid = node_id or f"n{len(self._slots) + 1}"
        if nid in self._slots:
            raise ValueError(f"node {nid} already exists")
        spec = sim_spec(nid)
        self._specs[nid] = spec
        self.net.addresses[spec.peer_addr] = nid

        def do() -> None:
            self._add_slot(spec)

        self._at(at, "add_node", nid, do)
        return nid

    def leave(self, node_id: str, at: float | None = None, linger: float = 1.0) -> None:
        """Graceful leave: the node spreads its departure, gossips for ``linger`` s, then stops."""
        slot = self._slots[node_id]

        def do() -> None:
            node = slot.endpoint.node
            if node is None:
                return
            node.membership.leave()
            self._set_truth(node_id, "left")

            def gone(_e: Any = None) -> None:
                if slot.endpoint.node is node:
                    assert slot.runtime is not None
                    node.stop()
                    slot.runtime.alive = False
                    slot.past_stats.append(node.stats)
                    slot.endpoint.node = None
                    slot.endpoint.stats = NodeStats()

            schedule_call(self.env, linger, gone)

        self._at(at, "leave", node_id, do)

    def restart(self, node_id: str, at: float | None = None, *, seeds: bool = True) -> None:
        """Start a crashed node again with its storage. A node that joined through seeds is
        given them again, unless ``seeds`` is False: it then rejoins through the members its
        storage kept (as ``python -m realnet.node --data-dir`` without ``--seeds``)."""
        slot = self._slots[node_id]

        def do() -> None:
            if slot.endpoint.node is not None:
                return
            if seeds:
                self._no_seeds.discard(node_id)
            else:
                self._no_seeds.add(node_id)
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

    def skew_clock(self, node_id: str, rate: float, at: float | None = None, until: float | None = None) -> None:
        """From ``at``, ``node_id``'s clock runs at ``rate`` node-seconds per simulated second
        (1.5: fast, 0.5: slow), and with it the node's timers: its Raft ticks, SWIM periods and
        timeouts (:meth:`sim.runtime.SimRuntime.set_clock_rate`). The rate is the machine's: an
        incarnation started meanwhile runs at it too. ``until``: :meth:`restore_clock` then
        (the clock keeps the offset it gathered). Recorded as a ``skew_clock`` fault, whose end
        is set when the clock is restored."""
        if node_id not in self._slots:
            raise ValueError(f"unknown node {node_id!r}")
        check_rate(rate)  # (now, not when it fires)
        if until is not None and at is not None and until < at:
            raise ValueError(f"the clock skew ends ({until}) before it starts ({at})")
        self._at(at, "skew_clock", f"{node_id} x{rate:g}", lambda: self._set_clock_rate(node_id, rate))
        if until is not None:
            self.restore_clock(node_id, at=until)

    def restore_clock(self, node_id: str, at: float | None = None) -> None:
        """``node_id``'s clock runs true again (rate 1.0), keeping the offset it gathered: a
        monotonic clock never jumps. Ends the node's ``skew_clock`` fault."""
        def do() -> None:
            self._set_clock_rate(node_id, 1.0)
            for f in reversed(self.faults):
                if f.verb == "skew_clock" and f.end is None and f.args.split(" ")[0] == node_id:
                    f.end = self.env.now
                    break

        self._at(at, "restore_clock", node_id, do)

    def _set_clock_rate(self, node_id: str, rate: float) -> None:
        slot = self._slots[node_id]
        slot.clock = retime(slot.clock, self.env.now, rate)
        if slot.runtime is not None and slot.endpoint.node is not None:
            slot.runtime.set_clock_rate(rate)  # the same clock: read the same, retimed the same

    def clock_offset(self, node_id: str) -> float:
        """How far ``node_id``'s clock is ahead of the simulated time now (negative: behind), in
        seconds (0.0: never skewed), whether the node is up or down."""
        now = self.env.now
        return read_clock(self._slots[node_id].clock, now) - now

    def clock_rate(self, node_id: str) -> float:
        """``node_id``'s clock rate now (node-seconds per simulated second)."""
        return rate_of(self._slots[node_id].clock)

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

    # --- resharding (live slot migration) ----------------------------------------------------
    #
    # Every verb below drives the one slot-move procedure (kvcore.slotmove) from a SimPy process
    # (sim.slotmove.drive), in the same order as ``storelab cluster`` over HTTP.

    def reshard(self, slots: Iterable[int], target: str, *, at: float | None = None,
                batch: int = 20, retry_delay: float = 0.2, max_failures: int = 50) -> None:
        """Move ``slots`` to ``target`` live, ``batch`` keys per slot per round, as one move.

        The source of each slot is its owner in the target's view. A failed round (loss,
        timeout) is retried after ``retry_delay`` times the failures so far (at most 1 s); a
        crash of the source or the target, a refusal, or more than ``max_failures`` failed
        rounds stops it, recorded as a ``reshard_aborted`` fault (the open migration stays, as
        it would after a crash of redis-cli, until ``fix``). The target claims every slot at
        once; the move is over when every live node's map names it.
        """
        self._slots_move()
        todo = sorted(set(slots))
        desc = f"{len(todo)} slots -> {target}"
        self._at(at, "reshard", desc, lambda: self._spawn(self._reshard(todo, target, batch, retry_delay, max_failures)))

    def rebalance(self, weights: dict[str, float] | None = None, *, use_empty: bool = True,
                  at: float | None = None, batch: int = 20) -> None:
        """Plan (kvcore.rebalance) from a live node's view and carry out the moves."""
        self._slots_move()
        desc = ",".join(f"{k}={v:g}" for k, v in sorted((weights or {}).items()))
        self._at(at, "rebalance", desc, lambda: self._spawn(self._rebalance(weights, use_empty, batch)))

    def remove_node(self, node_id: str, *, at: float | None = None, batch: int = 20) -> None:
        """Drain ``node_id``'s slots to the others (weight 0), then it leaves gracefully."""
        self._slots_move()

        def run() -> Any:
            ok = yield from self._rebalance({node_id: 0.0}, False, batch)
            if ok:
                self.leave(node_id)

        self._at(at, "remove_node", node_id, lambda: self._spawn(run()))

    def _rebalance(self, weights: dict[str, float] | None, use_empty: bool, batch: int) -> Any:
        from kvcore.rebalance import plan_rebalance

        view = self.nodes()[0]
        members = [*view.membership.live_members(), view.membership.me]
        ids = sorted(m.node for m in members if m.state in UP)
        moves = plan_rebalance(view.slot_map.assignment(), ids, weights, use_empty)
        for mv in moves:
            slots = [s for lo, hi in mv.slots for s in range(lo, hi + 1)]
            ok = yield from self._reshard(slots, mv.target, batch, 0.2, 50, mv.source)
            if not ok:
                return False
        return True

    def fix(self, at: float | None = None, batch: int = 20, *, assign_unowned: bool = False) -> None:
        """Close every migration left open (by a crash of the source, the target or the move
        itself), as ``storelab cluster fix`` does (kvcore.slotmove): resume a move whose source
        still owns the slot and whose ends are both up, clear the marks of a move that is over
        or stale, roll back on the source when the target left, move a slot whose keys a live
        node holds without owning it from its live owner to that node; with ``assign_unowned``,
        give slots without a live owner one. What it cannot fix is recorded as a ``fix_unfixed``
        fault per problem. The view is the first live node's map. First, a live node marked lost
        by a live member's Raft traffic though that member runs no group (a stray or forged
        frame) has the mark taken back (a ``fix_cleared_lost`` fault).

        On a replicated cluster, where no slot or key moves, it mends the slot map's hints
        instead, as ``storelab cluster fix`` does there (:func:`sim.replicas.mend_hints`: the
        live voters claim the slots whose hint names a non-voter or nobody, evenly)."""
        if self.replicas > 1:
            self._at(at, "fix", "hints", lambda: self._spawn(mend_hints(self)))
            return
        self._slots_move()
        def run() -> Any:
            # (a node that is leaving gossips for its linger, but its map is no view to fix by)
            up = [nid for nid in self.alive() if self.truth.get(nid) != "left"]
            if not up:
                return
            self._clear_stray_marks(up)
            _, problems = yield from drive(self, Fix(assign_unowned), up[0], batch, 50, 0.2)
            for p in problems:
                self.faults.append(Fault(self.env.now, "fix_unfixed", p))

        self._at(at, "fix", "assign-unowned" if assign_unowned else "", lambda: self._spawn(run()))

    def _clear_stray_marks(self, up: list[str]) -> None:
        """A live node marked lost (503 ``lost_state``) by a live member's Raft traffic while
        that member runs no group (a stray or forged frame): the mark is taken back, as
        ``storelab cluster fix`` takes it back (``Node.clear_lost_state``)."""
        for nid in up:
            lost = self.node(nid).lost_group
            sender = self.node(lost["from"]) if lost is not None and lost["from"] in self._slots else None
            if sender is not None and sender.replica is None:
                self.node(nid).clear_lost_state(sender.id)
                self.faults.append(Fault(self.env.now, "fix_cleared_lost", f"{nid} (marked by {sender.id})"))

    def _slots_move(self) -> None:
        if self.replicas > 1:
            raise ValueError("slots do not move in a replicated cluster: its one Raft group serves every "
                             "slot (use add_replica / remove_replica to change the group)")

    # --- a replicated group's verbs (sim.replicas) ------------------------------------------------

    def transfer_leader(self, to: str, at: float | None = None) -> None:
        """Ask the group's leader to hand leadership to ``to`` (thesis §3.10)."""
        self._at(at, "transfer_leader", to,
                 lambda: self._spawn(ask_leader(self, "transfer_leader", lambda n: n.transfer_leader(to))))

    def add_replica(self, node_id: str | None = None, at: float | None = None) -> str:
        """A new node joins, and the leader adds it as a learner, promoted once caught up; once
        it votes, it takes its share of the slot map's hints (:func:`sim.replicas.mend_hints`)."""
        nid = self.add_node(node_id, at)

        def run() -> Any:
            if (yield from ask_leader(self, "add_learner", lambda n: n.add_learner(nid))):
                yield from after_change(self, lambda conf: nid in conf.voters, f"{nid} to vote")

        self._at(at, "add_learner", nid, lambda: self._spawn(run()))
        return nid

    def remove_replica(self, node_id: str, at: float | None = None) -> None:
        """The leader removes ``node_id`` from the group by a configuration change (§4.1); once
        it is committed, the voters take over the slot map's hints that name the node
        (:func:`sim.replicas.mend_hints`)."""
        def run() -> Any:
            if (yield from ask_leader(self, "remove_voter", lambda n: n.remove_voter(node_id))):
                yield from after_change(self, lambda conf: node_id not in conf.voters and node_id not in conf.learners,
                                        f"{node_id}'s removal to commit")

        self._at(at, "remove_voter", node_id, lambda: self._spawn(run()))

    def hints_lock(self) -> simpy.Resource:
        """One mend of the slot map's hints at a time (:func:`sim.replicas.mend_hints`)."""
        if self._hints_lock is None:
            self._hints_lock = simpy.Resource(self.env, capacity=1)
        return self._hints_lock

    def _spawn(self, gen: Any) -> None:
        self.env.process(gen)

    def _reshard(self, slots: list[int], target: str, batch: int, retry_delay: float, max_failures: int,
                 source: str | None = None) -> Any:
        """One move (kvcore.slotmove.MoveSlots) driven to its end; False (and a
        ``reshard_aborted`` fault) when it stopped."""
        ok, problems = yield from drive(self, MoveSlots(target, tuple(slots), source), target, batch,
                                        max_failures, retry_delay)
        if not ok:
            self.faults.append(Fault(self.env.now, "reshard_aborted", problems[0] if problems else "stopped"))
        return ok

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
        """Start ``count`` clients; each sends each operation to a random node of
        :meth:`client_nodes` (live or not), unless targeted."""
        w = workload or Workload()
        out = []
        for i in range(count):
            idx = len(self.clients)
            c = SimClient(
                self.env, idx, stream(self.seed, "client", idx), self.history, self.trace,
                self.client_nodes, self.submit, w, link,
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
