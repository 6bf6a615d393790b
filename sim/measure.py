"""Measuring gossip membership in the sim: who learned what when, false positives, load, theory.

Theory of operation
-------------------
Everything here is a pure function of what a :class:`~sim.cluster.SimCluster` records; nothing
runs the simulation or changes a node. Three records are read:

* ``cluster.member_events``: every membership event every node observed, as
  ``(time, observer, event, subject, incarnation)``, events ``join alive suspect dead left
  refute reap update`` (:data:`kvcore.membership.Listener`). Events are logged only while the
  observer runs, and a node's *initial* view (the static configuration it boots from) is not
  logged: :func:`view_timeline` rebuilds it from the boot times.
* ``cluster.truth_log``: ground truth, ``(time, node, "up" | "down" | "left")`` at every change
  (boot and restart, crash, graceful leave), so "was this node up at time t?" has an answer.
* ``cluster.all_stats()``: per-node message and byte counters by message kind (bytes need the
  codec on: ``SimCluster(codec=True)``).

Definitions
~~~~~~~~~~~
* **Observers** of a subject: the nodes up *now* (``truth == "up"``), the subject excluded, in
  the cluster's node order; arrays returned here are aligned with :func:`observers`.
* **Learned** (:func:`learned_times`): the first time at or after ``since`` — and after the
  observer's last boot, since a restarted node forgot everything — at which the observer logged
  one of the events that mean it heard the news: a *join* is ``join`` or ``alive`` (a
  re-join after being declared dead is ``alive``), a *crash* is ``suspect`` or ``dead`` (it
  heard something is wrong), ``dead`` is ``dead`` only, a *leave* is ``left``, a *refute* is
  ``alive`` or ``join`` at an incarnation at least the refuted one. NaN: never learned.
  Caveat for refutes: kvcore emits no event when a member it already holds *alive* moves to a
  higher incarnation, so an observer that never held the subject suspect or dead shows NaN
  for a refute although it is not wrong about anything.
* **Detection** (:func:`detection_times`): per observer, the delay from the crash to its first
  ``suspect``-or-``dead`` event and to its first ``dead`` event.
* **False positive** (:func:`false_positives`): an observer's ``dead`` event about a subject
  whose ground truth at that moment was ``up`` (and had been up for more than ``grace``
  seconds, to set aside stale declarations about a node that just restarted). Each observer
  that comes to hold the subject dead is one row, so one wrong declaration that spreads to
  everyone gives ``n - 1`` rows: :func:`episodes` groups rows by ``(subject, incarnation)``,
  one row per wrong declaration, its first observer being (in practice) the declarer.
* **One view** (:func:`one_view`): every node that is up holds exactly the nodes that are up as
  ``alive``, and every other member it knows as ``dead`` or ``left`` (a suspected down node is
  not yet converged), read from the nodes themselves, not the log.

Theory
~~~~~~
* :func:`push_gossip_rounds`: rounds for a push rumour to reach all ``n`` sites, ``log2(n) +
  ln(n)`` (Pittel 1987; Demers et al. 1987, §1.3), and ``log_{1+k}(n) + ln(n)/k`` for fanout
  ``k`` (each round an informed site tells ``k`` others: the informed set grows ``(1+k)``-fold
  until the end game, where a site stays uninformed with probability ``e^{-k}`` per round).
* :func:`gossip_mean_field`: the model the join figure is drawn against, for the protocol as
  configured (:func:`swim_gossip_model` fills it in from a ``SwimConfig``). It is the
  mean-field ("deterministic") approximation of push rumour spreading (Demers et al. 1987
  §1.3, Pittel 1987, Karp et al. 2000), iterated numerically instead of solved in closed form,
  with three changes that make it this protocol's: *fanout k* (every gossip round a node sends
  to ``gossip_nodes`` random members), *asynchronous rounds* (each node ticks every
  ``gossip_interval`` at its own random phase, so a node that just learned sends at its next
  tick, uniform within a round, then every round: in expectation ``k`` sends per round from the
  moment it learned) plus *piggybacking* (pings and acks carry the update too, ``2·T_g/T_p``
  more sends per round: the node's own pings and the acks to the pings it gets), and a
  *transmit limit* (an update is sent at most ``L = retransmit_mult·ceil(log10(n+1))`` times,
  so a node spreads it for ``L / r`` rounds at ``r = k + 2·T_g/T_p`` sends per round). With
  ``I(t)`` nodes of ``N`` informed, an uninformed node is reached at the rate ``r·A(t)/(N-1)``,
  where ``A(t)`` counts the nodes informed within the last ``L/r`` rounds, so
  ``dI/dt = (N - I)·(1 - exp(-r·A(t)/(N-1)·dt))/dt``. The *time until everyone knows* is the
  end game's: the uninformed count at ``t`` is close to Poisson with mean ``N - I(t)``, so
  ``P(all informed by t) ≈ exp(-(N - I(t)))``, which gives quantiles, not just a mean. The
  model leaves out the randomness of the first few sends (which shifts a whole run earlier or
  later) and message latency; the early phase grows like ``e^{r t}`` (the Euler–Lotka equation
  of sends at ticks ``U, U+1, ...``, ``U`` uniform, gives growth rate exactly ``k``), faster than
  the synchronous ``(1+k)^t`` of :func:`push_gossip_rounds`.
* :func:`poisson_interval`: the exact (Garwood 1936) confidence interval for a rate of rare
  events (false positives per node-hour), so a figure can say how little a count of 0 or 4 in a
  few node-hours pins down.
* :func:`swim_first_detection_periods`: SWIM §3.1/§5 (Das, Gupta, Motivala 2002): in each
  protocol period every one of the ``N - 1`` other members picks a random target, so a failed
  member is picked by someone with probability ``1 - (1 - 1/(N-1))^(N-1)`` (→ ``1 - 1/e``) per
  period; the number of periods until it is first picked is geometric, with expectation
  ``1 / (1 - (1 - 1/(N-1))^(N-1))`` → ``e/(e-1) ≈ 1.58`` for large N. The paper's periods are
  synchronous and a failure is detected at the end of the period in which it is picked.
* :func:`swim_first_suspicion_model`: what the same argument gives for *this* implementation,
  which differs twice: members tick at independent random phases (a crash lands at a random
  moment of everyone's period) and probe in a shuffled round robin (SWIM §4.3: each member
  probes a given target once per ``N - 1`` periods, at a random slot of each round, so the gap
  between two probes of one target by one member is ``N - 1 + d`` periods, ``d`` triangular on
  ``±(N-2)``); a probe is concluded — and the suspicion raised — at the prober's *next* tick,
  one period after the probe. So the first suspicion comes ``F + T`` after the crash, where
  ``F`` is the first probe's wait: the minimum over ``N - 1`` members of the forward-recurrence
  time of that gap. For large N, ``F`` is close to exponential with mean ``T`` and the total
  close to ``2T``; the round robin bounds the wait by ``2(N-1)`` periods instead of leaving an
  unbounded geometric tail. :func:`swim_first_suspicion_cdf` gives the whole distribution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from kvcore.states import MemberEvent, State

Event = tuple[float, str, str, str, int]

#: membership news -> the observer events that mean "heard it" (see the module doc)
NEWS: dict[str, tuple[MemberEvent, ...]] = {
    "join": (MemberEvent.JOIN, MemberEvent.ALIVE),
    "crash": (MemberEvent.SUSPECT, MemberEvent.DEAD),
    "suspect": (MemberEvent.SUSPECT, MemberEvent.DEAD),
    "dead": (MemberEvent.DEAD,),
    "leave": (MemberEvent.LEFT,),
    "left": (MemberEvent.LEFT,),
    "refute": (MemberEvent.ALIVE, MemberEvent.JOIN),
}

#: what each observer event does to the observer's view of the subject (None: forget it)
_STATE_OF_EVENT: dict[MemberEvent, State | None] = {
    MemberEvent.JOIN: State.ALIVE, MemberEvent.ALIVE: State.ALIVE, MemberEvent.SUSPECT: State.SUSPECT,
    MemberEvent.DEAD: State.DEAD, MemberEvent.LEFT: State.LEFT, MemberEvent.REAP: None,
}


# --- ground truth ----------------------------------------------------------------------------


def truth_at(truth_log: Iterable[tuple[float, str, str]], node: str, t: float) -> str | None:
    """The node's real condition at time ``t`` (the last change at or before ``t``); None
    before it first booted."""
    state = None
    for time, nid, st in truth_log:
        if time > t:
            break
        if nid == node:
            state = st
    return state


def up_intervals(cluster: Any) -> dict[str, list[tuple[float, float]]]:
    """node -> the intervals ``[start, end)`` during which it was up (end = inf if still up)."""
    out: dict[str, list[tuple[float, float]]] = {}
    since: dict[str, float] = {}
    for time, nid, st in cluster.truth_log:
        if st == "up":
            since.setdefault(nid, time)
        elif nid in since:
            out.setdefault(nid, []).append((since.pop(nid), time))
    for nid, start in since.items():
        out.setdefault(nid, []).append((start, math.inf))
    return out


def last_boot(cluster: Any, node: str) -> float:
    """When the node last came up (0.0 if the log has no boot of it)."""
    t = 0.0
    for time, nid, st in cluster.truth_log:
        if nid == node and st == "up":
            t = time
    return t


def observers(cluster: Any, exclude: str | None = None) -> list[str]:
    """The nodes up now (ground truth), ``exclude`` left out, in the cluster's node order."""
    return [nid for nid in cluster.ids if cluster.truth.get(nid) == "up" and nid != exclude]


# --- who learned what, when --------------------------------------------------------------------


def learned_times(
    cluster: Any,
    event: str | Sequence[str],
    subject: str,
    since: float = 0.0,
    *,
    min_incarnation: int | None = None,
    among: Sequence[str] | None = None,
) -> np.ndarray:
    """Per observer (:func:`observers`, or ``among``), the first time it learned ``event``
    about ``subject`` at or after ``since``; NaN if it never did.

    ``event`` is a kind of news (``join``, ``crash``, ``dead``, ``leave``, ``refute``: see
    :data:`NEWS`) or observer event name(s). For ``refute`` the incarnation defaults to the
    subject's first ``refute`` event at or after ``since`` (NaN everywhere if it never refuted).
    """
    names: tuple[str, ...]
    if isinstance(event, str):
        names = NEWS.get(event, (event,))
    else:
        names = tuple(event)
    obs = list(among) if among is not None else observers(cluster, exclude=subject)
    min_inc = min_incarnation
    if event == MemberEvent.REFUTE and min_inc is None:
        for t, o, ev, s, inc in cluster.member_events:
            if t >= since and ev == MemberEvent.REFUTE and s == subject and o == subject:
                min_inc = inc
                break
        if min_inc is None:
            return np.full(len(obs), np.nan)
    floor = {o: max(since, last_boot(cluster, o)) for o in obs}
    first: dict[str, float] = {}
    for t, o, ev, s, inc in cluster.member_events:
        if s != subject or ev not in names or o in first or o not in floor or t < floor[o]:
            continue
        if min_inc is not None and inc < min_inc:
            continue
        first[o] = t
    return np.array([first.get(o, np.nan) for o in obs], dtype=float)


def convergence_curve(times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Fraction of observers informed by each time of ``grid`` (NaN times never count)."""
    times = np.asarray(times, dtype=float)
    grid = np.asarray(grid, dtype=float)
    if times.size == 0:
        return np.zeros(grid.shape)
    known = np.sort(times[~np.isnan(times)])
    return np.searchsorted(known, grid, side="right") / times.size


def time_to_fraction(times: np.ndarray, fraction: float = 1.0) -> float:
    """The earliest time by which ``fraction`` of the observers were informed (NaN if never)."""
    times = np.asarray(times, dtype=float)
    if times.size == 0:
        return math.nan
    need = max(1, math.ceil(fraction * times.size - 1e-9))
    known = np.sort(times[~np.isnan(times)])
    return float(known[need - 1]) if known.size >= need else math.nan


@dataclass(frozen=True)
class Detection:
    """Delays (seconds after the crash) per observer: first suspicion-or-death, first death."""

    observers: tuple[str, ...]
    suspect: np.ndarray
    dead: np.ndarray

    def first(self) -> float:
        """Time to first detection: the earliest suspicion by anyone (NaN if nobody)."""
        return float(np.nanmin(self.suspect)) if np.any(~np.isnan(self.suspect)) else math.nan


def detection_times(cluster: Any, subject: str, crash_time: float) -> Detection:
    obs = observers(cluster, exclude=subject)
    sus = learned_times(cluster, "crash", subject, crash_time, among=obs) - crash_time
    dead = learned_times(cluster, MemberEvent.DEAD, subject, crash_time, among=obs) - crash_time
    return Detection(tuple(obs), sus, dead)


# --- false positives ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FalsePositive:
    """``observer`` came to hold ``subject`` dead at ``time`` while the subject was up
    (since ``up_since``)."""

    time: float
    observer: str
    subject: str
    incarnation: int
    up_since: float


def false_positives(cluster: Any, *, event: str = MemberEvent.DEAD, grace: float = 0.0) -> list[FalsePositive]:
    """Every ``event`` (default ``dead``; ``suspect`` gives false suspicions) an observer logged
    about a node that was up, and had been for more than ``grace`` seconds, at that moment."""
    ups = up_intervals(cluster)
    out = []
    for t, o, ev, s, inc in cluster.member_events:
        if ev != event or s == o:
            continue
        for start, end in ups.get(s, ()):
            if start <= t < end:
                if t - start > grace:
                    out.append(FalsePositive(t, o, s, inc, start))
                break
    return out


def episodes(fps: Iterable[FalsePositive]) -> list[FalsePositive]:
    """One row per wrong declaration: the first row of each ``(subject, incarnation)``."""
    seen: dict[tuple[str, int], FalsePositive] = {}
    for fp in fps:
        key = (fp.subject, fp.incarnation)
        if key not in seen or fp.time < seen[key].time:
            seen[key] = fp
    return sorted(seen.values(), key=lambda f: (f.time, f.subject))


# --- views -------------------------------------------------------------------------------------


def view_states(cluster: Any) -> dict[str, dict[str, str]]:
    """Each node that is up: every member it knows (itself included) -> its state."""
    out = {}
    for nid in observers(cluster):
        node = cluster.node(nid)
        out[nid] = {m: mem.state for m, mem in node.membership.members.items()}
    return out


def views(cluster: Any) -> dict[str, frozenset[str]]:
    """Each node that is up: the members it holds alive (itself included)."""
    return {nid: frozenset(m for m, st in states.items() if st == State.ALIVE)
            for nid, states in view_states(cluster).items()}


def view_disagreements(cluster: Any) -> list[str]:
    """Why the cluster is not of one view, one sentence per wrong entry (empty: one view)."""
    live = set(observers(cluster))
    out = []
    for nid, states in view_states(cluster).items():
        for m in sorted(live - states.keys()):
            out.append(f"{nid} does not know {m}, which is up")
        for m, st in sorted(states.items()):
            if m in live and st != State.ALIVE:
                out.append(f"{nid} holds {m} {st}, but it is up")
            elif m not in live and st not in (State.DEAD, State.LEFT):
                out.append(f"{nid} holds {m} {st}, but it is {cluster.truth.get(m, 'unknown')}")
    return out


def one_view(cluster: Any) -> bool:
    """All nodes that are up hold exactly those as alive and every other member dead or left."""
    return not view_disagreements(cluster)


def view_timeline(cluster: Any, grid: Sequence[float] | np.ndarray) -> tuple[list[str], np.ndarray]:
    """How many members each node held alive (itself included) at each time of ``grid``.

    Returns ``(nodes, counts)`` with ``counts[i, j]`` for ``grid[i]`` and ``nodes[j]`` (every
    node of the cluster), NaN while a node is down or has left. Rebuilt from the logs: at each
    boot a node of the static core (``cluster.core_ids``) holds the static configuration
    alive, any other node only itself; then its events apply. The log does not say in which
    state a member was first learned, so ``join`` counts as alive; kvcore also adds slot owners
    that a push-pull reports dead straight as dead (``Membership._learn_absent``), which this
    replay counts alive until their next event — it happens when dead members are reaped on
    one node and re-learned from another that has not reaped them yet (partitions longer than
    ``reap_time``). For exact views, sample :func:`views` while the cluster runs.
    """
    nodes = list(cluster.ids)
    col = {nid: j for j, nid in enumerate(nodes)}
    core = getattr(cluster, "core_config", None) or cluster.cluster_config
    core_ids = [s.id for s in core.nodes]
    grid_arr = np.asarray(grid, dtype=float)
    counts = np.full((grid_arr.size, len(nodes)), np.nan)
    # merge the two logs in time order; at equal times a boot goes first
    changes: list[tuple[float, int, Any]] = [(t, 0, (nid, st)) for t, nid, st in cluster.truth_log]
    changes += [(e[0], 1, e) for e in cluster.member_events]
    changes.sort(key=lambda c: (c[0], c[1]))
    view: dict[str, dict[str, State]] = {}
    alive: dict[str, int] = {}
    gi = 0

    def snapshot(upto: float) -> None:
        nonlocal gi
        while gi < grid_arr.size and grid_arr[gi] < upto:
            for o, a in alive.items():
                counts[gi, col[o]] = a
            gi += 1

    for t, kind, item in changes:
        snapshot(t)
        if kind == 0:
            nid, st = item
            if st == "up":
                v = {m: State.ALIVE for m in core_ids} if nid in core_ids else {}
                v[nid] = State.ALIVE
                view[nid] = v
                alive[nid] = len(v)
            else:
                view.pop(nid, None)
                alive.pop(nid, None)
            continue
        _, o, ev, s, _inc = item
        v_o = view.get(o)
        if v_o is None or ev not in _STATE_OF_EVENT or s == o:
            continue
        before = v_o.get(s)
        after = _STATE_OF_EVENT[ev]
        if after is None:
            v_o.pop(s, None)
        else:
            v_o[s] = after
        alive[o] += (after == State.ALIVE) - (before == State.ALIVE)
    snapshot(math.inf)
    return nodes, counts


# --- load --------------------------------------------------------------------------------------


def totals(cluster: Any) -> dict[str, tuple[int, int]]:
    """kind -> (messages, bytes) sent so far by all nodes (all incarnations)."""
    return dict(cluster.messages_by_kind())


def load_per_node(
    cluster: Any,
    seconds: float,
    *,
    baseline: Mapping[str, tuple[int, int]] | None = None,
    nodes: int | None = None,
) -> dict[str, tuple[float, float]]:
    """kind -> (messages, bytes) sent per node per second, plus ``"total"``.

    Counts since ``baseline`` (a :func:`totals` taken earlier; default: since the start) over
    ``seconds`` of simulated time, divided by ``nodes`` (default: every node of the cluster).
    Bytes are 0 unless the cluster runs the codec.
    """
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    n = nodes or len(cluster.ids)
    base = baseline or {}
    out: dict[str, tuple[float, float]] = {}
    tm = tb = 0.0
    for kind, (msgs, size) in totals(cluster).items():
        m0, b0 = base.get(kind, (0, 0))
        m, b = (msgs - m0) / n / seconds, (size - b0) / n / seconds
        out[kind] = (m, b)
        tm += m
        tb += b
    out["total"] = (tm, tb)
    return out


# --- theory ------------------------------------------------------------------------------------


def push_gossip_rounds(n: int | float, fanout: int = 1) -> float:
    """Rounds for push gossip to reach all ``n``: ``log2(n) + ln(n)`` with fanout 1 (Pittel),
    ``log_{1+k}(n) + ln(n)/k`` with fanout ``k``."""
    if n <= 1:
        return 0.0
    return math.log(n) / math.log(1 + fanout) + math.log(n) / fanout


@dataclass(frozen=True)
class GossipModel:
    """A :func:`gossip_mean_field` solution: expected informed fraction over time (rounds)."""

    n: int
    #: time, in rounds, from the first informed node
    t: np.ndarray
    #: expected number of informed nodes (of ``n``) at each time of ``t``
    informed: np.ndarray

    def fraction(self) -> np.ndarray:
        """The expected fraction informed at each time of :attr:`t`."""
        return self.informed / self.n

    def time_to_fraction(self, fraction: float) -> float:
        """When the expected fraction informed first reaches ``fraction`` (NaN if never)."""
        need = fraction * self.n - 1e-9
        i = int(np.searchsorted(self.informed, need))
        return float(self.t[i]) if i < self.t.size else math.nan

    def p_all(self) -> np.ndarray:
        """P(everyone informed by each time of :attr:`t`): ``exp(-(n - I(t)))`` (Poisson end game)."""
        # a ufunc of an ndarray is an ndarray: numpy's stubs type it Any for an untyped dtype
        return cast(np.ndarray, np.exp(-(self.n - self.informed)))

    def all_informed_quantile(self, q: float = 0.5) -> float:
        """The ``q`` quantile of the time until everyone is informed (NaN if beyond the horizon)."""
        i = int(np.searchsorted(self.p_all(), q))
        return float(self.t[i]) if i < self.t.size else math.nan


def gossip_mean_field(
    n: int,
    fanout: int,
    *,
    transmits: float = math.inf,
    piggyback_rate: float = 0.0,
    initial: int = 1,
    dt: float = 0.01,
    horizon: float | None = None,
) -> GossipModel:
    """Mean-field push gossip among ``n`` nodes (see the module doc), time in gossip rounds.

    Each informed node sends ``fanout`` messages per round (at its own ticks, random phase) plus
    ``piggyback_rate`` more (piggybacked on other traffic), to uniformly random other nodes,
    until it has sent ``transmits`` in all. ``initial`` nodes are informed at time 0.
    """
    if n < 1 or fanout < 0 or initial < 1:
        raise ValueError("need n >= 1, fanout >= 0, initial >= 1")
    rate = fanout + piggyback_rate
    if n == 1 or rate <= 0:
        return GossipModel(n, np.array([0.0]), np.array([float(min(initial, n))]))
    active_for = transmits / rate  # rounds a node keeps sending
    if horizon is None:
        # well past the end game: 2 ln n / rate plus slack, and the sending window
        horizon = 6.0 * math.log(n + 1) / rate + 10.0 + (0.0 if math.isinf(active_for) else active_for)
    steps = math.ceil(horizon / dt)
    lag = steps + 1 if math.isinf(active_for) else max(1, round(active_for / dt))
    informed = np.empty(steps + 1)
    informed[0] = min(initial, n)
    new = np.zeros(steps + 1)  # nodes informed in each step (the initial ones at step 0)
    new[0] = informed[0]
    active = informed[0]
    for i in range(1, steps + 1):
        if i - 1 - lag >= 0:
            active -= new[i - 1 - lag]  # their transmit budget is spent
        hazard = rate * max(active, 0.0) / (n - 1) * dt
        got = (n - informed[i - 1]) * -math.expm1(-hazard)
        new[i] = got
        informed[i] = informed[i - 1] + got
        active += got
    return GossipModel(n, np.arange(steps + 1) * dt, informed)


def swim_gossip_model(n: int, swim: Any, *, initial: int | None = None, dt: float = 0.01) -> GossipModel:
    """:func:`gossip_mean_field` for a join into a SWIM cluster of ``n`` nodes with the
    ``swim`` config (a :class:`~kvcore.membership.SwimConfig`): fanout ``gossip_nodes``,
    piggybacking on the pings and acks of a probe every ``probe_interval`` (two more sends per
    probe period), at most ``retransmit_mult·ceil(log10(N+1))`` sends per update. ``n + 1``
    nodes in all with the newcomer. ``initial`` (default: worked out): the seed it joined
    through knows at once and spreads it; the newcomer itself spreads it from its first gossip
    tick only in small clusters: its own Alive waits in its queue behind the ``n`` Alives it
    queued from the seed's push-pull reply (fewest transmits, then newest, first), so it goes out
    in the first round only if ``n + 1 <= max_piggyback * gossip_nodes`` (48 in the LAN preset).
    Time in gossip rounds (``gossip_interval``)."""
    from kvcore.membership import retransmit_limit

    total = n + 1
    if initial is None:
        initial = 2 if total <= swim.max_piggyback * swim.gossip_nodes else 1
    return gossip_mean_field(
        total, swim.gossip_nodes,
        transmits=retransmit_limit(swim.retransmit_mult, total),
        piggyback_rate=2.0 * swim.gossip_interval / swim.probe_interval,
        initial=initial, dt=dt,
    )


# --- rates: exact Poisson intervals --------------------------------------------------------------


def _poisson_cdf(k: int, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu), summed in log space (no overflow for large k or mu)."""
    if mu <= 0:
        return 1.0
    log_term = -mu  # log P(X = 0)
    total = math.exp(log_term)
    for i in range(1, k + 1):
        log_term += math.log(mu) - math.log(i)
        total += math.exp(log_term)
    return min(1.0, total)


def _solve_decreasing(f: Any, target: float, hi: float) -> float:
    """The ``mu`` with ``f(mu) = target`` for ``f`` decreasing in ``mu`` (bisection)."""
    lo = 0.0
    while f(hi) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def poisson_interval(count: int, exposure: float = 1.0, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Garwood 1936) two-sided interval for a Poisson rate: ``count`` events in
    ``exposure`` (e.g. node-hours) -> ``(low, high)`` events per unit of exposure.

    The bounds are the means at which seeing ``count`` or more (low), or ``count`` or fewer
    (high), has probability ``(1 - confidence) / 2``: the chi-square form
    ``chi2(a/2; 2k)/2, chi2(1 - a/2; 2k + 2)/2``, solved here on the Poisson CDF. Zero events
    give ``low = 0`` and ``high = -ln((1 - confidence)/2)`` (3.69 at 95 %): zero is not
    "never", only "rarely enough not to show in this much exposure". Conservative: it covers
    the true rate at least ``confidence`` of the time.
    """
    if count < 0 or exposure <= 0 or not 0.0 < confidence < 1.0:
        raise ValueError("need count >= 0, exposure > 0 and 0 < confidence < 1")
    tail = (1.0 - confidence) / 2.0
    hi_start = count + 10.0 * math.sqrt(count + 1.0) + 10.0
    high = _solve_decreasing(lambda mu: _poisson_cdf(count, mu), tail, hi_start)
    low = 0.0
    if count > 0:
        # P(X >= count | mu) = 1 - cdf(count - 1, mu) rises with mu: solve cdf(count - 1) = 1 - tail
        low = _solve_decreasing(lambda mu: _poisson_cdf(count - 1, mu), 1.0 - tail, hi_start)
    return low / exposure, high / exposure


def swim_first_detection_periods(n: int) -> float:
    """SWIM §3.1: expected protocol periods until some member first picks a failed member,
    ``1 / (1 - (1 - 1/(N-1))^(N-1))`` (→ e/(e-1) ≈ 1.582 for large N)."""
    if n < 2:
        return math.inf
    if n == 2:
        return 1.0
    return 1.0 / (1.0 - (1.0 - 1.0 / (n - 1)) ** (n - 1))


def swim_expected_first_detection(n: int, probe_interval: float) -> float:
    """The paper's expected time to first detection: ``T · swim_first_detection_periods(N)``."""
    return probe_interval * swim_first_detection_periods(n)


def _first_probe_survival(m: int, w: np.ndarray) -> np.ndarray:
    """P(first probe of the crashed member waits longer than ``w`` periods), N - 1 = m members."""
    # gap G = m + d periods, d triangular on -(m-1)..(m-1): P(d) = (m - |d|) / m^2
    d = np.arange(-(m - 1), m)
    g = (m + d).astype(float)
    pg = (m - np.abs(d)) / m**2
    # one member: P(W > w) = (1/E[G]) ∫_w^inf P(G > s) ds = E[(G - w)^+] / m (E[G] = m);
    # the first of m independent members: that to the power m
    tail = np.array([np.dot(pg, np.clip(g - x, 0.0, None)) for x in np.ravel(w)]) / m
    return (tail**m).reshape(np.shape(w))


def swim_first_suspicion_cdf(n: int, probe_interval: float, t: np.ndarray) -> np.ndarray:
    """P(first suspicion within ``t`` seconds of the crash) under the model of the module doc:
    the first probe's wait, plus one period to conclude it."""
    m = n - 1
    periods = np.asarray(t, dtype=float) / probe_interval - 1.0
    out = np.zeros(periods.shape)
    pos = periods > 0
    if m >= 1 and pos.any():
        out[pos] = 1.0 - _first_probe_survival(m, periods[pos])
    return out


def swim_first_suspicion_model(n: int, probe_interval: float) -> float:
    """Expected delay from a crash to the first suspicion in this implementation (module doc):
    ``E[min over N-1 members of the forward-recurrence time of the round-robin gap] + T``."""
    m = n - 1
    if m < 1:
        return math.inf
    # the survival of the minimum is below e^-40 by 60 periods
    w = np.linspace(0.0, min(2.0 * m, 60.0), 6001)
    surv = _first_probe_survival(m, w)
    first_probe = float(np.sum((surv[1:] + surv[:-1]) * 0.5 * np.diff(w)))
    return probe_interval * (first_probe + 1.0)


__all__ = [
    "NEWS",
    "Detection",
    "FalsePositive",
    "GossipModel",
    "convergence_curve",
    "detection_times",
    "episodes",
    "false_positives",
    "gossip_mean_field",
    "last_boot",
    "learned_times",
    "load_per_node",
    "observers",
    "one_view",
    "poisson_interval",
    "push_gossip_rounds",
    "swim_expected_first_detection",
    "swim_first_detection_periods",
    "swim_first_suspicion_cdf",
    "swim_first_suspicion_model",
    "swim_gossip_model",
    "time_to_fraction",
    "totals",
    "truth_at",
    "up_intervals",
    "view_disagreements",
    "view_states",
    "view_timeline",
    "views",
]
