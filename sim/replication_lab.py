"""The replication lab: one workload and one crash schedule, on R = 1 and on R = 3, measured.

Theory of operation
-------------------
``notebooks/replication.ipynb`` asks what a Raft group buys: the same seeded workload and the
same crashes, once on the unreplicated store (R = 1: each key on one node, in memory or written
through to a disk) and once on one Raft group of every node (R = 3). :func:`run_lab` runs one
such experiment and returns a :class:`LabRun` that holds what the notebook shows.

The schedule is a list of :class:`Step`: at a simulated time, crash a target and restart it
``down`` seconds later. A target is a node id, ``"all"`` (a power loss of every node: each one
loses the writes its storage had not synced), or a *role*, ``"leader"`` or ``"follower"``,
resolved when the step fires (the Raft group's leader then, or its first live follower in id
order; a step that finds no leader waits for one, 50 ms at a time). :meth:`LabRun.resolved`
gives the schedule with every role replaced by the node it hit, so an R = 1 run (which has no
leader) replays exactly the crashes of an R = 3 run.

The clients are the sim's :class:`~sim.clients.SimClient`, paced, over ``keys`` keys; with
``balancer`` on (the default) each sends only to nodes that are up, as behind a load balancer
that health-checks them, so what the runs differ in is what the live nodes can serve, not
requests sent into a dead socket (those still happen: a node that crashes under a request, and
every request during a power loss). Once the clients are done and every node has been up for
``settle`` seconds, one more process reads every key, in order, retrying a read that did not
succeed; those reads are part of the history, so the checker judges them with the rest.

Acknowledged writes lost (:func:`lost_writes`): a put or delete answered ``ok`` is lost when a
read that began after it was answered (a client's, or a final one) found a value that can only
have come from before it: every write of that value (and, for an absent key, every delete and
the initial empty state) was answered before the lost write was invoked. Values are unique per
put (``c{client}-{n}``), so a value names its write. A write overwritten before the crash that
would have lost it is not counted (nobody can tell); the final reads make sure every key is
looked at once after the last crash. This counts what a user would call lost data; the
checker's verdict on the whole history is the formal judgment.

Time: the clients start ``warmup`` seconds in (a Raft group elects its first leader meanwhile;
the first election is not what is compared), and the schedule's times count from that start
(:attr:`LabRun.start`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from checker import check
from kvcore.config import NodeConfig
from kvcore.messages import Get, Reply
from sim.clients import FAIL, OK, UNKNOWN, Operation, SimClient, Workload, classify, split_ops
from sim.cluster import SimCluster
from sim.latency import LogNormal
from sim.rand import stream
from sim.replicas import leader

ROLES = ("leader", "follower")


@dataclass(frozen=True)
class Step:
    """Crash ``target`` at ``at`` (simulated seconds) and restart it ``down`` seconds later."""

    at: float
    #: a node id, "all" (a power loss of every node), "leader" or "follower" (R > 1 only)
    target: str
    down: float


@dataclass(frozen=True)
class LabConfig:
    """One side of the comparison. Times in simulated seconds."""

    #: 1: each key on one node; ``nodes``: one Raft group of every node
    replicas: int = 1
    #: R = 1 only: write every change through to the node's storage (R = 3's durability is its log)
    durable: bool = False
    #: how long a storage sync takes, in the latency syntax ("const:0.002"); "" for no time
    sync_time: str = ""
    nodes: int = 3
    clients: int = 4
    #: operations over all clients (paced over ``duration``)
    ops: int = 2000
    duration: float = 20.0
    keys: int = 20
    client_timeout: float = 1.0
    forward_timeout: float = 0.5
    #: seconds every node has been up before the final reads start
    settle: float = 2.0
    #: seconds before the clients start (and the schedule's clock with them)
    warmup: float = 1.5
    #: clients send only to nodes that are up (a health-checking load balancer)
    balancer: bool = True

    @property
    def label(self) -> str:
        if self.replicas > 1:
            return f"R = {self.replicas} (Raft)"
        if not self.durable:
            return "R = 1, memory only"
        return "R = 1, durable" + (f" (sync {self.sync_time})" if self.sync_time else "")

    def node_config(self) -> NodeConfig:
        return NodeConfig(forward_timeout=self.forward_timeout, durable=self.durable and self.replicas == 1)


@dataclass(frozen=True)
class Fired:
    """A step as it fired: when, on which nodes, and when they were restarted."""

    step: Step
    time: float
    nodes: tuple[str, ...]
    restart: float

    @property
    def label(self) -> str:
        if self.step.target == "all":
            return "power loss"
        role = f"{self.step.target} " if self.step.target in ROLES else ""
        return f"crash {role}{','.join(self.nodes)}"


@dataclass
class LabRun:
    """One finished experiment: the cluster (history, faults), the crashes, the final reads."""

    seed: int
    config: LabConfig
    cluster: SimCluster
    fired: list[Fired]
    #: the final read of each key: its value (None: absent); a key whose read never succeeded is missing
    final: dict[str, str | None]
    #: operations of the clients (the final reads are in ``cluster.history`` too)
    ops: list[Operation] = field(default_factory=list)
    #: when the clients started (simulated seconds); the schedule counts from here
    start: float = 0.0

    @property
    def label(self) -> str:
        return self.config.label

    def resolved(self) -> list[Step]:
        """The schedule with each role replaced by the node it hit (to replay on R = 1)."""
        return [replace(f.step, target=f.nodes[0]) if f.step.target in ROLES else f.step for f in self.fired]

    def lost(self) -> list[Operation]:
        """The acknowledged writes a later read (a client's or a final one) proved lost."""
        return lost_writes(self.cluster.history.ops)

    def unread(self) -> list[str]:
        """Keys whose final read never succeeded."""
        return [f"k{i}" for i in range(self.config.keys) if f"k{i}" not in self.final]

    def check(self, timeout: float = 60.0) -> Any:
        """The checker's verdict on the whole history (clients and final reads)."""
        return check(self.cluster.history.events(), model="kv", timeout=timeout)

    def latencies(self, f: str | None = None) -> np.ndarray:
        """Seconds of every ok client operation (of kind ``f``: get, put, delete)."""
        return np.array([op.latency for op in self.ops
                         if op.outcome == OK and op.latency is not None and (f is None or op.f == f)])

    def availability(self, width: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`availability` of the client operations."""
        end = self.start + self.config.duration + self.config.client_timeout
        return availability(self.ops, width, self.start, end)


def lost_writes(ops: Iterable[Operation]) -> list[Operation]:
    """Writes answered ok that a later read proved lost (see the module's docstring).

    A write ``w`` (put or delete, outcome ok) is lost when a get answered ok, invoked after
    ``w`` was answered, found a value that every write able to have left it had left *before*
    ``w`` began: each such write (the put of that value; for an absent key, each delete, and the
    empty start), invoked before the read was answered, was answered before ``w`` was invoked.
    A write of unknown outcome may take effect any time after its invocation, so it is never
    before anything; a value no write made proves nothing here (the checker judges it).
    """
    writes: dict[str, list[Operation]] = {}
    reads: dict[str, list[Operation]] = {}
    for op in ops:
        if op.f in ("put", "delete"):
            writes.setdefault(op.key, []).append(op)
        elif op.f == "get" and op.outcome == OK and op.complete is not None:
            reads.setdefault(op.key, []).append(op)
    lost: list[Operation] = []
    for key, ws in writes.items():
        seen = [(r.invoke, _explained_until(r, ws)) for r in reads.get(key, [])]
        for w in ws:
            if w.outcome != OK or w.complete is None:
                continue
            done = w.complete
            if any(invoke > done and until < w.invoke for invoke, until in seen):
                lost.append(w)
    return sorted(lost, key=lambda op: op.invoke)


def _explained_until(read: Operation, writes: Iterable[Operation]) -> float:
    """The latest moment a write can have left the value ``read`` found: the last completion
    among the writes of that value invoked before the read was answered; inf when one of them
    may still have applied late (unknown outcome); -inf when none did (for an absent key: only
    the empty start explains it)."""
    assert read.complete is not None
    until = -math.inf
    for w in writes:
        if w.outcome == FAIL or w.invoke >= read.complete:
            continue  # certainly not applied, or too late to be what the read saw
        if (w.value != read.result) if w.f == "put" else (read.result is not None):
            continue
        if w.outcome == UNKNOWN or w.complete is None:
            return math.inf
        until = max(until, w.complete)
    if read.result is not None and until == -math.inf:
        return math.inf  # a value no write made: not this function's to judge
    return until


def availability(ops: Iterable[Operation], width: float, start: float, end: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bins of ``width`` seconds from ``start`` to ``end``: (each bin's start; the fraction of
    the operations *invoked* in it that ended ok, NaN for a bin where none was invoked; the ok
    operations *completed* in it, per second). The two differ when clients wait: a client
    stuck on a timeout invokes nothing, so the fraction alone would hide the wait."""
    n = max(1, math.ceil((end - start) / width))
    invoked = np.zeros(n)
    ok_invoked = np.zeros(n)
    ok_done = np.zeros(n)
    for op in ops:
        i = math.floor((op.invoke - start) / width)
        if 0 <= i < n:
            invoked[i] += 1
            ok_invoked[i] += op.outcome == OK
        if op.outcome == OK and op.complete is not None:
            j = math.floor((op.complete - start) / width)
            if 0 <= j < n:
                ok_done[j] += 1
    frac = np.full(n, np.nan)
    np.divide(ok_invoked, invoked, out=frac, where=invoked > 0)
    return start + np.arange(n) * width, frac, ok_done / width


def percentiles(latencies: Sequence[float] | np.ndarray, qs: Sequence[float] = (50, 99)) -> list[float]:
    """The ``qs`` percentiles of ``latencies`` in milliseconds (NaN each when there are none)."""
    arr = np.asarray(latencies, dtype=float)
    if not arr.size:
        return [math.nan for _ in qs]
    return [float(x) * 1000 for x in np.percentile(arr, list(qs))]


# --- running one experiment -------------------------------------------------------------------


def _resolve(cluster: SimCluster, target: str) -> tuple[str, ...] | None:
    """The nodes a step's target names now (None: a role nobody plays at the moment)."""
    if target == "all":
        return tuple(cluster.ids)
    if target not in ROLES:
        return (target,)
    lead = leader(cluster)
    if lead is None:
        return None
    if target == "leader":
        return (str(lead.id),)
    others = sorted(n for n in cluster.alive() if n != lead.id)
    return (others[0],) if others else None


def _validate(cluster: SimCluster, schedule: Sequence[Step]) -> None:
    for s in schedule:
        if s.target in ROLES and cluster.replicas == 1:
            raise ValueError(f"an unreplicated cluster has no {s.target}: name the node "
                             "(LabRun.resolved() gives the nodes an R > 1 run crashed).")
        if s.target not in ROLES and s.target != "all" and s.target not in cluster.ids:
            raise ValueError(f"unknown node {s.target!r}; the nodes are {', '.join(cluster.ids)}.")
        if not (s.at >= 0 and s.down > 0):
            raise ValueError(f"a step needs at >= 0 and down > 0, not {s}.")


def _crasher(cluster: SimCluster, step: Step, fired: list[Fired]) -> Any:
    """A SimPy process: wait for the step's time (absolute here, and its role to be played),
    crash, restart."""
    yield cluster.env.timeout(max(0.0, step.at - cluster.now))
    nodes = _resolve(cluster, step.target)
    while nodes is None:
        yield cluster.env.timeout(0.05)
        nodes = _resolve(cluster, step.target)
    now = cluster.now
    if step.target == "all":
        cluster.power_loss(nodes)
    else:
        cluster.crash(nodes[0])
    for nid in nodes:
        cluster.restart(nid, at=now + step.down)
    fired.append(Fired(step, now, nodes, now + step.down))


def _final_reads(cluster: SimCluster, keys: int, process: int, timeout: float, final: dict[str, str | None],
                 attempts: int = 20) -> Any:
    """A SimPy process: read every key once successfully (up to ``attempts`` tries each), in the
    history as client ``process``; the values found go into ``final``."""
    env = cluster.env
    for i in range(keys):
        key = f"k{i}"
        for attempt in range(attempts):
            up = cluster.alive() or cluster.ids
            node = up[(i + attempt) % len(up)]
            rec = Operation(process, "get", key, None, node, env.now)
            cluster.history.ops.append(rec)
            answered = env.event()

            def on_reply(reply: Reply, answered: Any = answered) -> None:
                if not answered.triggered:
                    answered.succeed(reply)

            cluster.submit(node, Get(key=key.encode()), on_reply)
            yield answered | env.timeout(timeout)
            rec.complete = env.now
            if answered.triggered:
                reply = answered.value
                assert isinstance(reply, Reply)
                rec.outcome, rec.error = classify(reply), reply.error
                if reply.ok:
                    rec.result = reply.value.decode() if reply.value is not None else None
            else:
                rec.outcome, rec.error = UNKNOWN, "client_timeout"
            if rec.outcome == OK:
                final[key] = rec.result
                break
            yield env.timeout(0.1)


def run_lab(seed: int, config: LabConfig, schedule: Sequence[Step],
            setup: Callable[[SimCluster], None] | None = None) -> LabRun:
    """Run the workload under ``schedule`` with ``config``, then read every key; ``setup`` is
    called with the cluster before anything runs (to add observers)."""
    cluster = SimCluster(seed, config.nodes, config.node_config(), latency=LogNormal(0.001, 0.5),
                         sync_time=config.sync_time or None, replicas=config.replicas, observe=False)
    _validate(cluster, schedule)
    if setup is not None:
        setup(cluster)
    cluster.run(until=config.warmup)
    if config.replicas > 1:  # the first election is not part of the comparison
        while leader(cluster) is None and cluster.now < config.warmup + 30:
            cluster.run(until=cluster.now + 0.05)
    start = cluster.now
    nodes: Callable[[], Sequence[str]] = (
        (lambda: cluster.alive() or cluster.ids) if config.balancer else (lambda: cluster.ids))
    # exactly config.ops operations (the first ops % clients clients do one more), each client
    # paced to span the duration
    for idx, count in enumerate(split_ops(config.ops, config.clients)):
        pace = config.duration / count if count else config.duration
        workload = Workload(ops=count, keys=config.keys, think=pace * 0.1, pace=pace,
                            timeout=config.client_timeout)
        cluster.clients.append(SimClient(cluster.env, idx, stream(seed, "client", idx), cluster.history,
                                         cluster.trace, nodes, cluster.submit, workload))
    fired: list[Fired] = []
    for step in schedule:
        cluster.env.process(_crasher(cluster, replace(step, at=start + step.at), fired))
    cluster.run()
    n_client_ops = len(cluster.history)
    # every restart done and every node up for ``settle`` seconds, then the final reads
    last_restart = max([f.restart for f in fired], default=start)
    cluster.run(until=max(cluster.now, last_restart) + config.settle)
    final: dict[str, str | None] = {}
    done = cluster.env.process(_final_reads(cluster, config.keys, config.clients, config.client_timeout, final))
    cluster.env.run(until=done)
    fired = sorted((replace(f, step=replace(f.step, at=f.step.at - start)) for f in fired), key=lambda f: f.time)
    return LabRun(seed, config, cluster, fired, final, list(cluster.history.ops[:n_client_ops]), start)


__all__ = ["ROLES", "Fired", "LabConfig", "LabRun", "Step", "availability", "lost_writes", "percentiles",
           "run_lab"]
