"""The experiment of Demers et al. (1987): one update, n sites, synchronous cycles.

Theory of operation
-------------------
Demers et al., "Epidemic Algorithms for Replicated Database Maintenance" (PODC 1987), measure
their epidemics with one experiment: ``n`` sites, one update injected at one site, synchronous
cycles, run until the epidemic is over, averaged over many runs. Tables 1 and 2 (§1.4) give, for
``n = 1000``, rumor mongering with feedback and counters, and blind with a coin, for
``k = 1 … 5``. This module runs that experiment two ways:

* :func:`run_rumor` and :func:`run_anti_entropy` run the real protocol, the
  :class:`~kvcore.epidemic.RumorSite` / :class:`~kvcore.epidemic.AntiEntropySite` objects of
  kvcore, in simulated time: one SimPy environment, the sim's
  :class:`~sim.network.SimNetwork` with a constant latency (default 0.01 of a cycle, so a push
  and its answer arrive well within their cycle), a :class:`~sim.runtime.SimRuntime` per site
  whose ``random`` is ``sim.rand.stream(seed, "epidemic", run, site_id)``. Cycle ``c`` starts at
  simulated time ``c`` (period 1); the update is injected at time 0 (cycle 0) at a site drawn
  from ``stream(seed, "epidemic", run, "origin")``. The codec is off by default for speed
  (``codec=True`` runs every message through it, as the scenario tests do).
* :func:`reference_rumor` and :func:`reference_anti_entropy` run the same rules on numpy
  arrays, one vectorised step per cycle, with no SimPy and no messages. They are an
  independent implementation: tests check that both give the same statistics (not the same
  draws), and they make the paper's n = 1000 tables with hundreds of runs take a second.

Definitions (what both implementations compute, per run, then average over runs):

* **cycles**: cycle ``c ≥ 1`` starts at time ``c``. Every site that is infective at the start
  of cycle ``c`` pushes once (rumor), or every site contacts one partner (anti-entropy); all is
  judged on the state at the start of the cycle (see :mod:`kvcore.epidemic`): a site that
  learns the update in cycle ``c`` spreads it from cycle ``c + 1``, and a contact is
  unnecessary only if the recipient knew before the cycle began.
* **residue**: the fraction of the ``n`` sites that never learned the update.
* **traffic**: messages that carried the update, divided by ``n``. For rumor mongering, the
  pushes (feedback answers carry no update and are not counted, as in the paper); for
  anti-entropy, the pushes of sites that had the update and the pull answers that carried it,
  whether or not the other side needed it (there is no checksum exchange to avoid it).
* **t_ave**: the cycle in which the update arrived, averaged over the sites it reached other
  than the one it was injected at; **t_last**: the cycle in which the last of them got it.
  Averaged over runs as the mean of the per-run values.
* **end of a run**: rumor mongering ends when no site is infective (no timer, no message left in
  the simulation). Anti-entropy never stops by itself: a run ends once every site knows the
  update, or after ``max_cycles`` (default :func:`anti_entropy_cap`), when the residue may be
  non-zero.

What to expect (n = 1000; the paper's numbers are in :data:`PAPER_TABLE_1` and
:data:`PAPER_TABLE_2`): residue, traffic and t_last agree with Tables 1 and 2 within sampling
error, and residue ≈ e^{-traffic}, the relation s = e^{-m} of §1.4. Our t_ave is 1-3 cycles *lower* than the
paper's column (about 10 cycles for feedback/counter, where the paper has 11.0-12.8); it agrees
with the deterministic mean-field of the synchronous push model (:func:`mean_field_susceptible`
gives 10.07 for a push that never stops), and no reading of the paper's definition that we tried
(origin included, unreached sites counted at t_last, removal times) reproduces the paper's
column, so we report ours as it is. Anti-entropy: push completes in about
``log2(n) + ln(n)`` cycles, pull and push-pull faster, pull converging as ``p_{i+1} = p_i^2``.

``python -m sim.epidemic`` is the command line (and ``python -m sim epidemic`` once
``sim/__main__.py`` hands the arguments after ``epidemic`` to :func:`main`): ``rumor``,
``anti-entropy`` and ``paper`` (both tables, ours against the paper's).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simpy

from kvcore.epidemic import (
    PULL,
    PUSH,
    PUSH_PULL,
    AntiEntropySite,
    CycleClock,
    RumorPolicy,
    RumorSite,
    SiteList,
    directions,
)
from kvcore.runtime import MemoryStorage
from sim.latency import Constant
from sim.network import SimNetwork, schedule_call
from sim.rand import derive_seed, stream
from sim.runtime import SimRuntime
from sim.trace import Trace

UPDATE = "u1"
PERIOD = 1.0
#: One-way latency, in cycles: far below one cycle, so a push and its answer (or a pull and its
#: reply) both arrive within the cycle they belong to.
DEFAULT_LATENCY = 0.01
#: A rumor always dies out (every contact is unnecessary once everyone knows); this cap only
#: guards against a bug.
RUMOR_MAX_CYCLES = 10_000

#: Demers et al. 1987, Table 1: 1000 sites, feedback and counters. k -> (residue, traffic,
#: t_ave, t_last).
PAPER_TABLE_1: dict[int, tuple[float, float, float, float]] = {
    1: (0.176, 1.74, 11.0, 16.8),
    2: (0.037, 3.30, 12.1, 16.9),
    3: (0.011, 4.53, 12.5, 17.4),
    4: (0.0036, 5.64, 12.7, 17.5),
    5: (0.0012, 6.68, 12.8, 17.7),
}
#: Demers et al. 1987, Table 2: 1000 sites, blind and coin (k = 1/probability).
PAPER_TABLE_2: dict[int, tuple[float, float, float, float]] = {
    1: (0.96, 0.04, 19.0, 38.0),
    2: (0.205, 1.59, 17.0, 33.0),
    3: (0.060, 2.82, 15.0, 32.0),
    4: (0.021, 3.91, 14.1, 32.0),
    5: (0.008, 4.95, 13.8, 32.0),
}
PAPER_N = 1000
STATS = ("residue", "traffic", "t_ave", "t_last")


def paper_row(feedback: bool, counter: bool, k: int, n: int) -> tuple[float, ...] | None:
    """The paper's (residue, traffic, t_ave, t_last) for this variant, if it has one."""
    if n != PAPER_N:
        return None
    if feedback and counter:
        return PAPER_TABLE_1.get(k)
    if not feedback and not counter:
        return PAPER_TABLE_2.get(k)
    return None


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStats:
    """One run's outcome (see the module docstring for the definitions)."""

    residue: float
    traffic: float
    t_ave: float  # nan when the update reached no site but its origin
    t_last: int
    cycles: int  # the last cycle in which anything was sent
    capped: bool = False  # stopped by max_cycles with sites still spreading / still missing it
    digest: str = ""  # the trace digest (SimPy runs only)


@dataclass(eq=False)
class EpidemicResult:
    """Averages over runs, and the per-run values as numpy arrays (``per_run[name]``)."""

    scheme: str
    n: int
    seed: int
    engine: str
    per_run: dict[str, np.ndarray] = field(default_factory=dict)
    digests: tuple[str, ...] = ()

    @classmethod
    def of(cls, scheme: str, n: int, seed: int, engine: str, runs: Sequence[RunStats]) -> EpidemicResult:
        per_run = {
            "residue": np.array([r.residue for r in runs], dtype=float),
            "traffic": np.array([r.traffic for r in runs], dtype=float),
            "t_ave": np.array([r.t_ave for r in runs], dtype=float),
            "t_last": np.array([r.t_last for r in runs], dtype=float),
            "cycles": np.array([r.cycles for r in runs], dtype=float),
            "capped": np.array([r.capped for r in runs], dtype=bool),
        }
        return cls(scheme, n, seed, engine, per_run, tuple(r.digest for r in runs))

    @property
    def runs(self) -> int:
        return int(self.per_run["residue"].size)

    def mean(self, name: str) -> float:
        a = self.per_run[name]
        if name == "t_ave":
            a = a[~np.isnan(a)]
        return float(a.mean()) if a.size else math.nan

    def sd(self, name: str) -> float:
        a = self.per_run[name]
        a = a[~np.isnan(a)]
        return float(a.std(ddof=1)) if a.size > 1 else math.nan

    @property
    def residue(self) -> float:
        return self.mean("residue")

    @property
    def traffic(self) -> float:
        return self.mean("traffic")

    @property
    def t_ave(self) -> float:
        return self.mean("t_ave")

    @property
    def t_last(self) -> float:
        return self.mean("t_last")

    @property
    def capped(self) -> int:
        return int(self.per_run["capped"].sum())

    def as_dict(self) -> dict[str, Any]:
        """The averages and the configuration, JSON-ready (nan becomes None)."""

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 6)

        out: dict[str, Any] = {"scheme": self.scheme, "n": self.n, "runs": self.runs,
                               "seed": self.seed, "engine": self.engine}
        for name in STATS:
            out[name] = clean(self.mean(name))
        out["cycles"] = clean(self.mean("cycles"))
        out["capped"] = self.capped
        return out


def _run_stats(learned: np.ndarray, origin: int, traffic: float, cycles: int,
               capped: bool, digest: str = "") -> RunStats:
    """Stats of one run from each site's arrival cycle (-1: never)."""
    n = learned.size
    informed = learned >= 0
    others = np.delete(learned, origin)
    others = others[others >= 0]
    return RunStats(
        residue=float(n - int(informed.sum())) / n,
        traffic=traffic,
        t_ave=float(others.mean()) if others.size else math.nan,
        t_last=int(others.max()) if others.size else 0,
        cycles=cycles,
        capped=capped,
        digest=digest,
    )


# --- validation ------------------------------------------------------------------------------


def _check(n: int, runs: int, k: int = 1, latency: float = DEFAULT_LATENCY) -> None:
    problems = []
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        problems.append(f"n must be an integer of at least 2 (an epidemic needs two sites), not {n!r}.")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        problems.append(f"runs must be an integer of at least 1, not {runs!r}.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        problems.append(f"k must be an integer of at least 1, not {k!r}.")
    if not (0 < latency < PERIOD / 4):
        problems.append(f"latency must be above 0 and below a quarter cycle, not {latency!r}.")
    if problems:
        raise ValueError(" ".join(problems))


def anti_entropy_cap(n: int) -> int:
    """Default cycle cap for anti-entropy: four times push's ``log2(n) + ln(n)``, plus 10.

    Push finishes in about ``log2(n) + ln(n)`` cycles (§1.3); the chance of needing four times
    that is negligible, so a capped run means something is wrong (or ``n`` is tiny)."""
    return 4 * math.ceil(math.log2(n) + math.log(n)) + 10


def site_ids(n: int) -> list[str]:
    """``s000`` … : zero-padded so that sorted order is numeric order."""
    width = len(str(n - 1))
    return [f"s{i:0{width}d}" for i in range(n)]


# --- the SimPy world -------------------------------------------------------------------------


@dataclass
class _World:
    env: simpy.Environment
    trace: Trace
    net: SimNetwork
    sites: list[Any]
    origin: int


def _build(n: int, seed: int, run: int, latency: float, codec: bool,
           make_site: Callable[[SimRuntime, SiteList], Any]) -> _World:
    env = simpy.Environment()
    trace = Trace()
    net = SimNetwork(env, stream(seed, "epidemic", run, "network"), trace, Constant(latency),
                     codec=codec)
    ids = site_ids(n)
    shared = SiteList(ids)
    sites = []
    for sid in ids:
        ep = net.attach(sid)
        rt = SimRuntime(env, net, trace, sid, stream(seed, "epidemic", run, sid), MemoryStorage())
        site = make_site(rt, shared)
        ep.node = site
        sites.append(site)
    origin = stream(seed, "epidemic", run, "origin").randrange(n)
    return _World(env, trace, net, sites, origin)


def _learned(sites: Sequence[Any]) -> np.ndarray:
    return np.array([-1 if s.learned_cycle is None else s.learned_cycle for s in sites],
                    dtype=np.int64)


def simulate_rumor(n: int, policy: RumorPolicy, seed: int, run: int = 0, *,
                   latency: float = DEFAULT_LATENCY, codec: bool = False,
                   max_cycles: int = RUMOR_MAX_CYCLES) -> RunStats:
    """One run of rumor mongering with :class:`~kvcore.epidemic.RumorSite` on SimPy."""
    clock = CycleClock(PERIOD)
    w = _build(n, seed, run, latency, codec, lambda rt, ids: RumorSite(rt, ids, policy, clock))
    w.sites[w.origin].inject(UPDATE)
    # The run is over when the queue is empty: no infective site keeps a timer. The cap only
    # guards against a bug.
    w.env.run(until=clock.start_of(max_cycles) + PERIOD / 2)
    capped = any(s.infective for s in w.sites)
    last = max((s.removed_cycle or 0) for s in w.sites)
    sent = sum(s.updates_sent for s in w.sites)
    return _run_stats(_learned(w.sites), w.origin, sent / n, max_cycles if capped else last,
                      capped, w.trace.digest())


def simulate_anti_entropy(n: int, mode: str, seed: int, run: int = 0, *,
                          latency: float = DEFAULT_LATENCY, codec: bool = False,
                          max_cycles: int | None = None) -> RunStats:
    """One run of anti-entropy with :class:`~kvcore.epidemic.AntiEntropySite` on SimPy.

    Every site contacts a partner every cycle; half way through each cycle (all messages of the
    cycle delivered and answered) the world checks whether every site knows, and stops them all
    when they do or when ``max_cycles`` is reached.
    """
    directions(mode)
    cap = anti_entropy_cap(n) if max_cycles is None else max_cycles
    clock = CycleClock(PERIOD)
    w = _build(n, seed, run, latency, codec, lambda rt, ids: AntiEntropySite(rt, ids, mode, clock))
    w.sites[w.origin].inject(UPDATE)
    for s in w.sites:
        s.start()
    ended = [0]

    def check(_event: Any) -> None:
        cycle = clock.cycle_at(w.env.now)
        if all(s.knows for s in w.sites) or cycle >= cap:
            ended[0] = cycle
            for s in w.sites:
                s.stop()
        else:
            schedule_call(w.env, PERIOD, check)

    schedule_call(w.env, clock.start_of(1) + PERIOD / 2, check)
    w.env.run()
    learned = _learned(w.sites)
    sent = sum(s.updates_sent for s in w.sites)
    return _run_stats(learned, w.origin, sent / n, ended[0], bool((learned < 0).any()),
                      w.trace.digest())


def run_rumor(n: int, feedback: bool = True, counter: bool = True, k: int = 1, runs: int = 20,
              seed: int = 1, *, latency: float = DEFAULT_LATENCY,
              codec: bool = False) -> EpidemicResult:
    """The paper's rumor-mongering experiment (§1.4, Tables 1-2) on the Runtime, in SimPy."""
    _check(n, runs, k, latency)
    policy = RumorPolicy(feedback, counter, k).validate()
    stats = [simulate_rumor(n, policy, seed, r, latency=latency, codec=codec) for r in range(runs)]
    return EpidemicResult.of(f"rumor {policy.describe()}", n, seed, "sim", stats)


def run_anti_entropy(n: int, mode: str = PUSH_PULL, runs: int = 20, seed: int = 1, *,
                     latency: float = DEFAULT_LATENCY, codec: bool = False,
                     max_cycles: int | None = None) -> EpidemicResult:
    """The same experiment for anti-entropy (§1.3) on the Runtime, in SimPy."""
    _check(n, runs, 1, latency)
    directions(mode)
    stats = [simulate_anti_entropy(n, mode, seed, r, latency=latency, codec=codec,
                                   max_cycles=max_cycles) for r in range(runs)]
    return EpidemicResult.of(f"anti-entropy {mode}", n, seed, "sim", stats)


# --- the fast reference ----------------------------------------------------------------------


def _partners(rng: np.random.Generator, who: np.ndarray, n: int) -> np.ndarray:
    """A uniform partner among the n - 1 others for each site in ``who``."""
    r = rng.integers(0, n - 1, size=who.size)
    return r + (r >= who)


def reference_rumor_once(n: int, feedback: bool, counter: bool, k: int,
                         rng: np.random.Generator,
                         max_cycles: int = RUMOR_MAX_CYCLES) -> RunStats:
    """One run of rumor mongering, vectorised over sites, one step per cycle."""
    known = np.zeros(n, dtype=bool)
    infective = np.zeros(n, dtype=bool)
    count = np.zeros(n, dtype=np.int64)
    learned = np.full(n, -1, dtype=np.int64)
    origin = int(rng.integers(n))
    known[origin] = infective[origin] = True
    learned[origin] = 0
    pushes = 0
    cycle = 0
    while infective.any() and cycle < max_cycles:
        cycle += 1
        senders = np.flatnonzero(infective)  # infective at the start of the cycle
        targets = _partners(rng, senders, n)
        unnecessary = known[targets]  # knew before this cycle started
        pushes += senders.size
        fresh = targets[~unnecessary]
        known[fresh] = True
        learned[fresh] = cycle
        costs = unnecessary if feedback else np.ones(senders.size, dtype=bool)
        if counter:
            c = np.where(costs, count[senders] + 1, 0)
            count[senders] = c
            lost = c >= k
        else:
            lost = costs & (rng.random(senders.size) < 1.0 / k)
        infective[senders[lost]] = False
        infective[fresh] = True  # from the next cycle on
    return _run_stats(learned, origin, pushes / n, cycle, bool(infective.any()))


def reference_anti_entropy_once(n: int, mode: str, rng: np.random.Generator,
                                max_cycles: int | None = None) -> RunStats:
    """One run of anti-entropy, vectorised over sites, one step per cycle."""
    push, pull = directions(mode)
    cap = anti_entropy_cap(n) if max_cycles is None else max_cycles
    known = np.zeros(n, dtype=bool)
    learned = np.full(n, -1, dtype=np.int64)
    origin = int(rng.integers(n))
    known[origin] = True
    learned[origin] = 0
    everyone = np.arange(n)
    sent = 0
    cycle = 0
    while not known.all() and cycle < cap:
        cycle += 1
        partner = _partners(rng, everyone, n)
        before = known.copy()  # the state at the start of the cycle
        if push:
            sent += int(before.sum())
            known[partner[before]] = True
        if pull:
            has = before[partner]
            sent += int(has.sum())
            known[has] = True
        learned[known & ~before] = cycle
    return _run_stats(learned, origin, sent / n, cycle, not known.all())


def _reference_rng(seed: int, run: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, "epidemic-reference", run))


def reference_rumor(n: int, feedback: bool = True, counter: bool = True, k: int = 1,
                    runs: int = 20, seed: int = 1) -> EpidemicResult:
    """The rumor experiment on numpy (same rules as :func:`run_rumor`, other random draws)."""
    _check(n, runs, k)
    policy = RumorPolicy(feedback, counter, k).validate()
    stats = [reference_rumor_once(n, feedback, counter, k, _reference_rng(seed, r))
             for r in range(runs)]
    return EpidemicResult.of(f"rumor {policy.describe()}", n, seed, "reference", stats)


def reference_anti_entropy(n: int, mode: str = PUSH_PULL, runs: int = 20, seed: int = 1,
                           max_cycles: int | None = None) -> EpidemicResult:
    """The anti-entropy experiment on numpy (same rules as :func:`run_anti_entropy`)."""
    _check(n, runs)
    directions(mode)
    stats = [reference_anti_entropy_once(n, mode, _reference_rng(seed, r), max_cycles)
             for r in range(runs)]
    return EpidemicResult.of(f"anti-entropy {mode}", n, seed, "reference", stats)


# --- theory ----------------------------------------------------------------------------------


def mean_field_susceptible(n: int, mode: str, cycles: int) -> np.ndarray:
    """The expected susceptible fraction after each cycle of a simple epidemic (§1.3).

    ``s_0 = 1 - 1/n``. A susceptible site escapes every push of a cycle with probability
    ``(1 - 1/(n-1))^(n(1-s))`` (each of the ``n(1-s)`` knowing sites picks it with probability
    ``1/(n-1)``), and a pull with probability ``(ns - 1)/(n - 1)`` (its partner is susceptible
    too); §1.3 writes these as ``p_{i+1} = p_i e^{-1}`` (push, late) and ``p_{i+1} = p_i^2``
    (pull). Push-pull multiplies both. This also describes rumor mongering while no site has
    lost interest, so it predicts ``t_ave`` of the feedback variants for large ``k``.
    """
    push, pull = directions(mode)
    s = 1.0 - 1.0 / n
    out = [s]
    for _ in range(cycles):
        stay = 1.0
        if push:
            stay *= (1.0 - 1.0 / (n - 1)) ** (n * (1.0 - s))
        if pull:
            stay *= max(0.0, (n * s - 1.0) / (n - 1))
        s *= stay
        out.append(s)
    return np.array(out)


def mean_field_t_ave(n: int, mode: str = PUSH, cycles: int = 200) -> float:
    """Mean arrival cycle of the simple epidemic under :func:`mean_field_susceptible`."""
    s = mean_field_susceptible(n, mode, cycles)
    reached = -np.diff(s)  # fraction reached in cycle 1, 2, ...
    return float((reached * np.arange(1, cycles + 1)).sum() / reached.sum())


# --- the command line ------------------------------------------------------------------------


def format_table(result: EpidemicResult, paper: tuple[float, ...] | None = None,
                 paper_label: str = "") -> str:
    """The readable table: mean and standard deviation over runs, and the paper's row."""
    lines = [
        f"{result.scheme}: n={result.n} sites, {result.runs} runs, seed {result.seed}, "
        f"engine {result.engine}",
        f"{'':8}{'residue':>10}{'traffic':>10}{'t_ave':>9}{'t_last':>9}",
        f"{'mean':8}{result.residue:>10.4f}{result.traffic:>10.3f}{result.t_ave:>9.2f}"
        f"{result.t_last:>9.2f}",
    ]
    if result.runs > 1:
        sd = [result.sd(name) for name in STATS]
        lines.append(f"{'sd':8}{sd[0]:>10.4f}{sd[1]:>10.3f}{sd[2]:>9.2f}{sd[3]:>9.2f}")
    if paper is not None:
        lines.append(f"{'paper':8}{paper[0]:>10.4g}{paper[1]:>10.3g}{paper[2]:>9.3g}"
                     f"{paper[3]:>9.3g}  {paper_label}")
    if result.capped:
        lines.append(f"note: {result.capped} run(s) hit the cycle cap before the epidemic ended")
    return "\n".join(lines)


def paper_tables(runs: int = 200, seed: int = 1, engine: str = "reference",
                 ks: Sequence[int] = (1, 2, 3, 4, 5)) -> list[tuple[str, int, EpidemicResult,
                                                                     tuple[float, ...]]]:
    """Tables 1 and 2 of the paper re-run at n = 1000: (table, k, ours, paper) rows."""
    run = reference_rumor if engine == "reference" else run_rumor
    rows: list[tuple[str, int, EpidemicResult, tuple[float, ...]]] = []
    for table, feedback, counter, paper in (("Table 1 feedback/counter", True, True, PAPER_TABLE_1),
                                            ("Table 2 blind/coin", False, False, PAPER_TABLE_2)):
        for k in ks:
            res = run(PAPER_N, feedback, counter, k, runs, seed)
            rows.append((table, k, res, paper[k]))
    return rows


def format_paper_tables(rows: Sequence[tuple[str, int, EpidemicResult, tuple[float, ...]]]) -> str:
    head = (f"{'':26}{'k':>3}  {'residue':>15}  {'traffic':>13}  {'t_ave':>11}  {'t_last':>11}")
    sub = f"{'':26}{'':>3}  {'ours':>7} {'paper':>7}  {'ours':>6} {'paper':>6}  " \
          f"{'ours':>5} {'paper':>5}  {'ours':>5} {'paper':>5}"
    lines = [head, sub]
    for table, k, res, p in rows:
        lines.append(
            f"{table:26}{k:>3}  {res.residue:>7.4f} {p[0]:>7.4g}  {res.traffic:>6.2f} {p[1]:>6.3g}  "
            f"{res.t_ave:>5.1f} {p[2]:>5.3g}  {res.t_last:>5.1f} {p[3]:>5.3g}"
        )
    runs = rows[0][2].runs if rows else 0
    engine = rows[0][2].engine if rows else ""
    lines.append(f"n={PAPER_N}, {runs} runs per row, engine {engine}; paper: Demers et al. 1987, "
                 "Tables 1-2")
    return "\n".join(lines)


def _positive_int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sim epidemic",
        description="The epidemics of Demers et al. 1987 (anti-entropy, rumor mongering) on "
                    "storelab's Runtime: one update injected at one of n sites, synchronous "
                    "cycles; prints residue, traffic, t_ave and t_last averaged over runs.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{rumor,anti-entropy,paper}")

    def common(sp: argparse.ArgumentParser, runs: int, engine: str) -> None:
        sp.add_argument("--n", type=_positive_int(2), default=PAPER_N,
                        help=f"number of sites, at least 2 (default {PAPER_N})")
        sp.add_argument("--runs", type=_positive_int(1), default=runs,
                        help=f"runs to average over, at least 1 (default {runs})")
        sp.add_argument("--seed", type=int, default=1, help="run seed (default 1)")
        sp.add_argument("--engine", choices=("sim", "reference"), default=engine,
                        help="sim: the kvcore sites on SimPy; reference: the numpy model "
                             f"(default {engine})")
        sp.add_argument("--codec", action="store_true",
                        help="sim engine: run every message through the codec")
        sp.add_argument("--json", action="store_true",
                        help="end with one JSON line holding residue, traffic, t_ave, t_last")

    r = sub.add_parser("rumor", help="rumor mongering (§1.4)",
                       description="Rumor mongering (§1.4): infective sites push to a random "
                                   "partner each cycle until they lose interest.")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--feedback", dest="feedback", action="store_true",
                   help="only unnecessary contacts can cost interest (Table 1)")
    g.add_argument("--blind", dest="feedback", action="store_false",
                   help="every contact can cost interest (Table 2)")
    g = r.add_mutually_exclusive_group(required=True)
    g.add_argument("--counter", dest="counter", action="store_true",
                   help="lose interest after k such contacts in a row (Table 1)")
    g.add_argument("--coin", dest="counter", action="store_false",
                   help="lose interest with probability 1/k at each (Table 2)")
    r.add_argument("--k", type=_positive_int(1), default=1, help="the parameter k, at least 1 "
                   "(default 1)")
    common(r, 20, "sim")

    a = sub.add_parser("anti-entropy", help="anti-entropy (§1.3)",
                       description="Anti-entropy (§1.3): every site contacts a random partner "
                                   "every cycle until every site knows.")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--push", dest="mode", action="store_const", const=PUSH)
    g.add_argument("--pull", dest="mode", action="store_const", const=PULL)
    g.add_argument("--push-pull", dest="mode", action="store_const", const=PUSH_PULL)
    a.add_argument("--max-cycles", type=_positive_int(1), default=None,
                   help="stop a run after this many cycles (default 4*ceil(log2 n + ln n) + 10)")
    common(a, 20, "sim")

    t = sub.add_parser("paper", help="Tables 1 and 2 of the paper, ours against theirs (n=1000)")
    t.add_argument("--runs", type=_positive_int(1), default=200,
                   help="runs per row (default 200)")
    t.add_argument("--seed", type=int, default=1, help="run seed (default 1)")
    t.add_argument("--engine", choices=("sim", "reference"), default="reference",
                   help="default reference (the sim engine takes ~1 s per 20 runs per row)")
    t.add_argument("--json", action="store_true", help="end with one JSON line of all rows")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sim epidemic {rumor,anti-entropy,paper} ...``; returns the exit status."""
    p = _parser()
    args = p.parse_args(argv)
    if args.command == "paper":
        rows = paper_tables(args.runs, args.seed, args.engine)
        print(format_paper_tables(rows))
        if args.json:
            print(json.dumps({"rows": [{"table": t, "k": k, **res.as_dict(),
                                        "paper": dict(zip(STATS, pap, strict=True))}
                                       for t, k, res, pap in rows]}))
        return 0
    if args.codec and args.engine != "sim":
        p.error("--codec applies to the sim engine only")
    if args.command == "rumor":
        if args.engine == "sim":
            res = run_rumor(args.n, args.feedback, args.counter, args.k, args.runs, args.seed,
                            codec=args.codec)
        else:
            res = reference_rumor(args.n, args.feedback, args.counter, args.k, args.runs,
                                  args.seed)
        paper = paper_row(args.feedback, args.counter, args.k, args.n)
        label = "(Demers et al. 1987, Table 1)" if args.feedback else \
            "(Demers et al. 1987, Table 2)"
    else:
        if args.engine == "sim":
            res = run_anti_entropy(args.n, args.mode, args.runs, args.seed, codec=args.codec,
                                   max_cycles=args.max_cycles)
        else:
            res = reference_anti_entropy(args.n, args.mode, args.runs, args.seed,
                                         args.max_cycles)
        paper, label = None, ""
    print(format_table(res, paper, label))
    if args.json:
        print(json.dumps(res.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
