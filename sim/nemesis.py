"""The nemesis: seeded fault schedules for a SimCluster, and the evidence that each fault fired.

Theory of operation
-------------------
A nemesis (Jepsen's name for the process that breaks things) is a list of *packages*, one per
kind of fault. Given the cluster's node ids and a time window, each package draws a schedule
from its own random stream, ``sim.rand.stream(seed, "nemesis", package.name)``: the same seed
gives the same faults in any process, and adding a package does not change the others'
schedules. A schedule alternates a quiet interval and a fault (Jepsen's start/stop cycle), so
the faults of one package never overlap; faults of different packages may.

=================  ===========================================================================
kind               one fault
=================  ===========================================================================
``partition``      a random minority (1 to (n-1)//2 nodes) is cut from the majority, both ways
``bridge``         two halves that share one node: messages between the halves are dropped, the
                   bridge node talks to both (Jepsen's ``bridge``; needs 3 nodes)
``oneway``         messages from a random minority to the rest are dropped; the other way works
``partial``        a random node sees only one other (both ways): the partial partition that
                   took down a Raft cluster in Cloudflare's 2020 outage (needs 3 nodes)
``crash``          a random node crashes and restarts after a random down time: it loses its
                   memory and keeps its durable storage (ARCHITECTURE.md's failure model)
``powerloss``      the power fails: all nodes at once (half the faults) or one random node crash
                   together, each losing every write its storage had not synced
                   (:mod:`sim.storage`), and restart when the fault ends
``loss``           message loss rises to a random 10-50 %, then falls back
``duplicate``      a random 10-50 % of messages are delivered twice, then none again
``latency``        the network's latency becomes a log-normal with a 20-300 ms median (its
                   spread reorders messages: two sent 1 ms apart often overtake each other)
``slow``           one random node gets an extra exponential delay (mean 50-500 ms) on every
                   message it sends or receives
``reshard``        a random slot that holds keys moves live to a random other node (the
                   cluster's ``reshard`` verb), unless a move is still open; if the move was
                   aborted (a crash of its source or target), ``fix`` finishes it when the fault
                   ends
``clock``          1 to n-1 random nodes' clocks run fast or slow, each at a rate drawn
                   log-uniformly from 0.5-2 (Jepsen's clock nemesis, as drift): the node's
                   ``now()`` and every timer it sets (Raft ticks, SWIM periods, timeouts) run at
                   that rate (:meth:`~sim.cluster.SimCluster.skew_clock`); when the fault ends
                   they run true again, keeping the offset they gathered. Its ``param`` is the
                   spread, the fastest clock's rate over the slowest's (true clocks count as
                   1.0): LEASE reads (``--read-mode lease``) are linearizable only while it stays
                   within election_tick / (election_tick - lease_drift_ticks), 10/9 by default
``member``         a replicated group's membership changes (Jepsen's member nemesis): a random
                   voter (the leader too) is removed by a configuration change, and when the
                   fault ends a new node joins as a learner, promoted once caught up, and the
                   removed one leaves if its removal committed (what ``storelab cluster
                   remove-node`` and ``add-node`` do); never below two voters. The clients
                   pick among the members (:meth:`~sim.cluster.SimCluster.client_nodes`): not
                   the removed node once its removal committed, the new one once its addition
                   did. Faults of other kinds still aim at the nodes drawn in the plan, removed
                   ones included
=================  ===========================================================================

The three partition flavours are one package (one partition at a time, drawn among the flavours
asked for). ``none`` is no fault; ``network`` means every network kind; ``all`` adds ``crash``;
``reshard`` is not in ``all`` (it changes the cluster's layout, not its health), nor is
``powerloss`` (it takes the whole cluster down), nor ``member``, nor ``clock`` (it came after
``all`` and ``raft`` had digests people compare; with SAFE reads a skewed clock costs
availability, not safety): add them by name, ``--nemesis raft,clock``. ``raft`` is what a replicated
group is checked against (issue #11): ``all`` with ``partial``, ``duplicate`` and ``powerloss``.
``partial`` and ``duplicate`` are not in ``all``, so ``all`` draws the same faults for a seed as
before they existed.

Applying. :meth:`Nemesis.apply` plans the schedule and puts each fault's beginning and end on
the cluster's SimPy clock. A fault begins with the cluster's scenario verb (``partition``,
``crash``, ``power_loss``, ``set_loss``, ``set_latency``, ``slow_node``, ``reshard``,
``skew_clock``), which records a
:class:`~sim.cluster.Fault` in ``cluster.faults``, the time axis the operations share. It ends by
undoing exactly what it did: the partition or link rule it added is removed (other rules stay),
loss and latency go back to what they were when it began, a crashed node restarts, or every node a power loss took down (the cluster
records the restart), a skewed clock runs true (``restore_clock``); the Fault's ``end`` is set then. Every fault ends by the end of the window,
so a run can be given a quiet tail in which the cluster recovers.

Evidence. Every fault keeps a :class:`FaultRecord`: when it really began and ended, the rules
it added and what they decided (``hits``: messages dropped by a partition or loss rule, delayed
by a slow-node link), the messages sent while it was active, and for a crash the downtime and
the messages dropped because the node was down, and for a clock skew the rates (``rates``) and
how far each clock drifted from the simulated time while the fault lasted (``detail``). :meth:`NemesisRun.report` joins the records
with the client history into a :class:`FaultReport`, one row per fault with the operations
invoked during it, on the same time axis.

Crashes and linearizability. The store keeps one copy of each key (replication comes with
Raft). What survives a crash is the node's business: with ``NodeConfig(durable=True)`` every
write goes through to the node's durable storage before it is acknowledged, and a restarted node
serves it again; without (the default, Redis without persistence) a crash forgets every write
the node had acknowledged, a later read finds the key absent, and the checker rightly reports a
linearizability violation. :mod:`sim.sweep` runs durable nodes unless told otherwise, so that
``crash`` belongs in the default nemesis (:data:`DEFAULT` = ``all``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sim.clients import OK, UNKNOWN, History
from sim.cluster import Fault, SimCluster
from sim.latency import Exponential, Latency, LogNormal
from sim.network import Link, Loss, Partition, Rule, schedule_call
from sim.rand import stream
from sim.replicas import committed_conf, leader

PARTITION_FLAVOURS = ("partition", "bridge", "oneway", "partial")
KINDS = (*PARTITION_FLAVOURS, "crash", "loss", "latency", "slow", "reshard", "powerloss", "duplicate",
         "member", "clock")
NETWORK = ("partition", "bridge", "oneway", "loss", "latency", "slow")
ALIASES: dict[str, tuple[str, ...]] = {
    "none": (),
    "network": NETWORK,
    "all": (*NETWORK, "crash"),
    "raft": (*NETWORK, "partial", "duplicate", "crash", "powerloss"),
}
#: What ``python -m sim check`` uses without ``--nemesis``: every kind of fault (a durable store
#: should survive them all with no linearizability violation; see "Crashes and linearizability").
DEFAULT = "all"


@dataclass
class FaultRecord:
    """One scheduled fault and the evidence of what it did (plain data: it pickles)."""

    kind: str
    #: planned beginning and end (simulated seconds)
    start: float
    end: float
    #: what it acts on, for people: "n1,n2 | n3,n4,n5", "n3", "0.3" (a loss probability)
    target: str
    #: the nodes it singles out (the cut-off side, the bridge, the crashed or slowed node)
    nodes: tuple[str, ...] = ()
    #: a partition's two sides: messages from the first to the second are dropped (and back,
    #: unless the kind is "oneway")
    sides: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    #: the fault's size: loss probability, latency median, mean extra delay (seconds), a clock
    #: skew's spread (the fastest clock's rate over the slowest's)
    param: float = 0.0
    #: clock: each of ``nodes``' clock rate (node-seconds per simulated second)
    rates: tuple[float, ...] = ()
    #: when it really began and ended (None: not yet, or never)
    fired: float | None = None
    undone: float | None = None
    #: why it did not fire (e.g. the node was already down)
    skipped: str = ""
    #: names of the network rules it added, and what they decided
    rules: tuple[str, ...] = ()
    hits: int = 0
    dropped: int = 0
    delayed: int = 0
    #: messages sent in the whole cluster while it was active
    sent: int = 0
    #: crash, powerloss: seconds the node(s) were down
    downtime: float = 0.0
    #: powerloss: unsynced writes the nodes' storage lost
    lost_writes: int = 0
    #: what came of it, when that is not a count (a reshard: moved, aborted and fixed, ...)
    detail: str = ""

    @property
    def active_for(self) -> float:
        if self.fired is None:
            return 0.0
        return (self.undone if self.undone is not None else self.end) - self.fired

    def describe(self) -> str:
        span = f"[{self.start:.3f}, {self.end:.3f}]"
        if self.skipped:
            return f"{self.kind} {self.target} {span}: skipped ({self.skipped})"
        ev = []
        if self.dropped:
            ev.append(f"dropped {self.dropped}")
        if self.delayed:
            ev.append(f"delayed {self.delayed}")
        if self.kind in ("crash", "powerloss"):
            ev.append(f"down {self.downtime:.3f}s")
        if self.kind == "powerloss":
            ev.append(f"lost {self.lost_writes} unsynced writes")
        if self.detail:
            ev.append(self.detail)
        return f"{self.kind} {self.target} {span}: " + (", ".join(ev) or "no messages affected")


# --- packages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    """One kind of fault: plans a schedule, begins and ends each fault on a cluster.

    ``quiet`` and ``length`` are the (low, high) bounds of the uniform draws for the pause
    before each fault and for its duration, in simulated seconds.
    """

    name: str = "package"
    quiet: tuple[float, float] = (0.5, 2.0)
    length: tuple[float, float] = (1.0, 3.0)

    def plan(self, rng: random.Random, nodes: Sequence[str], start: float, end: float) -> list[FaultRecord]:
        out: list[FaultRecord] = []
        t = start + rng.uniform(*self.quiet)
        while t < end:
            stop = min(end, t + rng.uniform(*self.length))
            rec = self.draw(rng, list(nodes), t, stop)
            if rec is not None:
                out.append(rec)
            t = stop + rng.uniform(*self.quiet)
        return out

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        raise NotImplementedError

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        raise NotImplementedError

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        raise NotImplementedError


def _names(ids: Iterable[str]) -> str:
    return ",".join(ids)


@dataclass(frozen=True)
class Partitions(Package):
    """Network partitions, one at a time, of the flavours asked for (drawn uniformly)."""

    name: str = "partition"
    flavours: tuple[str, ...] = ("partition",)

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        flavour = rng.choice(self.flavours)
        shuffled = list(nodes)
        rng.shuffle(shuffled)
        n = len(shuffled)
        if flavour == "bridge":
            if n < 3:
                return None
            bridge, rest = shuffled[0], shuffled[1:]
            half = len(rest) // 2
            a, b = sorted(rest[:half]), sorted(rest[half:])
            return FaultRecord("bridge", start, end, f"{_names(a)} | {_names(b)} via {bridge}",
                               nodes=(bridge,), sides=(tuple(a), tuple(b)))
        if flavour == "partial":
            if n < 3:
                return None
            alone, friend, rest = shuffled[0], shuffled[1], sorted(shuffled[2:])
            return FaultRecord("partial", start, end, f"{alone} sees only {friend}",
                               nodes=(alone, friend), sides=((alone,), tuple(rest)))
        if n < 2:
            return None
        k = rng.randint(1, max(1, (n - 1) // 2))
        a, b = sorted(shuffled[:k]), sorted(shuffled[k:])
        if flavour == "oneway":
            if rng.random() < 0.5:
                a, b = b, a
            return FaultRecord("oneway", start, end, f"{_names(a)} -/-> {_names(b)}",
                               nodes=tuple(a), sides=(tuple(a), tuple(b)))
        return FaultRecord("partition", start, end, f"{_names(a)} | {_names(b)}",
                           nodes=tuple(a), sides=(tuple(a), tuple(b)))

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        a, b = run.record.sides
        run.add_rules(lambda: cluster.partition(a, b, oneway=run.record.kind == "oneway"))

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        run.remove_rules()


@dataclass(frozen=True)
class Crashes(Package):
    """Crash a random node, restart it when the fault ends (``length`` is the down time)."""

    name: str = "crash"

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        nid = rng.choice(nodes)
        return FaultRecord("crash", start, end, nid, nodes=(nid,))

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        nid = run.record.nodes[0]
        if not cluster.is_up(nid):
            run.record.skipped = f"{nid} was already down"
            return
        run.dropped_down = cluster.net.stats.dropped.get("down", 0)
        cluster.crash(nid)
        run.fault = cluster.faults[-1]

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        nid = run.record.nodes[0]
        if cluster.is_up(nid):
            return  # someone else restarted it
        cluster.restart(nid)


@dataclass(frozen=True)
class PowerLosses(Package):
    """The power fails under all nodes (probability ``everyone``) or one random node: they
    crash together, losing their unsynced writes, and restart when the fault ends."""

    name: str = "powerloss"
    everyone: float = 0.5

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        hit = sorted(nodes) if rng.random() < self.everyone else [rng.choice(nodes)]
        return FaultRecord("powerloss", start, end, _names(hit), nodes=tuple(hit))

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        up = [nid for nid in run.record.nodes if cluster.is_up(nid)]
        if not up:
            run.record.skipped = "every node was already down"
            return
        run.dropped_down = cluster.net.stats.dropped.get("down", 0)
        lost_before = sum(cluster.storage(nid).stats.lost_writes for nid in up)
        run.previous = up
        cluster.power_loss(up)
        run.record.lost_writes = sum(cluster.storage(nid).stats.lost_writes for nid in up) - lost_before
        run.fault = cluster.faults[-1]

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        for nid in run.previous:
            if not cluster.is_up(nid):
                cluster.restart(nid)


@dataclass(frozen=True)
class LossSpikes(Package):
    """Message loss rises by a spike of ``probability`` (drawn from the bounds), then falls
    back. The spike is a loss of its own on top of the background's (``--loss``): a message
    survives both, ``1 - (1 - background) * (1 - spike)``, so a fault never makes the network
    more reliable than it was (it replaced the background's rate, and a spike of 0.3 over a
    background of 0.5 lowered the loss)."""

    name: str = "loss"
    probability: tuple[float, float] = (0.1, 0.5)

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        p = round(rng.uniform(*self.probability), 3)
        return FaultRecord("loss", start, end, f"{p:g}", param=p)

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        before = [r for r in cluster.net.rules if isinstance(r, Loss)]
        background = before[-1].probability if before else 0.0
        run.previous = background
        spike = float(run.record.param)
        # (over no background the spike's own figure, exactly: the same float as before)
        combined = spike if not background else 1.0 - (1.0 - background) * (1.0 - spike)
        if background:
            run.record.detail = f"{spike:g} over {background:g}: {combined:.3g}"
        run.add_rules(lambda: cluster.set_loss(combined))

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        cluster.net.set_loss(float(run.previous))


@dataclass(frozen=True)
class DuplicateSpikes(Package):
    """A share of messages (drawn from the bounds) is delivered twice, then none again."""

    name: str = "duplicate"
    probability: tuple[float, float] = (0.1, 0.5)

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        p = round(rng.uniform(*self.probability), 3)
        return FaultRecord("duplicate", start, end, f"{p:g}", param=p)

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        run.add_rules(lambda: cluster.set_duplicate(run.record.param))

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        cluster.net.set_duplicate(0.0)


@dataclass(frozen=True)
class LatencySpikes(Package):
    """The network's latency becomes a log-normal with a median drawn from the bounds."""

    name: str = "latency"
    median: tuple[float, float] = (0.02, 0.3)
    sigma: float = 0.5

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        m = round(rng.uniform(*self.median), 4)
        return FaultRecord("latency", start, end, f"median {m * 1000:g} ms", param=m)

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        run.previous = cluster.net.latency
        run.add_rules(lambda: cluster.set_latency(LogNormal(run.record.param, self.sigma)))

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        latency: Latency = run.previous
        cluster.net.set_latency(latency)


@dataclass(frozen=True)
class SlowNodes(Package):
    """One node's messages (both directions) get an extra exponential delay."""

    name: str = "slow"
    extra: tuple[float, float] = (0.05, 0.5)

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        nid = rng.choice(nodes)
        mean = round(rng.uniform(*self.extra), 4)
        return FaultRecord("slow", start, end, f"{nid} +{mean * 1000:g} ms", nodes=(nid,), param=mean)

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        rec = run.record
        run.add_rules(lambda: cluster.slow_node(rec.nodes[0], Exponential(rec.param)))

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        run.remove_rules()


@dataclass(frozen=True)
class Reshards(Package):
    """Move one slot that holds keys to another node, live; ``fix`` an aborted move at the end.

    The slot is chosen when the fault begins, among the slots that hold keys on some live node
    and that the target does not own (in the target's view), with a number drawn in the plan,
    so the choice is as reproducible as the run. A move is not started while another is still
    open on a live node (the fault is then skipped).
    """

    name: str = "reshard"
    batch: int = 4

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        target = rng.choice(nodes)
        return FaultRecord("reshard", start, end, f"-> {target}", nodes=(target,), param=round(rng.random(), 9))

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        rec = run.record
        if cluster.replicas > 1:
            rec.skipped = "slots do not move in a replicated cluster"
            return
        target = rec.nodes[0]
        view = cluster.node(target)
        if view is None:
            rec.skipped = f"target {target} is down"
            return
        # like an operator running redis-cli, never start a move while another is open (one
        # that outlived its fault window, or an aborted one that ``fix`` has not finished)
        open_moves = sorted({s for n in cluster.nodes() for s in (*n.migrating, *n.importing)})
        if open_moves:
            rec.skipped = f"slot {open_moves[0]} is still moving"
            return
        slots = sorted({s for n in cluster.nodes() for s in n.store.slots()
                        if view.slot_map.owner(s) != target})
        if not slots:
            rec.skipped = f"no slot with keys outside {target}"
            return
        slot = slots[int(rec.param * len(slots))]
        source = view.slot_map.owner(slot)
        rec.target = f"slot {slot} {source} -> {target}"
        rec.sides = ((source or "",), (target,))
        run.previous = (slot, len(cluster.faults))
        cluster.reshard([slot], target, batch=self.batch)
        run.fault = cluster.faults[-1]

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        slot, since = run.previous
        target = run.record.nodes[0]
        aborted = [f for f in cluster.faults[since:] if f.verb == "reshard_aborted"]
        view = cluster.node(target)
        if view is not None and view.slot_map.owner(slot) == target:
            run.record.detail = "moved"
        elif aborted:
            run.record.detail = f"aborted ({aborted[0].args}); fix"
            cluster.fix()
        else:
            run.record.detail = "still moving"


@dataclass(frozen=True)
class MemberChanges(Package):
    """Remove a random voter of the replicated group; add a new node when the fault ends.

    The voter is chosen when the fault begins, among the leader's configuration, with a number
    drawn in the plan (so the choice is as reproducible as the run). Skipped without a group, a
    leader, or with two voters or fewer (a removal must leave a group that can still elect).
    """

    name: str = "member"
    quiet: tuple[float, float] = (1.0, 3.0)
    length: tuple[float, float] = (1.0, 3.0)

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        return FaultRecord("member", start, end, "a voter", param=round(rng.random(), 9))

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        rec = run.record
        if cluster.replicas <= 1:
            rec.skipped = "membership changes need a replicated group"
            return
        lead = leader(cluster)
        if lead is None:
            rec.skipped = "no leader"
            return
        voters = sorted(lead.replica.raft.log.conf().voters)
        if len(voters) <= 2:
            rec.skipped = f"only {len(voters)} voters"
            return
        victim = voters[int(rec.param * len(voters))]
        rec.target, rec.nodes = f"remove {victim}", (victim,)
        cluster.remove_replica(victim)
        run.fault = cluster.faults[-1]

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        victim = run.record.nodes[0]
        # committed, as remove-node waits for (a change still uncommitted may be rolled back), at
        # any live node: asking only the leader missed removals committed while there was none
        newest = committed_conf(cluster)
        gone = newest is not None and victim not in newest[1].voters and victim not in newest[1].learners
        new = cluster.add_replica()
        if gone:
            cluster.leave(victim)
        run.record.detail = (f"removed {victim}, added {new}" if gone
                             else f"{victim}'s removal not seen committed, added {new}")


@dataclass(frozen=True)
class ClockSkews(Package):
    """Clocks that run fast or slow: 1 to n-1 random nodes (at least one clock stays true), each
    at its own rate drawn log-uniformly from ``rates`` (so 0.5 and 2.0 are as likely), the
    same fault's nodes skewed and restored together. A node down when the fault begins gets the
    rate when it restarts (the rate is its machine's)."""

    name: str = "clock"
    rates: tuple[float, float] = (0.5, 2.0)

    def draw(self, rng: random.Random, nodes: list[str], start: float, end: float) -> FaultRecord | None:
        shuffled = list(nodes)
        rng.shuffle(shuffled)
        k = rng.randint(1, max(1, len(shuffled) - 1))
        hit = sorted(shuffled[:k])
        lo, hi = (math.log(r) for r in self.rates)
        rates = tuple(round(math.exp(rng.uniform(lo, hi)), 3) for _ in hit)
        every = [*rates, *([1.0] if k < len(shuffled) else [])]
        spread = round(max(every) / min(every), 3)
        return FaultRecord("clock", start, end, ", ".join(f"{n} x{r:g}" for n, r in zip(hit, rates, strict=True)),
                           nodes=tuple(hit), rates=rates, param=spread)

    def begin(self, run: _Active, cluster: SimCluster) -> None:
        since = len(cluster.faults)
        run.previous = [cluster.clock_offset(nid) for nid in run.record.nodes]
        for nid, rate in zip(run.record.nodes, run.record.rates, strict=True):
            cluster.skew_clock(nid, rate)
        run.fault = cluster.faults[since]

    def finish(self, run: _Active, cluster: SimCluster) -> None:
        drifts = []
        for nid, before in zip(run.record.nodes, run.previous, strict=True):
            drifts.append(f"{nid} {(cluster.clock_offset(nid) - before) * 1000:+.0f} ms")
            cluster.restore_clock(nid)
        run.record.detail = "drifted " + ", ".join(drifts)


# --- one fault in flight --------------------------------------------------------------------


@dataclass
class _Active:
    """The live side of one fault: the rules and Fault it made, and what to restore."""

    package: Package
    record: FaultRecord
    cluster: SimCluster
    rules: list[Rule] = field(default_factory=list)
    fault: Fault | None = None
    previous: Any = None
    sent_at_start: int = 0
    dropped_down: int = 0

    def begin(self) -> None:
        c, rec = self.cluster, self.record
        rec.fired = c.now
        self.sent_at_start = c.net.stats.sent
        self.package.begin(self, c)
        if rec.skipped:
            rec.fired = None

    def finish(self) -> None:
        if self.record.fired is None or self.record.undone is not None:
            return
        self.collect()
        self.package.finish(self, self.cluster)
        self.record.undone = self.cluster.now
        if self.fault is not None and self.fault.end is None:
            self.fault.end = self.cluster.now

    def add_rules(self, verb: Callable[[], None]) -> None:
        """Call a cluster verb now; keep the rules it added (by identity) and its Fault."""
        net = self.cluster.net
        before = list(net.rules)
        verb()
        self.fault = self.cluster.faults[-1]
        self.rules = [r for r in net.rules if not any(r is b for b in before)]
        self.record.rules = tuple(r.name for r in self.rules)

    def remove_rules(self) -> None:
        for r in self.rules:
            self.cluster.net.remove_rule(r)

    def collect(self) -> None:
        """Bring the evidence up to now (rules stop counting once removed, so this runs just
        before a fault ends, and for faults still active when the report is made)."""
        c, rec = self.cluster, self.record
        if rec.fired is None or rec.undone is not None:
            return
        rec.sent = c.net.stats.sent - self.sent_at_start
        rec.hits = sum(r.hits for r in self.rules)
        if any(isinstance(r, (Partition, Loss)) for r in self.rules):
            rec.dropped = rec.hits
        elif any(isinstance(r, Link) for r in self.rules):
            rec.delayed = rec.hits
        elif rec.kind == "latency":
            # no rule decides: every message sent meanwhile that no rule dropped took the spike
            rec.delayed = rec.sent
        elif rec.kind in ("crash", "powerloss"):
            rec.downtime = c.now - rec.fired
            rec.dropped = c.net.stats.dropped.get("down", 0) - self.dropped_down


# --- the nemesis ----------------------------------------------------------------------------


def parse_kinds(spec: str | Iterable[str]) -> tuple[str, ...]:
    """``"partition,crash"`` (or a list) -> the kinds, aliases expanded, duplicates removed."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
    out: list[str] = []
    for item in items:
        if not item:  # "", "partition,,crash", "crash,": say "none" for no fault
            raise ValueError(f"the nemesis {_spec_text(spec)!r} has an empty name (none means no fault); "
                             f"{_choices()}.")
        expanded = ALIASES.get(item, (item,))
        for kind in expanded:
            if kind not in KINDS:
                raise ValueError(f"unknown nemesis {kind!r}; {_choices()}.")
            if kind not in out:
                out.append(kind)
    return tuple(out)


def _spec_text(spec: str | Iterable[str]) -> str:
    return spec if isinstance(spec, str) else ",".join(spec)


def _choices() -> str:
    return f"choose from {', '.join(KINDS)} or {', '.join(ALIASES)}"


def kinds_help() -> str:
    """The nemesis kinds and what each alias means, written out from :data:`KINDS` and
    :data:`ALIASES` (for ``--help``: it cannot drift from the table)."""
    aliases = "; ".join(f"{name} = {', '.join(kinds) if kinds else 'no fault'}"
                        for name, kinds in ALIASES.items())
    alone = [k for k in KINDS if not any(k in kinds for kinds in ALIASES.values())]
    text = f"Nemesis kinds: {', '.join(KINDS)}. Aliases: {aliases}."
    if alone:
        text += f" In no alias (add by name): {', '.join(alone)}."
    return text


def packages_for(kinds: Iterable[str]) -> list[Package]:
    """One package per kind, the partition flavours merged into one package."""
    kinds = tuple(kinds)
    out: list[Package] = []
    flavours = tuple(k for k in PARTITION_FLAVOURS if k in kinds)
    if flavours:
        out.append(Partitions(flavours=flavours))
    for kind in kinds:
        if kind == "crash":
            out.append(Crashes())
        elif kind == "loss":
            out.append(LossSpikes())
        elif kind == "latency":
            out.append(LatencySpikes())
        elif kind == "slow":
            out.append(SlowNodes())
        elif kind == "reshard":
            out.append(Reshards())
        elif kind == "powerloss":
            out.append(PowerLosses())
        elif kind == "duplicate":
            out.append(DuplicateSpikes())
        elif kind == "member":
            out.append(MemberChanges())
        elif kind == "clock":
            out.append(ClockSkews())
    return out


class Nemesis:
    """A seeded composition of fault packages.

    ``Nemesis("partition,crash", seed=7)`` or ``Nemesis([Partitions(), Crashes(length=(5, 10))],
    seed=7)``; then :meth:`apply` to a cluster, or :meth:`plan` to see the schedule.
    """

    def __init__(self, packages: str | Iterable[str] | Iterable[Package] = DEFAULT, seed: int = 0) -> None:
        if isinstance(packages, str):
            self.packages = packages_for(parse_kinds(packages))
        else:
            items = list(packages)
            if all(isinstance(p, Package) for p in items):
                self.packages = items  # type: ignore[assignment]
            else:
                self.packages = packages_for(parse_kinds(items))  # type: ignore[arg-type]
        self.seed = seed

    @property
    def kinds(self) -> tuple[str, ...]:
        out: list[str] = []
        for p in self.packages:
            out.extend(p.flavours if isinstance(p, Partitions) else (p.name,))
        return tuple(out)

    def describe(self) -> str:
        return ",".join(self.kinds) or "none"

    def plan(self, nodes: Sequence[str], start: float, end: float) -> list[FaultRecord]:
        """Every package's faults within [start, end], ordered by start (then package)."""
        return [rec for _, rec in self._plan(nodes, start, end)]

    def _plan(self, nodes: Sequence[str], start: float, end: float) -> list[tuple[Package, FaultRecord]]:
        out: list[tuple[float, int, int, Package, FaultRecord]] = []
        for i, p in enumerate(self.packages):
            rng = stream(self.seed, "nemesis", p.name)
            for j, rec in enumerate(p.plan(rng, nodes, start, end)):
                out.append((rec.start, i, j, p, rec))
        out.sort(key=lambda t: t[:3])
        return [(t[3], t[4]) for t in out]

    def apply(self, cluster: SimCluster, start: float, end: float) -> NemesisRun:
        """Schedule the faults on ``cluster``'s clock (times are absolute simulated seconds)."""
        if end < start:
            raise ValueError(f"the nemesis window ends ({end}) before it starts ({start})")
        run = NemesisRun(self, cluster)
        for package, rec in self._plan(cluster.ids, start, end):
            active = _Active(package, rec, cluster)
            run.active.append(active)

            def begin(_e: Any, a: _Active = active) -> None:
                a.begin()

            def finish(_e: Any, a: _Active = active) -> None:
                a.finish()

            schedule_call(cluster.env, max(0.0, rec.start - cluster.now), begin)
            schedule_call(cluster.env, max(0.0, rec.end - cluster.now), finish)
        return run


class NemesisRun:
    """The faults a nemesis scheduled on one cluster; their records fill in as the run goes."""

    def __init__(self, nemesis: Nemesis, cluster: SimCluster) -> None:
        self.nemesis = nemesis
        self.cluster = cluster
        self.active: list[_Active] = []

    @property
    def records(self) -> list[FaultRecord]:
        for a in self.active:
            a.collect()  # faults still active: what they did so far
        return [a.record for a in self.active]

    def report(self, history: History | None = None) -> FaultReport:
        return FaultReport(self.records, history if history is not None else self.cluster.history)


# --- the report ------------------------------------------------------------------------------


class FaultReport:
    """One row per fault: what it was, when it was active, what it did, and the operations
    invoked while it was active (on the history's time axis)."""

    COLUMNS = (
        ("kind", "U16"), ("target", "U64"), ("start", "f8"), ("end", "f8"), ("fired", "f8"),
        ("undone", "f8"), ("hits", "i8"), ("dropped", "i8"), ("delayed", "i8"), ("sent", "i8"),
        ("downtime", "f8"), ("ops", "i8"), ("ops_ok", "i8"), ("ops_unknown", "i8"),
        ("ops_not_ok", "i8"),
    )

    def __init__(self, records: Sequence[FaultRecord], history: History | None = None) -> None:
        self.records = list(records)
        self.rows: list[dict[str, Any]] = []
        ops = list(history) if history is not None else []
        for rec in self.records:
            row = asdict(rec)
            lo = rec.fired if rec.fired is not None else rec.start
            hi = rec.undone if rec.undone is not None else rec.end
            during = [op for op in ops if lo <= op.invoke < hi]
            row["ops"] = len(during)
            row["ops_ok"] = sum(1 for op in during if op.outcome == OK)
            row["ops_unknown"] = sum(1 for op in during if op.outcome == UNKNOWN)
            row["ops_not_ok"] = row["ops"] - row["ops_ok"]
            self.rows.append(row)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def table(self) -> np.ndarray:
        """The rows as a numpy structured array (NaN for a time that never came)."""
        arr = np.zeros(len(self.rows), dtype=list(self.COLUMNS))
        for i, row in enumerate(self.rows):
            for name, _ in self.COLUMNS:
                v = row[name]
                arr[name][i] = np.nan if v is None else v
        return arr

    def by_kind(self) -> dict[str, dict[str, float]]:
        """Per kind: how many fired, seconds active, messages dropped and delayed, downtime."""
        out: dict[str, dict[str, float]] = {}
        for rec in self.records:
            d = out.setdefault(rec.kind, {"fired": 0, "skipped": 0, "seconds": 0.0, "dropped": 0,
                                          "delayed": 0, "downtime": 0.0})
            if rec.fired is None:
                d["skipped"] += 1
                continue
            d["fired"] += 1
            d["seconds"] += rec.active_for
            d["dropped"] += rec.dropped
            d["delayed"] += rec.delayed
            d["downtime"] += rec.downtime
        return out

    def summary(self) -> str:
        if not self.rows:
            return "faults: none"
        lines = [f"{'kind':<14}{'target':<28}{'from':>9}{'to':>9}{'dropped':>9}{'delayed':>9}"
                 f"{'down s':>8}{'ops':>6}{'not ok':>8}"]
        for row in self.rows:
            if row["skipped"]:
                lines.append(f"{row['kind']:<14}{row['target']:<28}  skipped: {row['skipped']}")
                continue
            fired = row["fired"] if row["fired"] is not None else row["start"]
            undone = row["undone"] if row["undone"] is not None else row["end"]
            down = f"{row['downtime']:.2f}" if row["kind"] in ("crash", "powerloss") else ""
            lines.append(
                f"{row['kind']:<14}{row['target'][:27]:<28}{fired:>9.3f}{undone:>9.3f}"
                f"{row['dropped']:>9}{row['delayed']:>9}{down:>8}{row['ops']:>6}{row['ops_not_ok']:>8}"
            )
        return "\n".join(lines)


__all__ = [
    "ALIASES",
    "DEFAULT",
    "KINDS",
    "ClockSkews",
    "Crashes",
    "FaultRecord",
    "FaultReport",
    "LatencySpikes",
    "LossSpikes",
    "Nemesis",
    "NemesisRun",
    "Package",
    "Partitions",
    "PowerLosses",
    "Reshards",
    "SlowNodes",
    "kinds_help",
    "packages_for",
    "parse_kinds",
]
