"""Raft elections in simulated time: how long until a crashed leader is replaced (issue #11's lab).

Theory of operation
-------------------
A group of N servers runs :class:`kvcore.raft.Raft` (the core as it is: PreVote, CheckQuorum
and leader stickiness on unless asked otherwise) over :class:`sim.network.SimNetwork` with a
one-way latency in the sim's latency syntax (:func:`sim.latency.parse_latency`). Persistence is
instantaneous: every Ready is saved and synced at once (the cost of a sync is out of scope here;
the replicated store's lab prices it).

**Time.** The core counts ticks; here a tick is ``tick`` seconds of simulated time (0.1 ms by
default, so Figure 16's 150-151 ms range has 11 distinct timeouts). Each server's ticks fall on
its own grid, ``origin + k * tick`` with a random origin, as independent clocks do. Ticking every
server every 0.1 ms would cost millions of events per run, so ticks are applied lazily: a server
that receives a message first applies the ticks due by then (``Raft.tick()`` is a few attribute
updates), and each server keeps one wake-up at the next tick at which one of its timers fires
(the follower's or candidate's randomized election timeout, the leader's heartbeat and
CheckQuorum), which it re-arms after every input. A tick that produced output anywhere but at the
predicted wake-up would be a misprediction; ``late_ticks`` counts them and the tests pin it at 0.

**One run** (:func:`run_election`): server ``s1`` campaigns at time 0; once every server has
followed the same leader for two heartbeat intervals the group is stable; the leader is crashed
at a time uniform within one heartbeat interval after that (the Raft paper, §9.3: "crashed
uniformly randomly within its heartbeat interval"), together with F-1 followers chosen at random
(``failed`` = F counts the leader, as AvailSim's "one failed" is F = 1). With ``stale`` = K the
leader first appends an entry that K live followers never receive, so they cannot win, as in the
paper's runs ("the servers in each trial had different log lengths"). With ``fresh_timers``
every live server's election timer restarts at the crash (its tick grid too), as AvailSim starts
them. The run ends when every live server has heard the new leader (its ``lead`` names a leader
of a term later than the crashed one), the thesis's definition; a run with no such moment within
``cap`` simulated seconds counts at the cap and is flagged ``capped``.

**Split votes**: an election term (one that some server entered as a candidate after the crash)
in which no candidate won. PreVote rounds that fail start no term and are counted apart.

**Figure 3 on every run**: every Ready of every server is fed to a
:class:`checker.RaftProperties` (:func:`sim.raftcheck.feed_from_ready`), and a crash is reported
to it; a run's ``violations`` are its sentences (none, for a correct core) and the summary counts
them (``figure3_violations``). The checker only reads: runs and digests are unchanged.

Every random draw comes from streams derived from (seed, run number, purpose)
(:func:`sim.rand.stream`), so the same seed gives the same numbers in any process.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

import simpy

from checker.raftprops import RaftProperties
from kvcore.raft import CANDIDATE, LEADER, PRE_CANDIDATE, MemoryRaftStorage, Raft, RaftConfig
from kvcore.raft.messages import RaftAppend, RaftMessage
from sim.cliargs import finite
from sim.latency import Latency, Uniform, parse_latency
from sim.network import SimNetwork, schedule_call
from sim.raftcheck import feed_from_ready
from sim.rand import stream
from sim.trace import Trace

#: a tick of the core, in simulated seconds, unless asked otherwise
DEFAULT_TICK = 0.0001
#: float slack when turning a time into a count of elapsed ticks
_EPS = 1e-6


def _positive(x: float) -> bool:
    return finite(x) and x > 0


@dataclass(frozen=True)
class ElectionSetup:
    """One experiment's settings, in seconds (``heartbeat`` None: half the minimum timeout)."""

    servers: int = 5
    failed: int = 1
    timeout_min: float = 0.150
    timeout_max: float = 0.300
    latency: Latency = field(default_factory=lambda: Uniform(0.005, 0.010))
    heartbeat: float | None = None
    fresh_timers: bool = False
    #: live followers whose log lacks the leader's last entry at the crash (the paper's runs: 2)
    stale: int = 0
    cap: float = 60.0
    tick: float = DEFAULT_TICK
    pre_vote: bool = True
    check_quorum: bool = True

    @property
    def heartbeat_s(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.timeout_min / 2

    def ticks(self, seconds: float) -> int:
        return max(1, round(seconds / self.tick))

    def problems(self) -> list[str]:
        """Every problem with these settings, as sentences (empty: fine)."""
        out: list[str] = []
        if self.servers < 1:
            out.append(f"--servers must be at least 1, not {self.servers}.")
        if not 1 <= self.failed < self.servers:
            out.append(f"--failed must be at least 1 (the crashed leader) and less than --servers "
                       f"({self.servers}), not {self.failed}.")
        if self.servers >= 1 and not 0 <= self.stale <= self.servers - max(self.failed, 1):
            out.append(f"--stale must be within 0 and the live servers ({self.servers} - {self.failed}), "
                       f"not {self.stale}.")
        if not _positive(self.tick):
            out.append(f"--tick must be positive and finite, not {self.tick}.")
        if not (_positive(self.timeout_min) and _positive(self.timeout_max)):
            out.append(f"--timeout-min and --timeout-max must be positive and finite, not "
                       f"{self.timeout_min} and {self.timeout_max}.")
        elif self.timeout_min > self.timeout_max:
            out.append(f"--timeout-min ({self.timeout_min:g} s) must not exceed --timeout-max "
                       f"({self.timeout_max:g} s).")
        if self.heartbeat is not None and not _positive(self.heartbeat):
            out.append(f"--heartbeat must be positive and finite, not {self.heartbeat}.")
        if not _positive(self.cap):
            out.append(f"--cap must be positive and finite, not {self.cap}.")
        if not out and self.ticks(self.heartbeat_s) >= self.ticks(self.timeout_min):
            out.append(f"the heartbeat ({self.heartbeat_s:g} s) must be shorter than the minimum "
                       f"election timeout ({self.timeout_min:g} s) by at least one tick ({self.tick:g} s).")
        return out

    def config(self, sid: str) -> RaftConfig:
        lo, hi = self.ticks(self.timeout_min), self.ticks(self.timeout_max)
        return RaftConfig(id=sid, election_tick=lo, election_tick_max=hi,
                          heartbeat_tick=self.ticks(self.heartbeat_s),
                          pre_vote=self.pre_vote, check_quorum=self.check_quorum)


@dataclass(frozen=True)
class ElectionRun:
    """One run: ``elapsed`` seconds from the crash until every live server heard the new leader
    (the cap when ``capped``); ``terms`` election terms started after the crash, ``split_votes``
    of them won by no one; ``prevotes_lost`` PreVote rounds that did not lead to a candidacy."""

    elapsed: float
    capped: bool
    leader: str | None
    terms: int
    split_votes: int
    prevotes_lost: int
    late_ticks: int
    digest: str
    #: Figure 3 violations the checker found in the run (sentences; none for a correct core)
    violations: tuple[str, ...] = ()


class _Server:
    """One server: its Raft core, its storage and its lazily applied tick grid."""

    def __init__(self, group: RaftGroup, sid: str, origin: float) -> None:
        self.group = group
        self.id = sid
        self.storage = MemoryRaftStorage(group.ids)
        self.raft = Raft(group.setup.config(sid), self.storage.load(), stream(group.seed, group.run, "raft", sid))
        self.origin = origin  # tick k of this server falls at origin + k * tick
        self.ticked = 0
        self.up = True
        self.gen = 0  # the generation of the pending wake-up (older ones are ignored)
        self.wake_at = -1  # the tick count the pending wake-up applies up to

    # --- inputs --------------------------------------------------------------------------------

    def on_message(self, src: str, msg: RaftMessage) -> None:
        if not self.up:
            return
        self.catch_up_to_now()
        self.raft.step(msg)
        self.after_input()

    def wake(self, gen: int, upto: int) -> None:
        if not self.up or gen != self.gen:
            return
        self.catch_up(upto)
        self.after_input()

    def catch_up(self, upto: int) -> None:
        r = self.raft
        while self.ticked < upto:
            self.ticked += 1
            role = r.role
            r.tick()
            if r.msgs or r.role != role:
                if self.ticked != self.wake_at:
                    self.group.late_ticks += 1  # output at a tick the wake-up did not predict
                self.process()

    def catch_up_to_now(self) -> None:
        """Apply every tick of this server's grid due by the current simulated time."""
        self.catch_up(int((self.group.env.now - self.origin) / self.group.tick + _EPS))

    def after_input(self) -> None:
        self.process()
        self.rearm()
        self.group.observe()

    # --- outputs -------------------------------------------------------------------------------

    def process(self) -> None:
        """The Ready contract: save (and sync, instantly), send, then advance."""
        r = self.raft
        group = self.group
        while r.has_ready():
            rd = r.ready()
            rd.persist(self.storage)
            for m in rd.messages:
                if group.withheld and m.dst in group.withheld and m.src == group.withholder \
                        and type(m) is RaftAppend:
                    continue  # the stale followers' missing entry (see propose_withheld)
                group.net.send(m.src, m.dst, m)
            if rd.soft_state is not None:
                group.saw_role(self, rd.soft_state.role, r.term)
            feed_from_ready(group.props, self.id, r, rd, group.env.now)
            r.advance(rd)

    def rearm(self) -> None:
        """Keep one wake-up at the next tick at which a timer of this server fires."""
        r = self.raft
        if r.role == LEADER:
            ahead = min(r.cfg.heartbeat_tick - r.heartbeat_elapsed, r.cfg.election_tick - r.election_elapsed)
        elif r.promotable():
            ahead = r.randomized_timeout - r.election_elapsed
        else:
            return
        upto = self.ticked + max(1, ahead)
        if upto == self.wake_at:
            return
        self.gen += 1
        self.wake_at = upto
        gen = self.gen
        delay = self.origin + upto * self.group.tick - self.group.env.now
        schedule_call(self.group.env, max(0.0, delay), lambda _e: self.wake(gen, upto))

    def restart_timer(self, now: float, rng: random.Random) -> None:
        """AvailSim's fresh timers: the election timer (and the tick grid) restart now. The core
        has no verb for this (a real server never needs one): the lab sets the two counters."""
        r = self.raft
        self.origin, self.ticked = now, 0
        r.election_elapsed = 0
        if r.role != LEADER:
            r.randomized_timeout = rng.randint(r.cfg.election_tick, r.cfg.election_tick_max or r.cfg.election_tick)
        self.wake_at = -1
        self.rearm()


class RaftGroup:
    """N servers on one simulated network, and the experiment's script (:meth:`experiment`)."""

    def __init__(self, setup: ElectionSetup, seed: int, run: int) -> None:
        self.setup, self.seed, self.run = setup, seed, run
        self.tick = setup.tick
        self.env = simpy.Environment()
        self.trace = Trace()
        self.net = SimNetwork(self.env, stream(seed, run, "net"), self.trace, setup.latency, codec=False)
        self.rng = stream(seed, run, "lab")
        self.ids = [f"s{i + 1}" for i in range(setup.servers)]
        self.late_ticks = 0
        self.props = RaftProperties()  # Figure 3, checked on every Ready
        self.servers = {sid: _Server(self, sid, self.rng.uniform(0.0, self.tick)) for sid in self.ids}
        for sid, s in self.servers.items():
            self.net.attach(sid).node = s
        self.withheld: frozenset[str] = frozenset()  # followers the old leader's appends skip
        self.withholder = ""
        self.crash_term: int | None = None  # set at the crash: from then on elections are watched
        self.cand_terms: set[int] = set()
        self.lead_terms: set[int] = set()
        self.prevotes = 0
        self.candidacies = 0
        self.crash_at = 0.0
        self.done_at: float | None = None
        self.leader: str | None = None
        self.done = self.env.event()

    def saw_role(self, s: _Server, role: str, term: int) -> None:
        if self.crash_term is None:
            return
        if role == CANDIDATE:
            self.cand_terms.add(term)
            self.candidacies += 1
        elif role == LEADER:
            self.lead_terms.add(term)
        elif role == PRE_CANDIDATE:
            self.prevotes += 1

    def live(self) -> list[_Server]:
        return [s for s in self.servers.values() if s.up]

    def agreed_leader(self) -> str | None:
        """The leader every live server follows, when they all follow the same live leader."""
        live = self.live()
        lead = live[0].raft.lead if live else None
        if lead is None or lead not in self.servers or not self.servers[lead].up:
            return None
        lr = self.servers[lead].raft
        if lr.role != LEADER or any(s.raft.lead != lead or s.raft.term != lr.term for s in live):
            return None
        return lead

    def observe(self) -> None:
        if self.crash_term is None or self.done_at is not None:
            return
        lead = self.agreed_leader()
        if lead is not None and self.servers[lead].raft.term > self.crash_term:
            self.done_at, self.leader = self.env.now, lead
            self.done.succeed()

    def crash(self, sid: str) -> None:
        s = self.servers[sid]
        s.up = False
        s.gen += 1  # its pending wake-up is void
        self.net.endpoints[sid].node = None
        self.props.crashed(sid, self.env.now)

    def propose_withheld(self, leader: str, live: list[str]) -> None:
        """The paper's "servers in each trial had different log lengths": the leader appends one
        entry that ``stale`` of the live followers never receive (its appends to them are
        withheld until the crash; heartbeats still reach them), so they cannot win (§5.4.1)."""
        self.withheld = frozenset(self.rng.sample(live, self.setup.stale))
        self.withholder = leader
        self.servers[leader].raft.propose(b"entry the stale followers lack")
        self.servers[leader].after_input()

    def _at_cap(self, _e: object) -> None:
        if not self.done.triggered:
            self.done.succeed()

    def experiment(self) -> Any:
        setup = self.setup
        hb = setup.heartbeat_s
        self.servers[self.ids[0]].raft.campaign()
        self.servers[self.ids[0]].after_input()
        for s in self.servers.values():
            s.rearm()
        stable, leader = 0, None
        while stable < 2:
            yield self.env.timeout(hb)
            if self.env.now > setup.cap:
                raise RuntimeError(f"the group found no stable leader within {setup.cap:g} simulated s "
                                   "before the crash; are the timeouts shorter than a round trip?")
            now_leader = self.agreed_leader()
            stable = stable + 1 if now_leader is not None and now_leader == leader else 0
            leader = now_leader
        delay = self.rng.uniform(0.0, hb)
        assert leader is not None
        followers = [sid for sid in self.ids if sid != leader]
        victims = self.rng.sample(followers, setup.failed - 1)
        if setup.stale:
            self.propose_withheld(leader, [sid for sid in followers if sid not in victims])
        yield self.env.timeout(delay)
        self.crash_at = self.env.now
        self.crash_term = self.servers[leader].raft.term
        for sid in [leader, *victims]:
            self.crash(sid)
        if setup.fresh_timers:
            for s in self.live():
                s.catch_up_to_now()
                s.restart_timer(self.env.now, self.rng)
        schedule_call(self.env, setup.cap, self._at_cap)
        self.observe()


def simulate(setup: ElectionSetup, seed: int, run: int = 0) -> RaftGroup:
    """One run of the experiment, the group kept for inspection (tests, notebooks)."""
    g = RaftGroup(setup, seed, run)
    proc = g.env.process(g.experiment())
    g.env.run(until=proc)
    g.env.run(until=g.done)
    return g


def run_election(setup: ElectionSetup, seed: int, run: int = 0) -> ElectionRun:
    """One run of the experiment (see the module docstring)."""
    g = simulate(setup, seed, run)
    capped = g.done_at is None
    elapsed = setup.cap if capped else (g.done_at or 0.0) - g.crash_at
    terms = len(g.cand_terms)
    splits = len(g.cand_terms - g.lead_terms)
    return ElectionRun(elapsed=elapsed, capped=capped, leader=g.leader, terms=terms, split_votes=splits,
                       prevotes_lost=max(0, g.prevotes - g.candidacies), late_ticks=g.late_ticks,
                       digest=g.trace.digest(), violations=tuple(g.props.violations()))


# --- many runs, and the command line ------------------------------------------------------------


@dataclass(frozen=True)
class ElectionStats:
    setup: ElectionSetup
    runs: list[ElectionRun]

    @property
    def times_ms(self) -> list[float]:
        return sorted(r.elapsed * 1000.0 for r in self.runs)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of the election times, in ms."""
        xs = self.times_ms
        return xs[max(0, math.ceil(q * len(xs) / 100.0 - 1e-9) - 1)]  # (99.9 * 1000 / 100 > 999)

    def summary(self) -> dict[str, Any]:
        xs = self.times_ms
        terms = sum(r.terms for r in self.runs)
        splits = sum(r.split_votes for r in self.runs)
        st = self.setup
        return {
            "runs": len(xs), "mean_ms": round(statistics.fmean(xs), 3),
            "median_ms": round(statistics.median(xs), 3), "p99_ms": round(self.percentile(99), 3),
            "p999_ms": round(self.percentile(99.9), 3),
            "min_ms": round(xs[0], 3), "max_ms": round(xs[-1], 3),
            "split_vote_rate": round(splits / terms, 6) if terms else 0.0,
            "split_votes": splits, "election_terms": terms,
            "runs_with_split_vote": sum(1 for r in self.runs if r.split_votes),
            "prevotes_lost": sum(r.prevotes_lost for r in self.runs),
            "capped": sum(1 for r in self.runs if r.capped),
            "late_ticks": sum(r.late_ticks for r in self.runs),
            "figure3_violations": sum(len(r.violations) for r in self.runs),
            "servers": st.servers, "failed": st.failed, "timeout_min_ms": st.timeout_min * 1000,
            "timeout_max_ms": st.timeout_max * 1000, "heartbeat_ms": st.heartbeat_s * 1000,
            "latency": repr(st.latency), "fresh_timers": st.fresh_timers, "stale": st.stale, "pre_vote": st.pre_vote,
            "cap_s": st.cap, "tick_ms": st.tick * 1000,
        }


def run_elections(setup: ElectionSetup, runs: int, seed: int) -> ElectionStats:
    """``runs`` runs of the experiment; run i draws from streams of (seed, i)."""
    problems = setup.problems()
    if problems:
        raise ValueError(" ".join(problems))
    return ElectionStats(setup, [run_election(setup, seed, i) for i in range(runs)])


def split_vote_formula(n: int, s: int, lat: float) -> float:
    """The thesis's closed formula for the split-vote rate with a fixed one-way latency (Ongaro,
    "Consensus: Bridging Theory and Practice", 2014, §9.2, "How common are split votes?"):
    ``Pr(D_{c,s} <= l) = sum_{k=c-1}^{s} C(s,k) l^k (1-l)^(s-k)`` with ``c = s - floor(n/2) + 1``,
    for ``n`` servers of which ``s`` are available and the latency ``l`` (``lat``) as a fraction of the
    timeout range (the first ``c`` servers all timing out within ``l`` of each other split the
    vote). The thesis bounds variable latencies by this formula at the range's maximum (and, with
    a bare majority, approximates them well at its mean)."""
    if lat >= 1.0:
        return 1.0
    c = s - n // 2 + 1
    return sum(math.comb(s, k) * lat ** k * (1.0 - lat) ** (s - k) for k in range(max(c - 1, 0), s + 1))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sim raft-elections",
        description="Crash a Raft group's leader in simulated time and measure how long until every "
        "live server has heard a new leader (the Raft paper's Figure 16, the thesis's AvailSim).")
    p.add_argument("--servers", type=int, default=5, help="servers in the group (default 5)")
    p.add_argument("--failed", type=int, default=1,
                   help="servers down when the election starts, the crashed leader included (default 1)")
    p.add_argument("--timeout-min", type=float, default=0.150, metavar="S",
                   help="minimum election timeout in seconds (default 0.150)")
    p.add_argument("--timeout-max", type=float, default=0.300, metavar="S",
                   help="maximum election timeout in seconds (default 0.300)")
    p.add_argument("--latency", default="uniform:0.005,0.010",
                   help="one-way latency: const:S | uniform:LO,HI | exp:MEAN | lognormal:MEDIAN,SIGMA "
                   "(default uniform:0.005,0.010, a broadcast time near 15 ms)")
    p.add_argument("--heartbeat", type=float, default=None, metavar="S",
                   help="heartbeat interval in seconds (default: half the minimum timeout)")
    p.add_argument("--fresh-timers", action="store_true",
                   help="every election timer restarts at the crash (AvailSim); else the crash falls "
                   "uniformly within a heartbeat interval")
    p.add_argument("--stale", type=int, default=0, metavar="K",
                   help="live followers whose log lacks the leader's last entry, so they cannot win "
                   "(the paper's runs: 2 of 4; default 0)")
    p.add_argument("--runs", type=int, default=200, help="runs (default 200)")
    p.add_argument("--seed", type=int, default=1, help="seed; the same seed gives the same numbers")
    p.add_argument("--cap", type=float, default=60.0, metavar="S",
                   help="simulated seconds after which a run without a leader counts at the cap (default 60)")
    p.add_argument("--tick", type=float, default=DEFAULT_TICK, metavar="S",
                   help=f"the Raft core's tick in seconds (default {DEFAULT_TICK:g})")
    p.add_argument("--no-pre-vote", action="store_true",
                   help="turn PreVote and CheckQuorum off (the paper's Raft had neither)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object, last line")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.runs < 1:
        p.error(f"--runs must be at least 1, not {args.runs}.")
    try:
        latency = parse_latency(args.latency)
    except ValueError as e:
        p.error(str(e))
    setup = ElectionSetup(
        servers=args.servers, failed=args.failed, timeout_min=args.timeout_min,
        timeout_max=args.timeout_max, latency=latency, heartbeat=args.heartbeat,
        fresh_timers=args.fresh_timers, stale=args.stale, cap=args.cap, tick=args.tick,
        pre_vote=not args.no_pre_vote, check_quorum=not args.no_pre_vote)
    problems = setup.problems()
    if problems:
        p.error(" ".join(problems))
    try:
        stats = run_elections(setup, args.runs, args.seed)
    except RuntimeError as e:
        print(f"python -m sim raft-elections: {e}", file=sys.stderr)
        return 1
    s = stats.summary()
    print(f"{s['servers']} servers, {s['failed']} failed, timeouts {s['timeout_min_ms']:g}-"
          f"{s['timeout_max_ms']:g} ms, heartbeat {s['heartbeat_ms']:g} ms, one-way latency "
          f"{args.latency}, {'fresh timers' if setup.fresh_timers else 'crash within a heartbeat'}, "
          f"{setup.stale} stale, PreVote {'on' if setup.pre_vote else 'off'}, seed {args.seed}")
    print(f"{'runs':>6} {'mean':>9} {'median':>9} {'p99':>9} {'max':>9}  split votes  capped")
    print(f"{s['runs']:>6} {s['mean_ms']:>9.1f} {s['median_ms']:>9.1f} {s['p99_ms']:>9.1f} {s['max_ms']:>9.1f}"
          f"  {s['split_votes']:>4}/{s['election_terms']:<6} {s['capped']:>6}   (ms)")
    if s["capped"]:
        print(f"{s['capped']} run(s) found no leader within {setup.cap:g} simulated s and count at the cap")
    for i, r in enumerate(stats.runs):
        for text in r.violations[:3]:
            print(f"run {i}: {text}")
    if args.json:
        print(json.dumps(s, sort_keys=True))
    return 0
