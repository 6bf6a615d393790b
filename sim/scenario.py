"""Ready-made scenarios and the run summary that ``python -m sim`` prints.

``run_default`` is the main job on built-in defaults: 5 nodes, 3 clients doing a few thousand
operations against random nodes, 1% message loss, and one 2-second partition that cuts the
cluster in a minority and a majority halfway through. It returns a :class:`RunReport` whose
``summary()`` is what the CLI prints, ending in the trace digest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kvcore.config import NodeConfig
from kvcore.membership import SwimConfig
from sim.clients import History, Workload, split_ops
from sim.cluster import Fault, SimCluster
from sim.latency import Latency, LogNormal


@dataclass
class RunReport:
    seed: int
    nodes: int
    history: History
    faults: list[Fault]
    messages: dict[str, tuple[int, int]]
    dropped: dict[str, int]
    delivered: int
    sim_time: float
    digest: str
    rule_hits: dict[str, int] = field(default_factory=dict)

    def latencies(self, outcome: str | None = "ok") -> np.ndarray:
        return np.array(
            [op.latency for op in self.history if op.latency is not None and (outcome is None or op.outcome == outcome)],
            dtype=float,
        )

    def percentiles(self) -> dict[str, float]:
        lat = self.latencies()
        if lat.size == 0:
            return {}
        ps = np.percentile(lat, [50, 90, 99])
        return {"p50": float(ps[0]), "p90": float(ps[1]), "p99": float(ps[2]), "max": float(lat.max())}

    def summary(self) -> str:
        lines: list[str] = []
        oc = self.history.outcomes()
        total = sum(oc.values())
        lines.append(f"storelab sim: {self.nodes} nodes, seed {self.seed}, {self.sim_time:.3f} simulated seconds")
        lines.append("")
        lines.append(f"operations: {total}")
        for k in ("ok", "fail", "unknown"):
            share = oc[k] / total if total else 0.0
            lines.append(f"  {k:<8}{oc[k]:>8}  {share:6.1%}")
        errs = self.history.errors()
        errs.pop("not_found", None)
        if errs:
            lines.append("  errors: " + ", ".join(f"{k} {v}" for k, v in errs.items()))
        pct = self.percentiles()
        if pct:
            lines.append("latency of ok operations (simulated ms): " + "  ".join(
                f"{k} {v * 1000:.2f}" for k, v in pct.items()))
        if self.faults:
            lines.append("")
            lines.append("faults:")
            for f in self.faults:
                end = f" until {f.end:.3f}" if f.end is not None else ""
                lines.append(f"  t={f.time:8.3f}  {f.verb:<12} {f.args}{end}")
        lines.append("")
        lines.append(f"{'message kind':<16}{'sent':>10}{'bytes':>12}")
        for k, (c, b) in self.messages.items():
            lines.append(f"{k:<16}{c:>10}{b:>12}")
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        lines.append(f"delivered {self.delivered}; dropped: {dropped}")
        lines.append(f"seed: {self.seed}")
        lines.append(f"digest: {self.digest}")
        return "\n".join(lines)


def report(cluster: SimCluster) -> RunReport:
    return RunReport(
        seed=cluster.seed,
        nodes=len(cluster.ids),
        history=cluster.history,
        faults=list(cluster.faults),
        messages=cluster.messages_by_kind(),
        dropped=dict(cluster.net.stats.dropped),
        delivered=cluster.net.stats.delivered,
        sim_time=cluster.now,
        digest=cluster.digest(),
        rule_hits=cluster.net.rule_hits(),
    )


#: Node settings for the default scenario: a 1 s forward timeout.
DEMO_CONFIG = NodeConfig(forward_timeout=1.0)
#: SWIM settings for the default scenario: memberlist's LAN preset with a 0.5 s probe interval, so
#: that a 2-second partition gets members suspected (and requests still forwarded to them).
DEMO_SWIM = SwimConfig.lan(probe_interval=0.5, probe_timeout=0.2)


def run_default(
    seed: int = 1,
    nodes: int = 5,
    ops: int = 3000,
    clients: int = 3,
    loss: float = 0.01,
    duration: float = 20.0,
    partition: bool = True,
    partition_length: float = 2.0,
    latency: Latency | None = None,
    codec: bool = True,
    keep_trace: bool = False,
    config: NodeConfig | None = None,
    swim: SwimConfig | None = None,
    **cluster_kwargs: Any,
) -> tuple[SimCluster, RunReport]:
    """The default scenario; ``duration`` is how long (simulated) the clients keep working, and
    ``ops`` how many operations they do in all."""
    if ops < 0 or clients < 1 or nodes < 1 or not (math.isfinite(duration) and duration > 0):
        raise ValueError("nodes and clients must be at least 1, ops at least 0, duration positive and finite")
    cluster = SimCluster(
        seed, nodes, config or DEMO_CONFIG, latency=latency or LogNormal(0.001, 0.5),
        codec=codec, keep_trace=keep_trace, swim=swim or DEMO_SWIM, **cluster_kwargs,
    )
    cluster.set_loss(loss)
    if partition and nodes > 1:
        minority = cluster.ids[: max(1, (nodes - 1) // 2)]
        start = duration / 2 - partition_length / 2
        cluster.partition(minority, at=start)
        cluster.heal(at=start + partition_length)
    # exactly `ops` operations (the first ops % clients clients do one more), each client paced
    # with a little jitter so that it spans `duration` whatever the timeouts
    for count in split_ops(ops, clients):
        pace = duration / count if count else duration
        cluster.add_clients(1, Workload(ops=count, keys=50, think=pace * 0.1, pace=pace, timeout=3.0))
    cluster.run()
    return cluster, report(cluster)
