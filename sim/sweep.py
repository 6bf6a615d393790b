"""Many seeds under a nemesis, each history checked for linearizability: ``python -m sim check``.

Theory of operation
-------------------
:func:`run_seed` is one experiment, a pure function of its seed and a :class:`RunConfig`: build a
SimCluster (5 nodes by default, SWIM timed for runs of a few seconds), start the clients, let a
:class:`~sim.nemesis.Nemesis` drawn from the same seed break things between 0.5 s and the last
``tail`` seconds of the run (the quiet tail lets the cluster recover, so that the last reads see
what the store really kept), run until every client has finished, then check the history with
:func:`checker.check`. It returns a :class:`SeedResult`: the verdict, the outcome counts, the
latencies of the ``ok`` operations, the nemesis's evidence, the trace digest and, for a violation,
the witness. Everything in it except the two wall-clock timings is a function of the seed and the
config, so the same seed gives an equal result in any process. (The checker's time budget is the
one exception that can leak in: a seed whose check runs out of time has the verdict ``unknown``,
reported as *undecided*: "unknown" is left to mean an operation's outcome.)

The task of a sweep is :func:`seed_task`: :func:`run_seed`'s work, with the files it would
write (the history, the timeline of a violation) sent back as texts in a :class:`SeedOutput`.
:func:`sweep` runs many seeds on a :class:`concurrent.futures.ProcessPoolExecutor` (spawned
workers, so it is safe from notebooks and threads), or on a Dask cluster (``client=``, see
:mod:`sim.sweepdask`); one consumer, :func:`collect`, takes the outputs as they finish from
either, writes their files into ``out``, moves a tqdm progress bar, and the results make a
:class:`SweepResult`: a printable summary, a numpy structured array per seed
(:meth:`SweepResult.table`) and per fault (:meth:`SweepResult.fault_table`), and
:meth:`SweepResult.to_pandas` for those who have pandas (it is not a dependency).

Workloads. ``kv``: get/put/delete (weights 0.5/0.4/0.1) over ``keys`` keys, every put writing a
value unique in the run, checked against the ``kv`` model. ``register``: one key, get/put only,
checked as a single register (``read``/``write``): all the concurrency lands on one object, which
makes the check harder and the violations easier to hit.

With ``replicas`` above 1 a run first sets the group up, as a Jepsen test's database setup comes
before its generator: the clients start, and the nemesis's window opens, once every node knows
one leader (:func:`group_ready`, at most ``SETUP_LIMIT`` simulated seconds), so that a run's
availability measures its faults, not the first election (which cost some 6 % of every run's
operations, ``no_leader``, before). Every time in the run is then counted from that moment.

Nodes are durable by default (``NodeConfig.durable``: every write reaches the node's durable
storage before it is acknowledged), because the default nemesis (:data:`sim.nemesis.DEFAULT`,
``all``) crashes nodes. With ``durable=False`` (``--no-durable``; nodes as configured by default,
memory only, Redis without persistence) a crash forgets acknowledged writes, and a sweep with
``crash`` in its nemesis reports the violations, each with the seed that reproduces it.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import shlex
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from checker import check, get_model, verdict_text
from checker.history import jsonl_text
from kvcore.config import NodeConfig
from kvcore.membership import SwimConfig
from kvcore.raft.config import SAFE
from kvcore.replica import ReplicaConfig
from sim.cliargs import MAX_DURATION, finite, read_mode_problems
from sim.clients import FAIL, OK, UNKNOWN, Workload, split_ops
from sim.cluster import SimCluster, sim_cluster_config
from sim.latency import LogNormal, parse_latency
from sim.nemesis import DEFAULT, FaultRecord, FaultReport, Nemesis, NemesisRun, Package

WORKLOADS = ("kv", "register")

#: Node settings for short runs: a forward to an unreachable owner gives up after 1 s.
#: (``durable`` is set per run, from RunConfig.durable.)
SWEEP_CONFIG = NodeConfig(forward_timeout=1.0)
#: SWIM for runs of a few seconds: memberlist's LAN preset with probes every 0.5 s and a
#: suspicion of 3 intervals (a member cut off for 2-3 s gets declared dead, so the runs see
#: owner_down as well as timeouts), and a push-pull every 2 s so that the two sides of a healed
#: partition re-merge within the quiet tail rather than after the default 30 s.
SWEEP_SWIM = SwimConfig.lan(probe_interval=0.5, probe_timeout=0.2, suspicion_mult=3, push_pull_interval=2.0)


@dataclass(frozen=True)
class RunConfig:
    """What one seed runs. Times in simulated seconds."""

    workload: str = "kv"
    #: comma list of nemesis kinds (sim.nemesis.KINDS, or an alias: none, network, all, raft)
    nemesis: str = DEFAULT
    nodes: int = 5
    clients: int = 5
    #: operations per seed, over all clients
    ops: int = 200
    #: how long the clients keep working (paced, so a run lasts about this long)
    duration: float = 10.0
    #: keys of the kv workload (the register workload has one)
    keys: int = 8
    #: the clients' timeout: past it an operation's outcome is unknown
    client_timeout: float = 1.5
    #: quiet seconds at the end of the run, with every fault undone
    tail: float = 2.0
    #: background message loss, on all the time
    loss: float = 0.0
    #: the checker's budget per seed, seconds of wall time (past it: undecided, verdict "unknown")
    check_timeout: float = 10.0
    #: nodes write through to durable storage, so a crash loses nothing acknowledged
    durable: bool = True
    #: how long a storage sync takes, in the latency syntax ("const:0.002"); "" for no time
    #: (sim.storage: a crash during a sync loses the writes it carried, which a node answers
    #: only once synced: Router.settle, the Raft group)
    sync_time: str = ""
    #: 1: one copy of each key (the store as it was); nodes: one Raft group of every node that
    #: serves the whole key space (kvcore.replica), its log its durability
    replicas: int = 1
    #: how a replicated group's reads confirm the leader (ReplicaConfig.read_only): "safe", a
    #: heartbeat round per batch of reads, or "lease", none while the leader's lease holds
    #: (linearizable only while clocks drift within the bound: see the ``clock`` nemesis)
    read_mode: str = SAFE

    def problems(self) -> list[str]:
        out = []
        if self.replicas != 1 and self.replicas != self.nodes:
            out.append(f"replicas must be 1 or the number of nodes ({self.nodes}), not {self.replicas}: "
                       "one Raft group over all nodes; several groups over more nodes come next.")
        if self.workload not in WORKLOADS:
            out.append(f"workload must be one of {', '.join(WORKLOADS)}, not {self.workload!r}.")
        if self.nodes < 1 or self.clients < 1 or self.keys < 1:
            out.append("nodes, clients and keys must be at least 1.")
        if self.ops < 1:
            out.append("ops must be at least 1.")
        if not (finite(self.duration, self.tail) and 0 <= self.tail < self.duration):
            out.append(f"duration must be a finite number of seconds longer than the quiet tail "
                       f"({self.tail!r} s), not {self.duration!r}.")
        elif self.duration > MAX_DURATION:
            out.append(f"duration must be at most {MAX_DURATION:,.0f} s (a simulated day), not {self.duration!r}.")
        elif self.duration - self.tail < min(0.5, self.duration / 4):
            # the faults' window (simulate) starts at min(0.5, duration / 4) and ends at the tail
            out.append(f"duration must leave the faults a window before the quiet tail: at least the tail "
                       f"({self.tail!r} s) plus 0.5 s (or a quarter of the duration, if less), not "
                       f"{self.duration!r}.")
        if not (finite(self.client_timeout) and self.client_timeout > 0):
            out.append(f"the client timeout must be a positive finite number of seconds, not "
                       f"{self.client_timeout!r}.")
        if not (finite(self.check_timeout) and self.check_timeout > 0):
            out.append(f"the checker's timeout (--check-timeout) must be a positive finite number of "
                       f"seconds, not {self.check_timeout!r}.")
        if not 0.0 <= self.loss <= 1.0:
            out.append("loss must be within 0 and 1.")
        out += read_mode_problems(self.read_mode, self.replicas)
        if not self.durable and self.replicas > 1:
            out.append("memory-only nodes (--no-durable) are for replicas 1 only: a replicated node "
                       "keeps its Raft log durable and rebuilds its store from it.")
        if self.sync_time:
            try:
                parse_latency(self.sync_time)
            except ValueError as e:
                out.append(f"sync time: {e}")
        try:
            Nemesis(self.nemesis)
        except ValueError as e:
            out.append(str(e))
        return out

    def validate(self) -> RunConfig:
        problems = self.problems()
        if problems:
            raise ValueError(" ".join(problems))
        return self

    @property
    def node_config(self) -> NodeConfig:
        # a replicated node's durability is its Raft log: the store is rebuilt from it
        return replace(SWEEP_CONFIG, durable=self.durable and self.replicas == 1)

    @property
    def model(self) -> str:
        return "register" if self.workload == "register" else "kv"

    def describe(self) -> str:
        kind = ("nodes in one Raft group" + (f" ({self.read_mode} reads)" if self.read_mode != SAFE else "")
                if self.replicas > 1
                else f"{'durable' if self.durable else 'memory-only'} nodes")
        return (f"workload {self.workload}, nemesis {Nemesis(self.nemesis).describe()}; {self.nodes} "
                f"{kind}, {self.clients} clients, "
                f"{self.ops} ops over {self.duration:g} s per seed")

    def cli_args(self) -> str:
        """The ``python -m sim check`` flags that give this config, shell-quoted, every number
        exactly (a float as its shortest round-trip ``repr``: ``7.1234567``, not ``7.12346``).
        ``client_timeout`` and ``tail`` have no flag: a config that changes them has no command."""
        d, out = RunConfig(), []
        for name, flag in (("workload", "--workload"), ("nemesis", "--nemesis"), ("nodes", "--nodes"),
                           ("clients", "--clients"), ("ops", "--ops"), ("duration", "--duration"),
                           ("keys", "--keys"), ("loss", "--loss"), ("check_timeout", "--check-timeout")):
            v = getattr(self, name)
            if v != getattr(d, name):
                out.append(f"{flag} {shlex.quote(repr(v) if isinstance(v, float) else str(v))}")
        if not self.durable:
            out.append("--no-durable")
        if self.sync_time:
            out.append(f"--sync-time {shlex.quote(self.sync_time)}")
        if self.replicas != 1:
            out.append(f"--replicas {self.replicas}")
        if self.read_mode != SAFE:
            out.append(f"--read-mode {shlex.quote(self.read_mode)}")
        return " ".join(out)

    @property
    def replica_config(self) -> ReplicaConfig | None:
        """The replicated group's settings (None: the defaults, as before read modes existed)."""
        return ReplicaConfig(read_only=self.read_mode) if self.read_mode != SAFE else None


@dataclass(frozen=True)
class SeedResult:
    """One seed's run and verdict. Equal for equal (seed, config), timings aside."""

    seed: int
    verdict: str  # linearizable | not_linearizable | unknown | error
    ops: int
    ok: int
    fail: int
    unknown: int
    sim_time: float
    digest: str
    #: latencies of the ok operations, seconds, in invoke order
    latencies: tuple[float, ...] = field(default=(), repr=False)
    #: the nemesis's faults with their evidence
    faults: tuple[FaultRecord, ...] = field(default=(), repr=False)
    #: for a violation: the witness operations (one line each), the key, the states the key may
    #: hold when the witness begins, and the operation whose completion broke it
    witness: tuple[str, ...] = ()
    witness_key: str | None = None
    start_states: tuple[str, ...] = ()
    culprit: str = ""
    #: the exception, when the run itself failed (a bug: the store or the sim raised)
    error: str = ""
    #: a replicated run: the violations of Figure 3's properties (checker.RaftProperties), one
    #: sentence each; empty when every Ready of every node kept them
    figure3: tuple[str, ...] = ()
    check_seconds: float = field(default=0.0, compare=False)
    wall_seconds: float = field(default=0.0, compare=False)

    @property
    def availability(self) -> float:
        return self.ok / self.ops if self.ops else 0.0

    def percentiles(self) -> dict[str, float]:
        return _percentiles(self.latencies)

    def report(self) -> dict[str, Any]:
        """Everything deterministic, as JSON-ready data."""
        d = asdict(self)
        del d["latencies"], d["check_seconds"], d["wall_seconds"]
        d["availability"] = self.availability
        d["latency_ms"] = {k: v * 1000 for k, v in self.percentiles().items()}
        return d

    @property
    def error_line(self) -> str:
        """The exception of a run that raised, in one line (its traceback's last line)."""
        lines = [line for line in self.error.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def describe(self) -> str:
        head = (f"seed {self.seed}: {verdict_text(self.verdict)}; {self.ops} ops, {self.ok} ok, "
                f"{self.fail} fail, {self.unknown} unknown outcome; {len(self.faults)} faults; "
                f"digest {self.digest}")
        if self.error:
            return head + "\n" + self.error
        if not self.witness:
            return head
        lines = [head, f"  key {self.witness_key!r} may hold {' or '.join(self.start_states)} when this begins:"]
        lines += [f"    {w}" for w in self.witness]
        lines.append(f"  culprit: {self.culprit}")
        return "\n".join(lines)


def _percentiles(latencies: Sequence[float]) -> dict[str, float]:
    if not latencies:
        return {}
    arr = np.asarray(latencies, dtype=float)
    p = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2]), "max": float(arr.max())}


# --- one seed --------------------------------------------------------------------------------


@dataclass
class SeedRun:
    """A finished simulation before the check: the cluster, its nemesis and its events."""

    seed: int
    config: RunConfig
    cluster: SimCluster
    nemesis: NemesisRun
    #: the history as the checker reads it (register-shaped for the register workload)
    events: list[dict[str, Any]]

    @property
    def history(self) -> Any:
        return self.cluster.history

    def fault_report(self) -> FaultReport:
        return self.nemesis.report(self.cluster.history)


def _node_factory(node_class: type, config: RunConfig) -> Any:
    """Build nodes of ``node_class`` the way SimCluster._default_node builds a static cluster."""
    cluster = sim_cluster_config(config.nodes)

    def make(rt: Any, spec: Any) -> Any:
        return node_class(rt, config.node_config, cluster, swim=SWEEP_SWIM)

    return make


#: the longest a replicated run's setup (its first leader) may take, in simulated seconds
SETUP_LIMIT = 10.0


def group_ready(cluster: SimCluster, step: float = 0.01, limit: float = SETUP_LIMIT) -> float:
    """Run ``cluster`` until every node of its group knows one leader, checking every ``step``
    simulated seconds, for at most ``limit``; the time it reached."""
    while cluster.now < limit:
        leads = {n.replica.raft.lead for n in cluster.nodes()}
        if len(leads) == 1 and None not in leads:
            break
        cluster.run(until=cluster.now + step)
    return cluster.now


def simulate(seed: int, config: RunConfig | None = None, *, node_class: type | None = None,
             keep_trace: bool = False, packages: Sequence[Package] | None = None) -> SeedRun:
    """Run one seed's simulation (no check). ``node_class``: a kvcore Node subclass to run
    instead of Node on every node (for tests of the checker's teeth). ``packages``: the
    nemesis's fault packages instead of ``config.nemesis``'s (a kind with bounds of its own,
    e.g. ``ClockSkews(rates=(0.95, 1.05))``), drawn from the same seed."""
    cfg = (config or RunConfig()).validate()
    cluster = SimCluster(
        seed, cfg.nodes, cfg.node_config, latency=LogNormal(0.001, 0.5), swim=SWEEP_SWIM,
        keep_trace=keep_trace,
        node_factory=_node_factory(node_class, cfg) if node_class is not None else None,
        sync_time=cfg.sync_time or None, replicas=cfg.replicas, replica=cfg.replica_config,
    )
    if cfg.loss:
        cluster.set_loss(cfg.loss)
    t0 = group_ready(cluster) if cfg.replicas > 1 else 0.0
    nemesis = Nemesis(cfg.nemesis if packages is None else packages, seed).apply(cluster, t0 + min(0.5, cfg.duration / 4),
                                               t0 + cfg.duration - cfg.tail)
    # exactly cfg.ops operations (the first ops % clients clients do one more), each client
    # paced to span the duration
    for count in split_ops(cfg.ops, cfg.clients):
        pace = cfg.duration / count if count else cfg.duration
        if cfg.workload == "register":
            workload = Workload(ops=count, keys=1, mix=(0.5, 0.5, 0.0), think=pace * 0.1, pace=pace,
                                timeout=cfg.client_timeout, prefix="r")
        else:
            workload = Workload(ops=count, keys=cfg.keys, think=pace * 0.1, pace=pace,
                                timeout=cfg.client_timeout)
        cluster.add_clients(1, workload)
    cluster.run()
    events = cluster.history.events()
    if cfg.workload == "register":
        events = [_as_register(e) for e in events]
    return SeedRun(seed, cfg, cluster, nemesis, events)


def _as_register(event: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in event.items() if k != "key"}
    out["f"] = {"get": "read", "put": "write"}[event["f"]]
    return out


def run_seed(seed: int, config: RunConfig | None = None, *, node_class: type | None = None,
             history_path: str | Path | None = None, timeline_path: str | Path | None = None,
             **overrides: Any) -> SeedResult:
    """Run and check one seed. ``overrides`` replace fields of ``config`` (e.g. ``ops=100``).
    ``history_path``: write the checked history there (JSON lines); ``timeline_path``: write
    the run's HTML timeline there, witness outlined, when the history is *not* linearizable.
    An exception in the run is reported as verdict ``error`` with its traceback."""
    cfg = replace(config or RunConfig(), **overrides)
    output = seed_task(seed, cfg, node_class, history_path is not None, timeline_path is not None)
    output.write(history_path, timeline_path)
    return output.result


@dataclass(frozen=True)
class SeedOutput:
    """What one seed's task sends back: its result and, when asked for, the texts of its files
    (so that the side that collects them writes them: a Dask worker need not share its disk)."""

    result: SeedResult
    #: the checked history as JSON lines
    history: str | None = None
    #: the HTML timeline (only for a history that is not linearizable)
    timeline: str | None = None

    def write(self, history_path: str | Path | None, timeline_path: str | Path | None) -> None:
        for text, path in ((self.history, history_path), (self.timeline, timeline_path)):
            if text is not None and path is not None:
                Path(path).write_text(text, encoding="utf-8")

    def write_into(self, out: str | Path) -> None:
        """Into the directory ``out``: ``seed-N.jsonl`` and ``seed-N.html``."""
        seed = self.result.seed
        self.write(Path(out) / f"seed-{seed}.jsonl", Path(out) / f"seed-{seed}.html")


def seed_task(seed: int, cfg: RunConfig, node_class: type | None = None, history: bool = False,
              timeline: bool = False) -> SeedOutput:
    """One seed, run and checked: the task of a sweep, in a pool process or on a Dask worker.
    Pure: the output is a function of its arguments (the wall-clock timings aside), so a task
    run twice (a lost worker's task, retried) gives the same output. ``history``/``timeline``:
    send back the texts of those files."""
    started = time.perf_counter()
    try:
        run = simulate(seed, cfg, node_class=node_class)
    except Exception:
        return SeedOutput(SeedResult(seed, "error", 0, 0, 0, 0, 0.0, "", error=traceback.format_exc(limit=8),
                                     wall_seconds=time.perf_counter() - started))
    history_text = jsonl_text(run.events) if history else None
    result = check(run.events, model=cfg.model, timeout=cfg.check_timeout)
    oc = run.cluster.history.outcomes()
    lat = tuple(op.latency for op in run.cluster.history if op.outcome == OK and op.latency is not None)
    witness: tuple[str, ...] = ()
    key = None
    states: tuple[str, ...] = ()
    culprit = ""
    ce = result.counterexample
    timeline_text = None
    if timeline and result.verdict != "linearizable":
        from sim.timeline import timeline_html

        timeline_text = timeline_html(run.events, run.nemesis.records, witness=result.witness,
                                      title=f"seed {seed}: {verdict_text(result.verdict)} ({cfg.describe()})")
    if ce is not None:
        model = get_model(cfg.model)
        witness = tuple(op.describe() for op in ce.ops)
        key = ce.key
        states = tuple(model.describe_state(s) for s in ce.start_states)
        culprit = ce.culprit.describe()
    seed_result = SeedResult(
        seed=seed, verdict=result.verdict, ops=len(run.cluster.history), ok=oc[OK], fail=oc[FAIL],
        unknown=oc[UNKNOWN], sim_time=run.cluster.now, digest=run.cluster.digest(), latencies=lat,
        faults=tuple(run.nemesis.records), witness=witness, witness_key=key, start_states=states,
        culprit=culprit, check_seconds=result.elapsed, wall_seconds=time.perf_counter() - started,
        figure3=tuple(run.cluster.raft_check.violations()) if run.cluster.raft_check is not None else (),
    )
    return SeedOutput(seed_result, history_text, timeline_text)


# --- many seeds -------------------------------------------------------------------------------

#: the most seeds one sweep takes: it keeps every seed's result (its latencies and faults, some
#: 10 kB) for the summary and the tables, so a million seeds already want some 10 GB; run more
#: as several sweeps (``--first-seed``)
MAX_SEEDS = 1_000_000
#: how many raised seeds the summary names with their exception
SHOWN_ERRORS = 3


@dataclass
class SweepResult:
    config: RunConfig
    results: list[SeedResult]
    processes: int = 1
    wall_seconds: float = 0.0
    #: the Dask scheduler's address when the seeds ran on a Dask cluster (``processes``: its
    #: worker threads)
    dask: str | None = None

    # --- counts

    def by_verdict(self, verdict: str) -> list[SeedResult]:
        return [r for r in self.results if r.verdict == verdict]

    @property
    def violations(self) -> list[int]:
        """The seeds whose history is not linearizable (each reproduces its violation)."""
        return [r.seed for r in self.by_verdict("not_linearizable")]

    @property
    def figure3_violations(self) -> list[int]:
        """The seeds of a replicated sweep where a Raft property of Figure 3 broke."""
        return [r.seed for r in self.results if r.figure3]

    @property
    def linearizable(self) -> int:
        return len(self.by_verdict("linearizable"))

    @property
    def unknown(self) -> int:
        return len(self.by_verdict("unknown"))

    @property
    def errors(self) -> list[int]:
        return [r.seed for r in self.by_verdict("error")]

    @property
    def availability(self) -> float:
        """ok operations / all operations, over every seed."""
        total = sum(r.ops for r in self.results)
        return sum(r.ok for r in self.results) / total if total else 0.0

    def percentiles(self) -> dict[str, float]:
        """Latency percentiles (seconds) of every ok operation of every seed."""
        return _percentiles([x for r in self.results for x in r.latencies])

    def faults_by_kind(self) -> dict[str, dict[str, float]]:
        """Per kind, summed over seeds: fired, skipped, seconds active, dropped, delayed, downtime."""
        out: dict[str, dict[str, float]] = {}
        for r in self.results:
            for kind, d in FaultReport(r.faults).by_kind().items():
                acc = out.setdefault(kind, dict.fromkeys(d, 0))
                for k, v in d.items():
                    acc[k] += v
        return dict(sorted(out.items()))

    # --- tables

    SEED_COLUMNS = (
        ("seed", "i8"), ("verdict", "U16"), ("ops", "i8"), ("ok", "i8"), ("fail", "i8"),
        ("unknown", "i8"), ("availability", "f8"), ("p50_ms", "f8"), ("p90_ms", "f8"),
        ("p99_ms", "f8"), ("max_ms", "f8"), ("faults", "i8"), ("dropped", "i8"),
        ("downtime", "f8"), ("sim_time", "f8"), ("check_s", "f8"), ("wall_s", "f8"),
        ("digest", "U32"),
    )

    def table(self) -> np.ndarray:
        """One row per seed, as a numpy structured array (latencies in ms; NaN: no ok op)."""
        arr = np.zeros(len(self.results), dtype=list(self.SEED_COLUMNS))
        for i, r in enumerate(self.results):
            p = r.percentiles()
            fired = [f for f in r.faults if f.fired is not None]
            arr[i] = (
                r.seed, r.verdict, r.ops, r.ok, r.fail, r.unknown, r.availability,
                p.get("p50", np.nan) * 1000, p.get("p90", np.nan) * 1000, p.get("p99", np.nan) * 1000,
                p.get("max", np.nan) * 1000, len(fired), sum(f.dropped for f in fired),
                sum(f.downtime for f in fired), r.sim_time, r.check_seconds, r.wall_seconds, r.digest,
            )
        return arr

    FAULT_COLUMNS = (
        ("seed", "i8"), ("kind", "U16"), ("target", "U64"), ("start", "f8"), ("end", "f8"),
        ("fired", "f8"), ("undone", "f8"), ("dropped", "i8"), ("delayed", "i8"), ("sent", "i8"),
        ("downtime", "f8"),
    )

    def fault_table(self) -> np.ndarray:
        """One row per fault of every seed (NaN: a time that never came, e.g. a skipped fault)."""
        rows = [(r.seed, f) for r in self.results for f in r.faults]
        arr = np.zeros(len(rows), dtype=list(self.FAULT_COLUMNS))
        for i, (seed, f) in enumerate(rows):
            arr[i] = (seed, f.kind, f.target, f.start, f.end,
                      np.nan if f.fired is None else f.fired, np.nan if f.undone is None else f.undone,
                      f.dropped, f.delayed, f.sent, f.downtime)
        return arr

    def to_pandas(self, faults: bool = False) -> Any:
        """:meth:`table` (or :meth:`fault_table`) as a pandas DataFrame. pandas is optional."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "SweepResult.to_pandas() needs pandas, which storelab does not depend on: "
                "'pip install pandas', or use SweepResult.table(), a numpy structured array."
            ) from None
        return pd.DataFrame.from_records(self.fault_table() if faults else self.table())

    # --- reports

    def to_json(self, per_seed: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "config": asdict(self.config),
            "seeds_run": len(self.results),
            "linearizable": self.linearizable,
            "violations": self.violations,
            "figure3_violations": self.figure3_violations,
            "unknown": self.unknown,
            "errors": self.errors,
            "availability": self.availability,
            "latency_ms": {k: v * 1000 for k, v in self.percentiles().items()},
            "faults": self.faults_by_kind(),
            "processes": self.processes,
            "wall_seconds": self.wall_seconds,
        }
        if self.dask is not None:
            out["dask"] = self.dask
        if per_seed:
            out["seeds"] = [
                {"seed": r.seed, "verdict": r.verdict, "ops": r.ops, "ok": r.ok,
                 "availability": r.availability, "digest": r.digest,
                 **({"figure3": list(r.figure3)} if r.figure3 else {})}
                for r in self.results
            ]
        return out

    def summary(self, max_seeds: int = 10) -> str:
        cfg = self.config
        lines = [f"storelab check: {cfg.describe()}", ""]

        def seeds(xs: list[int]) -> str:
            shown = ", ".join(map(str, xs[:max_seeds]))
            return f"  seeds {shown}" + (f", ... ({len(xs) - max_seeds} more)" if len(xs) > max_seeds else "")

        v = self.violations
        lines.append(f"{'seeds run':<22}{len(self.results):>8}")
        lines.append(f"{'linearizable':<22}{self.linearizable:>8}")
        lines.append(f"{'violations':<22}{len(v):>8}" + (seeds(v) if v else ""))
        if cfg.replicas > 1:
            f3 = self.figure3_violations
            lines.append(f"{'Figure 3 (Raft) broken':<22}{len(f3):>8}" + (seeds(f3) if f3 else "")
                         + ("" if f3 else "  (election safety, leader append-only, log matching, "
                            "leader completeness, state machine safety: every Ready checked)"))
            for r in self.results:
                if r.figure3:
                    lines.append(f"  seed {r.seed}: {r.figure3[0]}")
                    break
        lines.append(f"{'undecided (timed out)':<22}{self.unknown:>8}"
                     + (seeds(self.by_verdict_seeds('unknown')) if self.unknown else ""))
        if self.errors:
            lines.append(f"{'errors (run raised)':<22}{len(self.errors):>8}" + seeds(self.errors))
            raised = self.by_verdict("error")
            lines += [f"  seed {r.seed}: {r.error_line}" for r in raised[:SHOWN_ERRORS]]
            more = f"{len(raised) - SHOWN_ERRORS} more; " if len(raised) > SHOWN_ERRORS else ""
            lines.append(f"  ({more}every traceback is in report.json of --out DIR)")
        per_seed = [r.availability for r in self.results if r.ops]
        extra = (f"  (per seed: min {min(per_seed):.1%}, median {float(np.median(per_seed)):.1%})"
                 if per_seed else "")
        lines.append(f"{'availability':<22}{self.availability:>8.1%}{extra}")
        pct = self.percentiles()
        if pct:
            lines.append(f"{'latency of ok ops':<22}" + "  ".join(
                f"{k} {x * 1000:.1f} ms" for k, x in pct.items()))
        kinds = self.faults_by_kind()
        if kinds:
            lines.append("")
            lines.append(f"{'fault':<16}{'fired':>7}{'skipped':>9}{'active s':>10}{'dropped':>10}"
                         f"{'delayed':>10}{'down s':>9}")
            for kind, d in kinds.items():
                lines.append(f"{kind:<16}{int(d['fired']):>7}{int(d['skipped']):>9}{d['seconds']:>10.1f}"
                             f"{int(d['dropped']):>10}{int(d['delayed']):>10}{d['downtime']:>9.1f}")
            if "powerloss" in kinds:
                lost = sum(f.lost_writes for r in self.results for f in r.faults if f.kind == "powerloss")
                lines.append(f"powerloss lost {lost} unsynced writes (sim.storage)")
        check_s = [r.check_seconds for r in self.results]
        lines.append("")
        if check_s:
            lines.append(f"checker: {sum(check_s):.2f} s in all, slowest seed {max(check_s):.2f} s; "
                         f"wall {self.wall_seconds:.1f} s on {self.where()}")
        if v:
            lines.append(self.reproduce(v[0]))
            first = next(r for r in self.results if r.seed == v[0])
            lines.append(first.describe())
        f3 = self.figure3_violations
        if f3 and f3[0] not in v[:1]:  # a Raft property broke, maybe in a linearizable history
            lines.append(self.reproduce(f3[0]))
        if self.errors:
            lines.append(self.reproduce(self.errors[0]))
        return "\n".join(lines)

    def reproduce(self, seed: int) -> str:
        """The command that runs ``seed`` again, as this sweep ran it, and writes its files."""
        flags = self.config.cli_args()
        return f"reproduce: python -m sim check --seed-list {seed}{' ' + flags if flags else ''} --out DIR"

    def where(self) -> str:
        if self.dask is not None:
            return f"{self.processes} Dask worker thread(s) of {self.dask}"
        return f"{self.processes} process(es)"

    def by_verdict_seeds(self, verdict: str) -> list[int]:
        return [r.seed for r in self.by_verdict(verdict)]

    def write(self, out: str | Path) -> None:
        """``report.json`` (every seed's deterministic report and the totals) and ``summary.txt``."""
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        report = self.to_json(per_seed=False)
        report["seeds"] = [r.report() for r in self.results]
        (d / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        (d / "summary.txt").write_text(self.summary() + "\n", encoding="utf-8")


def sweep(
    seeds: Iterable[int],
    config: RunConfig | None = None,
    *,
    processes: int | None = None,
    progress: bool | None = None,
    out: str | Path | None = None,
    node_class: type | None = None,
    client: Any = None,
    **overrides: Any,
) -> SweepResult:
    """Run and check every seed, ``processes`` at a time (default: one per CPU; 1 runs inline),
    or, given a ``client`` (a ``dask.distributed.Client``), as tasks on its Dask cluster
    (:mod:`sim.sweepdask`; ``processes`` is then the cluster's business).

    ``seeds``: at most :data:`MAX_SEEDS`, each run once; a ``range`` is not written out (a pool
    has ``POOL_WINDOW`` seeds per process in flight at a time).
    ``progress``: show a tqdm bar on stderr (default: when stderr is a terminal). ``out``: a
    directory for each seed's history (``seed-N.jsonl``), the timeline of each seed that is not
    linearizable (``seed-N.html``), ``report.json`` and ``summary.txt``; this side writes them,
    from what the tasks send back.
    """
    cfg = replace(config or RunConfig(), **overrides).validate()
    seed_list: Sequence[int] = (seeds if isinstance(seeds, range)  # distinct already, and lazy
                                else list(dict.fromkeys(int(s) for s in seeds)))
    if len(seed_list) > MAX_SEEDS:
        raise ValueError(f"a sweep takes at most {MAX_SEEDS} seeds, not {len(seed_list)}: it keeps "
                         "every seed's result; run more as several sweeps.")
    keep = out is not None
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dask_address = None
    if client is not None:
        from sim.sweepdask import dask_outputs, worker_threads

        procs = worker_threads(client)
        dask_address = str(client.scheduler.address)
        outputs = dask_outputs(client, seed_list, cfg, node_class, keep)
    else:
        procs = max(1, min(processes or os.cpu_count() or 1, len(seed_list) or 1))
        outputs = _pool_outputs(seed_list, cfg, node_class, keep, procs)
    results = collect(outputs, seed_list, out=out, progress=progress)
    res = SweepResult(cfg, results, procs, time.perf_counter() - started, dask=dask_address)
    if out is not None:
        res.write(out)
    return res


#: seeds in flight per pool process (the rest wait in the seed range, not as queued tasks)
POOL_WINDOW = 4


def _pool_outputs(seed_list: Sequence[int], cfg: RunConfig, node_class: type | None, keep: bool,
                  procs: int) -> Iterator[SeedOutput]:
    """The seeds' outputs as they finish, from ``procs`` spawned processes (1: run inline),
    with at most ``POOL_WINDOW`` seeds per process submitted at a time."""
    if procs == 1:
        for s in seed_list:
            yield seed_task(s, cfg, node_class, keep, keep)
        return
    ctx = multiprocessing.get_context("spawn")
    todo = iter(seed_list)
    with ProcessPoolExecutor(max_workers=procs, mp_context=ctx) as pool:
        pending = {pool.submit(seed_task, s, cfg, node_class, keep, keep)
                   for s in itertools.islice(todo, POOL_WINDOW * procs)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                for s in itertools.islice(todo, 1):
                    pending.add(pool.submit(seed_task, s, cfg, node_class, keep, keep))
                yield fut.result()


def collect(outputs: Iterable[SeedOutput], seeds: Sequence[int], *, out: str | Path | None = None,
            progress: bool | None = None) -> list[SeedResult]:
    """Consume finished seeds in any order (a pool's, a Dask cluster's): write each one's files
    into ``out``, move the progress bar, and return the results in the order of ``seeds``.
    A seed that arrives twice (a retried task) counts once; a seed that never arrives is an error."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    results: dict[int, SeedResult] = {}
    violations = 0
    with tqdm(total=len(seeds), disable=not show, unit="seed", file=sys.stderr, desc="checking") as bar:
        for o in outputs:
            r = o.result
            if r.seed in results:
                continue
            if out is not None:
                o.write_into(out)
            results[r.seed] = r
            bar.update(1)
            if r.verdict == "not_linearizable":
                violations += 1
                bar.set_postfix(violations=violations)
    missing = [s for s in seeds if s not in results]
    if missing:
        raise RuntimeError(f"{len(missing)} seeds never came back (first: {missing[0]}).")
    return [results[s] for s in seeds]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sim check``; the command line lives in :mod:`sim.sweepcli`."""
    from sim.sweepcli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
