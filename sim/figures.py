"""``python -m sim figures --out docs/``: the lab's key figures, regenerated from simulated runs.

Theory of operation
-------------------
The README shows a few results so that a visitor sees them without running anything; this
module is the one command that makes them, and the gossip notebook draws its join and
false-positive figures with the same functions, so the README and the notebook cannot drift
apart. Each experiment is two steps: *run* (simulate, return plain numbers: delays, counts)
and *plot* (numbers to a :class:`matplotlib.figure.Figure`, built without pyplot, so no GUI
backend and no global state). The figures:

``join_convergence.png``
    How many gossip rounds a join takes to reach every node, against the mean-field model of
    push gossip with the protocol's fanout, piggybacking and transmit limit
    (:func:`sim.measure.swim_gossip_model`): measured median and 10-90 % range across seeds,
    model median and 10-90 % band.
``false_positives.png``
    Live nodes declared dead per node-hour against message loss, Lifeguard on and off, with
    exact 95 % Poisson intervals (:func:`sim.measure.poisson_interval`) on a linear axis.
``partition_timeline.png``
    The tour's run (:mod:`sim.scenario`'s default cluster and workload) with a partition long
    enough for SWIM to declare the cut-off nodes dead: requests to them time out, then fail
    fast with ``owner_down``, drawn by :func:`sim.timeline.plot_timeline`.
``replication.png``
    What a Raft group buys (``notebooks/replication.ipynb`` in one picture): one seeded workload
    and one crash schedule (a follower, then the leader, then a power loss of every node, with
    a storage sync time) on R = 1 memory-only, R = 1 durable and R = 3, run by
    :func:`sim.replication_lab.run_lab`: the ok fraction per 250 ms bin over time with the
    crashes marked, and the acknowledged writes each run lost
    (:func:`sim.replication_lab.lost_writes`).

``--small`` runs every experiment with small parameters (seconds, for the test suite); the
defaults take a few minutes. Runs are deterministic: the same parameters give the same figures.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kvcore.membership import SwimConfig
from kvcore.states import MemberEvent
from sim import measure as M
from sim.cliargs import writable_dir

#: the simulated time at which the join experiment's newcomer joins (the cluster settles first)
JOIN_AT = 5.0
DPI = 100


# --- join convergence --------------------------------------------------------------------------


def join_runs(sizes: Sequence[int], seeds: Sequence[int], fanouts: Sequence[int],
              *, deadline: float = 30.0) -> dict[tuple[int, int], list[np.ndarray]]:
    """(fanout, n) -> one array per seed: each node's delay (s) until it learned of a node that
    joined a static cluster of ``n`` through its seeds (LAN preset, ``gossip_nodes = fanout``).
    NaN for a node that had not learned by ``deadline`` seconds after the join."""
    from sim.cluster import SimCluster

    out: dict[tuple[int, int], list[np.ndarray]] = {}
    for fanout in fanouts:
        swim = SwimConfig.lan(gossip_nodes=fanout)
        for n in sizes:
            for seed in seeds:
                c = SimCluster(seed, n, swim=swim, codec=False)
                new = c.add_node(at=JOIN_AT)
                c.run(until=JOIN_AT + 0.5)
                while c.now < JOIN_AT + deadline:
                    if not np.isnan(M.learned_times(c, "join", new, JOIN_AT)).any():
                        break
                    c.run(until=c.now + 0.5)
                out.setdefault((fanout, n), []).append(M.learned_times(c, "join", new, JOIN_AT) - JOIN_AT)
    return out


@dataclass(frozen=True)
class JoinRow:
    """One (fanout, n): rounds until everyone / half knew, measured (quantiles across seeds)
    and modelled."""

    fanout: int
    n: int
    seeds: int
    all_q: tuple[float, float, float]  # measured 10 %, median, 90 %
    half_median: float
    model_all_q: tuple[float, float, float]
    model_half: float


def join_table(join: dict[tuple[int, int], list[np.ndarray]]) -> list[JoinRow]:
    """Measured against modelled rounds, one row per (fanout, n) of ``join`` (LAN preset)."""
    rows = []
    for (fanout, n), runs in sorted(join.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        swim = SwimConfig.lan(gossip_nodes=fanout)
        every = np.array([M.time_to_fraction(d, 1.0) for d in runs]) / swim.gossip_interval
        half = np.array([M.time_to_fraction(d, 0.5) for d in runs]) / swim.gossip_interval
        model = M.swim_gossip_model(n, swim)
        q10, q50, q90 = (model.all_informed_quantile(q) for q in (0.1, 0.5, 0.9))
        rows.append(JoinRow(fanout, n, len(runs), _quantiles(every), float(np.nanmedian(half)),
                            (q10, q50, q90), model.time_to_fraction(0.5)))
    return rows


def _quantiles(xs: np.ndarray) -> tuple[float, float, float]:
    xs = np.asarray(xs, dtype=float)
    xs = xs[~np.isnan(xs)]
    if xs.size == 0:
        return (math.nan, math.nan, math.nan)
    q = np.quantile(xs, [0.1, 0.5, 0.9])
    return (float(q[0]), float(q[1]), float(q[2]))


def plot_join(join: dict[tuple[int, int], list[np.ndarray]]) -> Any:
    """Left: the fraction informed over time for the first fanout, median and 10-90 % band
    across seeds, with the model's expected fraction. Right: rounds until everyone knew
    against n, measured (median, 10-90 % bars) and modelled (median line, 10-90 % band)."""
    from matplotlib.figure import Figure

    fanouts = sorted({f for f, _ in join}, reverse=True)
    sizes = sorted({n for _, n in join})
    lan = SwimConfig.lan()
    rnd = lan.gossip_interval
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax, bx = fig.subplots(1, 2)
    f0 = fanouts[0]
    # up to a little past the slowest seed's 90th percentile of "everyone"
    slowest = max((r.all_q[2] for r in join_table(join) if r.fanout == f0 and not math.isnan(r.all_q[2])),
                  default=8.0)
    grid = np.linspace(0, min(math.ceil(slowest) + 1.0, 30.0), 401)
    colors = [_viridis(x) for x in np.linspace(0, 0.85, len(sizes))]
    for n, col in zip(sizes, colors, strict=True):
        curves = np.array([M.convergence_curve(d / rnd, grid) for d in join[(f0, n)]])
        lo, med, hi = np.quantile(curves, [0.1, 0.5, 0.9], axis=0)
        ax.fill_between(grid, lo, hi, color=col, alpha=0.2, linewidth=0)
        ax.plot(grid, med, color=col, label=f"n = {n}")
        model = M.swim_gossip_model(n, SwimConfig.lan(gossip_nodes=f0))
        ax.plot(model.t, model.fraction(), color=col, ls="--", lw=1)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel(f"gossip rounds since the join ({rnd:g} s of simulated time each)")
    ax.set_ylabel("fraction of nodes that know the newcomer")
    ax.set_title(f"join, gossip_nodes={f0}: median of {len(join[(f0, sizes[0])])} seeds, "
                 "10–90 % band; dashed: model", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)

    xs = np.array(sizes, dtype=float)
    for i, fanout in enumerate(fanouts):
        col = f"C{i}"
        rows = [r for r in join_table(join) if r.fanout == fanout]
        med = np.array([r.all_q[1] for r in rows])
        err = np.array([[r.all_q[1] - r.all_q[0] for r in rows], [r.all_q[2] - r.all_q[1] for r in rows]])
        bx.errorbar(xs, med, yerr=err, fmt="o", color=col, capsize=3,
                    label=f"measured, gossip_nodes={fanout} (median, 10–90 %)")
        fine = np.unique(np.geomspace(min(sizes), max(sizes), 24).round().astype(int))
        mq = np.array([[M.swim_gossip_model(int(n), SwimConfig.lan(gossip_nodes=fanout)).all_informed_quantile(q)
                        for q in (0.1, 0.5, 0.9)] for n in fine])
        bx.plot(fine, mq[:, 1], "-", color=col, lw=1, label=f"model, gossip_nodes={fanout}")
        bx.fill_between(fine, mq[:, 0], mq[:, 2], color=col, alpha=0.15, linewidth=0)
    bx.set_xscale("log", base=2)
    bx.set_xlabel("cluster size n")
    bx.set_ylabel("gossip rounds until every node knew")
    bx.set_ylim(bottom=0)
    bx.set_title("time until everyone knows: measured vs mean-field model", fontsize=10)
    bx.legend(fontsize=8, loc="upper left")
    return fig


def _viridis(x: float) -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"](x)


# --- false positives ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FalsePositiveCount:
    """Wrong declarations and suspicions (episodes: one per subject and incarnation) seen in
    ``node_hours`` of a cluster with no failures."""

    declarations: int
    suspicions: int
    node_hours: float

    def rate(self) -> float:
        return self.declarations / self.node_hours

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        return M.poisson_interval(self.declarations, self.node_hours, confidence)

    def suspicion_rate(self) -> float:
        return self.suspicions / self.node_hours

    def suspicion_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        return M.poisson_interval(self.suspicions, self.node_hours, confidence)


def false_positive_runs(loss_grid: Sequence[float], n: int, seconds: float, seeds: Sequence[int]
                        ) -> dict[tuple[bool, float], FalsePositiveCount]:
    """(lifeguard, loss) -> the counts summed over ``seeds``, each a run of ``n`` nodes for
    ``seconds`` with every message lost with probability ``loss`` (both directions)."""
    from sim.cluster import SimCluster

    out = {}
    for lifeguard in (True, False):
        swim = SwimConfig.lan(lifeguard=lifeguard)
        for loss in loss_grid:
            dec = sus = 0
            for seed in seeds:
                c = SimCluster(seed, n, swim=swim, codec=False)
                c.set_loss(loss)
                c.run(until=seconds)
                dec += len(M.episodes(M.false_positives(c)))
                sus += len(M.episodes(M.false_positives(c, event=MemberEvent.SUSPECT)))
            out[(lifeguard, loss)] = FalsePositiveCount(dec, sus, n * seconds * len(seeds) / 3600)
    return out


def plot_false_positives(fp: dict[tuple[bool, float], FalsePositiveCount], *, suspicions: bool = True) -> Any:
    """Declarations (and suspicions) per node-hour against loss, with exact 95 % intervals, on
    linear axes: a zero is drawn as zero with its interval's upper bound, not as a cliff."""
    from matplotlib.figure import Figure

    grid = sorted({x for _, x in fp})
    hours = fp[(True, grid[0])].node_hours
    fig = Figure(figsize=(12 if suspicions else 6.5, 4.4), layout="constrained")
    # squeeze=False: always a 2-D array of Axes (one row), even for one panel
    axes = list(fig.subplots(1, 2 if suspicions else 1, squeeze=False)[0])
    what = [("declared dead", "rate", "interval")]
    if suspicions:
        what.append(("suspected", "suspicion_rate", "suspicion_interval"))
    for ax, (label, rate, interval) in zip(axes, what, strict=True):
        for lifeguard, style, dx in ((True, "o-", -0.15), (False, "s--", 0.15)):
            pts = [fp[(lifeguard, x)] for x in grid]
            y = np.array([getattr(p, rate)() for p in pts])
            ci = np.array([getattr(p, interval)() for p in pts])
            xs = np.array([100 * x + dx for x in grid])
            ax.errorbar(xs, y, yerr=[y - ci[:, 0], ci[:, 1] - y], fmt=style, capsize=3,
                        label=f"Lifeguard {'on' if lifeguard else 'off'}")
        ax.set_ylim(bottom=0)
        zeros = [p for p in fp.values() if getattr(p, rate)() == 0]
        if zeros:
            ax.text(0.02, 0.84, f"a point at 0: no event in {hours:.3g} node-hours,\nso a rate below "
                    f"{getattr(zeros[0], interval)()[1]:.2g} per node-hour (95 %)", transform=ax.transAxes,
                    ha="left", va="top", fontsize=8, color="0.3")
        ax.set_xlabel("message loss (%), each direction")
        ax.set_ylabel(f"live nodes {label}, per node-hour")
        ax.set_title(f"live nodes {label} ({hours:.3g} node-hours a point, exact 95 % intervals)",
                     fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
    return fig


# --- a partition, as a timeline ----------------------------------------------------------------


def partition_run(*, seed: int = 1, ops: int = 900, duration: float = 60.0, partition: float = 30.0,
                  loss: float = 0.0) -> Any:
    """The tour's cluster (5 nodes, 3 clients, a 1 s forward timeout) with the minority cut off
    for ``partition`` seconds in the middle, long enough for SWIM on both sides to declare the
    other side dead (the majority takes ~6 s; the minority, whose two nodes have only each other
    to confirm a suspicion, keeps Lifeguard's longer timeout: ~13-20 s). No loss by
    default: with 1 % loss every lost forward also costs its client a 1 s time-out, and those
    bars, spread over the whole run, hide the partition's story (the tour notebook shows them).
    Returns the cluster."""
    from sim.clients import Workload
    from sim.cluster import SimCluster
    from sim.scenario import DEMO_CONFIG

    clients = 3
    cluster = SimCluster(seed, 5, DEMO_CONFIG)
    minority = cluster.ids[:2]
    start = max(0.5, duration / 2 - partition / 2)
    if loss:
        cluster.set_loss(loss)
    cluster.partition(minority, at=start)
    cluster.heal(at=start + partition)
    per_client = math.ceil(ops / clients)
    cluster.add_clients(clients, Workload(ops=per_client, keys=50, think=0.1 * duration / per_client,
                                          pace=duration / per_client, timeout=3.0))
    cluster.run()
    return cluster


def plot_partition_timeline(cluster: Any, path: str | Path | None = None) -> Any:
    from sim.timeline import plot_timeline

    oc = cluster.history.outcomes()
    title = (f"{len(cluster.ids)} nodes, {sum(oc.values())} operations, 2 cut off: requests to them time out, "
             "then fail fast (owner_down) once SWIM declares them dead")
    return plot_timeline(cluster.history, cluster.faults, path, title=title, width=12.0, dpi=DPI)


# --- R = 1 against R = 3 around crashes -----------------------------------------------------

#: the replication figure's runs, in drawing order: (label, replicas, durable)
REPLICATION_RUNS = (("R = 1, memory only", 1, False), ("R = 1, durable", 1, True), ("R = 3 (Raft)", 3, False))
_REP_STYLE: dict[int, tuple[str, dict[str, Any]]] = {1: ("tab:red", {"lw": 2.5}), 2: ("tab:orange", {"lw": 1.2, "ls": "--"}), 3: ("tab:blue", {"lw": 1.5})}


@dataclass(frozen=True)
class ReplicationRow:
    """One run of the replication figure, as plain numbers (times from the workload's start)."""

    label: str
    bins: np.ndarray  # each bin's start (s)
    ok_fraction: np.ndarray  # ok / invoked per bin (NaN: nothing invoked)
    ok: int
    invoked: int
    acked_writes: int
    lost: int
    p50_ms: float
    put_p50_ms: float
    #: per crash (same order as the shared crash list): ok / invoked while the node(s) were down
    while_down: tuple[float, ...]


@dataclass(frozen=True)
class ReplicationResult:
    """The three runs and the crashes they shared: (start, restart, label), seconds from the start."""

    rows: list[ReplicationRow]
    crashes: list[tuple[float, float, str]]
    seed: int
    ops: int
    width: float


def replication_runs(*, seed: int = 1, ops: int = 4000, duration: float = 20.0, keys: int = 20,
                     clients: int = 4, sync_time: str = "const:0.002", down: float = 3.0,
                     power_down: float = 1.0, width: float = 0.25) -> ReplicationResult:
    """The replication notebook's experiment: R = 3 under a follower crash, a leader crash and a
    power loss (at 20, 45 and 75 % of ``duration``), then both R = 1 runs under the same crashes
    (:meth:`~sim.replication_lab.LabRun.resolved`), 3 nodes each; returns the numbers plotted."""
    from sim.replication_lab import LabConfig, Step, percentiles, run_lab

    schedule = [Step(0.2 * duration, "follower", down), Step(0.45 * duration, "leader", down),
                Step(0.75 * duration, "all", power_down)]
    common: dict[str, Any] = {"nodes": 3, "clients": clients, "ops": ops, "duration": duration, "keys": keys,
                              "sync_time": sync_time}
    r3 = run_lab(seed, LabConfig(replicas=3, **common), schedule)
    same = r3.resolved()
    runs = [run_lab(seed, LabConfig(replicas=1, durable=durable, **common), same) if replicas == 1 else r3
            for _label, replicas, durable in REPLICATION_RUNS]
    crashes = [(f.time - r3.start, f.restart - r3.start, f.label) for f in r3.fired]
    rows = []
    for (label, _r, _d), run in zip(REPLICATION_RUNS, runs, strict=True):
        t, frac, _rate = run.availability(width)
        ok = sum(1 for o in run.ops if o.outcome == "ok")
        windows = []
        for f in run.fired:
            during = [o for o in run.ops if f.time <= o.invoke < f.restart]
            windows.append(sum(o.outcome == "ok" for o in during) / len(during) if during else math.nan)
        rows.append(ReplicationRow(
            label, t - run.start, frac, ok, len(run.ops),
            sum(1 for o in run.ops if o.outcome == "ok" and o.f in ("put", "delete")), len(run.lost()),
            percentiles(run.latencies(), (50,))[0], percentiles(run.latencies("put"), (50,))[0],
            tuple(windows)))
    return ReplicationResult(rows, crashes, seed, ops, width)


def plot_replication(res: ReplicationResult) -> Any:
    """Left: ok / invoked per bin for each run, the crashes shaded (grey: the power loss) and
    named. Right: acknowledged writes lost per run, with the acknowledged total and p50."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.4), layout="constrained")
    ax, bx = fig.subplots(1, 2, width_ratios=[2.6, 1])
    for i, row in enumerate(res.rows, start=1):
        col, kw = _REP_STYLE[i]
        ax.step(row.bins, 100 * row.ok_fraction, where="post", color=col,
                label=f"{row.label}: p50 {row.p50_ms:.1f} ms", **kw)
    for t0, t1, label in res.crashes:
        ax.axvspan(t0, t1, color="grey" if label == "power loss" else "tab:red", alpha=0.12, lw=0)
        ax.axvline(t0, color="black", ls="--", lw=0.7)
        ax.text(t0 + 0.1, 104, label, fontsize=8)
    ax.set_ylim(-5, 112)
    ax.set_xlim(0, max(r.bins[-1] for r in res.rows) + res.width)
    ax.set_xlabel("seconds since the workload started (simulated)")
    ax.set_ylabel(f"ok / invoked per {res.width * 1000:.0f} ms (%)")
    ax.set_title(f"the same {res.ops} operations and crashes, 3 nodes each (seed {res.seed})\n"
                 "a gap: no request began in that bin (clients waiting out time-outs)", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)

    names = [r.label.replace(", ", ",\n") for r in res.rows]
    lost = [r.lost for r in res.rows]
    colors = [_REP_STYLE[i][0] for i in range(1, len(res.rows) + 1)]
    bars = bx.bar(names, lost, color=colors)
    for bar, row in zip(bars, res.rows, strict=True):
        bx.annotate(f"{row.lost} of {row.acked_writes}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    bx.set_ylim(0, max(max(lost), 1) * 1.2)
    bx.set_ylabel("acknowledged writes lost")
    bx.set_title("acknowledged writes lost", fontsize=10)
    bx.tick_params(axis="x", labelsize=8)
    return fig


def _percent(share: float) -> str:
    """``share`` as a percentage, to a tenth where a whole number would round it to 0 or 100 %
    (99.8 % is not "100 %": one operation failed)."""
    whole = f"{100 * share:.0f}"
    if whole in ("0", "100") and share not in (0.0, 1.0):
        return f"{100 * share:.1f} %"
    return f"{whole} %"


def replication_lines(res: ReplicationResult) -> list[str]:
    """The figure's numbers, one line per run, for the log."""
    out = []
    for row in res.rows:
        down = ", ".join(f"{label} {_percent(x)}" for (_a, _b, label), x in zip(res.crashes, row.while_down,
                                                                          strict=True))
        out.append(f"replication: {row.label}: {row.ok}/{row.invoked} ok, lost {row.lost} of "
                   f"{row.acked_writes} acknowledged writes, p50 {row.p50_ms:.2f} ms (put {row.put_p50_ms:.2f} ms); "
                   f"ok while down: {down}")
    return out


# --- the command -------------------------------------------------------------------------------

FULL = {"sizes": [16, 64, 256, 1024], "join_seeds": list(range(1, 11)), "fanouts": [3, 1],
        "loss": [0.0, 0.1, 0.2, 0.3], "fp_n": 32, "fp_seconds": 600.0, "fp_seeds": list(range(1, 7)),
        "ops": 900, "duration": 60.0, "partition": 30.0, "rep_ops": 4000, "rep_duration": 20.0}
SMALL = {"sizes": [16, 32], "join_seeds": [1, 2], "fanouts": [3], "loss": [0.0, 0.3], "fp_n": 8,
         "fp_seconds": 30.0, "fp_seeds": [1], "ops": 200, "duration": 16.0, "partition": 10.0,
         "rep_ops": 400, "rep_duration": 8.0}
#: the figures, by the name ``--only`` takes
NAMES = ("join", "false_positives", "partition", "replication")


def make_figures(out: str | Path, params: dict[str, Any] | None = None, *, log: Any = None,
                 only: Sequence[str] | None = None) -> list[Path]:
    """Run the experiments with ``params`` (default :data:`FULL`) and write the PNGs to ``out``;
    returns their paths. ``only``: the figures to make, by name (:data:`NAMES`; default all)."""
    p = dict(FULL if params is None else params)
    want = set(NAMES if only is None else only)
    if want - set(NAMES):
        raise ValueError(f"unknown figure(s) {', '.join(sorted(want - set(NAMES)))}; "
                         f"the figures are {', '.join(NAMES)}.")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)
    paths = []
    started = time.perf_counter()

    if "join" in want:
        join = join_runs(p["sizes"], p["join_seeds"], p["fanouts"])
        fig = plot_join(join)
        paths.append(d / "join_convergence.png")
        fig.savefig(paths[-1], dpi=DPI)
        for r in join_table(join):
            say(f"join: gossip_nodes={r.fanout} n={r.n}: everyone after {r.all_q[1]:.2f} rounds "
                f"(10-90 % {r.all_q[0]:.2f}-{r.all_q[2]:.2f}, {r.seeds} seeds); model {r.model_all_q[1]:.2f} "
                f"({r.model_all_q[0]:.2f}-{r.model_all_q[2]:.2f})")

    if "false_positives" in want:
        fp = false_positive_runs(p["loss"], p["fp_n"], p["fp_seconds"], p["fp_seeds"])
        fig = plot_false_positives(fp, suspicions=False)
        paths.append(d / "false_positives.png")
        fig.savefig(paths[-1], dpi=DPI)
        for (lifeguard, loss), c in sorted(fp.items()):
            lo, hi = c.interval()
            say(f"false positives: lifeguard={'on' if lifeguard else 'off'} loss={loss:.0%}: "
                f"{c.declarations} in {c.node_hours:.3g} node-hours = {c.rate():.2f}/node-hour "
                f"(95 % {lo:.2f}-{hi:.2f})")

    if "partition" in want:
        cluster = partition_run(ops=p["ops"], duration=p["duration"], partition=p["partition"])
        paths.append(d / "partition_timeline.png")
        plot_partition_timeline(cluster, paths[-1])
        say(f"partition timeline: {cluster.history.outcomes()}")

    if "replication" in want:
        rep = replication_runs(ops=p["rep_ops"], duration=p["rep_duration"])
        paths.append(d / "replication.png")
        plot_replication(rep).savefig(paths[-1], dpi=DPI)
        for line in replication_lines(rep):
            say(line)
    say(f"figures written to {d} in {time.perf_counter() - started:.0f} s")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sim figures",
        description="Regenerate the README's figures (join convergence vs the gossip model, false "
        "positives with intervals, a partition's timeline, R = 1 against R = 3 around crashes) from "
        "simulated runs.",
    )
    ap.add_argument("--out", default="docs", metavar="DIR", help="where to write the PNGs (default docs)")
    ap.add_argument("--small", action="store_true",
                    help="small parameters: seconds instead of minutes (the test suite uses this)")
    ap.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME",
                    help=f"make only these figures ({', '.join(NAMES)}; default all)")
    args = ap.parse_args(argv)
    problem = writable_dir(args.out)  # before minutes of runs, not after them
    if problem:
        ap.error(f"--out {problem}")
    for path in make_figures(args.out, SMALL if args.small else FULL, log=print, only=args.only):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
