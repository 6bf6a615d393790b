"""Gossip membership: SWIM failure detection with the Lifeguard refinements, as memberlist runs it.

Theory of operation
-------------------
Every node keeps a list of members, each with a state (alive / suspect / dead / left) and an
*incarnation* number that only the member itself raises. All rules that change a member live in
this module (h11's "one file owns the state machine"):

**Merge rules** (SWIM §4.2, memberlist ``state.go``), as the pure function :func:`overrides`:
an update about a member at incarnation ``i`` replaces what we hold at ``j`` when

==============  ==================  ==================  ===================
update \\ held   alive               suspect             dead / left
==============  ==================  ==================  ===================
Alive(i)        i > j               i > j               i > j (rejoin)
Suspect(i)      i >= j              i > j               never
Dead(i)         i >= j              i >= j              never
==============  ==================  ==================  ===================

so a higher incarnation wins, suspect beats alive at equal incarnation, and dead beats both. A
node that hears itself suspected or declared dead *refutes* it by raising its incarnation above
the rumour's and spreading Alive (SWIM §4.2). ``Dead`` with ``source == node`` is a graceful
leave, held as ``left``.

**Failure detection** (SWIM §3.1, memberlist ``probeNode``): every probe interval, probe the
next member of a shuffled round-robin list (SWIM §4.3: every member is probed within a bounded
time). Send SwimPing; if no SwimAck arrives within the probe timeout, ask ``indirect_checks``
random members to probe it for us (PingReq); if no ack, direct or relayed, has come by the end of
the interval, suspect it. A suspicion becomes ``dead`` after the suspicion timeout unless the
member refutes it.

**Lifeguard** (Dadgar et al. 2018, memberlist ``awareness.go``, ``suspicion.go``), switchable as
a whole with ``SwimConfig.lifeguard`` so the lab can show what it buys:

- *Local health awareness*: a score in ``[0, awareness_max_multiplier)`` raised when our own
  probes fail without the expected Nacks and when we must refute a suspicion of ourselves, lowered
  by each successful probe; it multiplies the probe interval and timeout (``scale``), so a node
  that is itself slow stops accusing healthy peers.
- *Nacks*: a member asked to probe indirectly answers Nack when the target stays silent, so
  the asker can tell "the target is down" from "I am not hearing anything".
- *Dynamic suspicion*: the timeout starts at ``suspicion_max_timeout_mult`` times the minimum
  and shrinks logarithmically with each independent confirmation (:func:`remaining_suspicion_time`).
- *Buddy system*: a probe of a suspected member carries the Suspect message first, so the member
  learns of the suspicion from the prober and can refute at once.

**Dissemination** (SWIM §4.1): updates are queued in a :class:`BroadcastQueue` and piggybacked on
pings and acks, fewest-transmitted first, each sent at most ``retransmit_mult *
ceil(log10(N+1))`` times (:func:`retransmit_limit`); a newer update about a member replaces the
older one in the queue. Every gossip interval, the queued updates also go to ``gossip_nodes``
random members (alive, suspect, or dead for less than ``gossip_to_the_dead_time``).

**Anti-entropy**: every push-pull interval (scaled up for large clusters by
:func:`push_pull_scale`), exchange full state with one random member. The partner is drawn from
alive members *and* from dead ones not yet reaped (Serf's reconnect), which is what re-merges two
sides after a partition heals: each side hears it was declared dead, refutes, and the Alives
spread. Dead members are reaped after ``reap_time`` and are never probed.

**Joining**: seeds (peer addresses, as destination ids ``"@HOST:PORT"``, or node ids in the sim)
are tried in random order, each with a PushPull marked ``join``; the first reply makes us a
member. If none answers, retry after an exponential backoff with jitter.

**Slot ownership travels with membership**: every Alive carries the member's slot ranges and
their config epoch, so every node can derive the same slot map (the highest epoch wins per slot).
The owner of this module's events (the node) applies those claims.

Incarnation numbers are kept in the Runtime's durable ``storage``, so a node that crashes and
restarts comes back with a higher incarnation than any it used before; without durable storage,
it learns its old incarnation from the cluster's view of it and refutes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from kvcore.messages import (
    Alive,
    Dead,
    Gossip,
    MemberState,
    Nack,
    PingReq,
    PushPull,
    Suspect,
    SwimAck,
    SwimPing,
)
from kvcore.runtime import Runtime, TimerHandle

ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"
STATES = (ALIVE, SUSPECT, DEAD, LEFT)
INCARNATION_KEY = "swim.incarnation"
#: our own latest slot claim ("<epoch> <ranges>"), so a restart does not forget slots we took
CLAIM_KEY = "swim.claim"

Update = Alive | Suspect | Dead


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SwimConfig:
    """SWIM + Lifeguard settings. Times in seconds. Defaults are memberlist's DefaultLANConfig."""

    #: Time between two probes of this node (memberlist ProbeInterval). Each member is probed
    #: once per N intervals, round robin.
    probe_interval: float = 1.0
    #: How long to wait for a direct ack before asking others (ProbeTimeout). Should be around
    #: the 99th percentile of RTT; well below probe_interval.
    probe_timeout: float = 0.5
    #: How many members to ask for an indirect probe (IndirectChecks).
    indirect_checks: int = 3
    #: Suspicion timeout multiplier (SuspicionMult):
    #: timeout = suspicion_mult * max(1, log10(N+1)) * probe_interval.
    suspicion_mult: int = 4
    #: Upper bound of Lifeguard's dynamic suspicion timeout, as a multiple of the minimum
    #: (SuspicionMaxTimeoutMult).
    suspicion_max_timeout_mult: int = 6
    #: Retransmissions of each update: retransmit_mult * ceil(log10(N+1)) (RetransmitMult).
    retransmit_mult: int = 4
    #: Time between gossip rounds (GossipInterval) and members per round (GossipNodes).
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    #: How long a dead member still receives gossip, so it can learn it was declared dead and
    #: refute (GossipToTheDeadTime).
    gossip_to_the_dead_time: float = 30.0
    #: Time between full-state exchanges with one random member (PushPullInterval); scaled up
    #: above 32 members.
    push_pull_interval: float = 30.0
    #: Lifeguard's local health score bound (AwarenessMaxMultiplier).
    awareness_max_multiplier: int = 8
    #: Lifeguard as a whole: awareness, Nacks, dynamic suspicion, buddy system.
    lifeguard: bool = True
    #: Most updates piggybacked on one message (memberlist fits them in a 1400-byte UDP packet;
    #: ours are about 60-90 bytes each).
    max_piggyback: int = 16
    #: Dead and left members are forgotten after this long (never probed again before that).
    reap_time: float = 300.0
    #: How long to wait for a seed's answer before trying the next one.
    join_timeout: float = 1.0
    #: Backoff between rounds over all seeds: doubles from min to max, with jitter.
    join_backoff_min: float = 0.5
    join_backoff_max: float = 8.0

    @classmethod
    def lan(cls, **overrides: Any) -> SwimConfig:
        """memberlist's DefaultLANConfig: a LAN's RTTs, 1 s probes."""
        return cls(**overrides)

    @classmethod
    def wan(cls, **overrides: Any) -> SwimConfig:
        """memberlist's DefaultWANConfig: slower probes and more patience over long links."""
        base: dict[str, Any] = dict(
            suspicion_mult=6, push_pull_interval=60.0, probe_timeout=3.0, probe_interval=5.0,
            gossip_nodes=4, gossip_interval=0.5, gossip_to_the_dead_time=60.0,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def local(cls, **overrides: Any) -> SwimConfig:
        """memberlist's DefaultLocalConfig: loopback, so faster and less redundant."""
        base: dict[str, Any] = dict(
            indirect_checks=1, retransmit_mult=2, suspicion_mult=3, push_pull_interval=15.0,
            probe_timeout=0.2, probe_interval=1.0, gossip_interval=0.1, gossip_to_the_dead_time=15.0,
        )
        base.update(overrides)
        return cls(**base)

    def problems(self) -> list[str]:
        out = []
        for name in ("probe_interval", "probe_timeout", "gossip_interval", "push_pull_interval",
                     "join_timeout", "join_backoff_min", "join_backoff_max"):
            if not getattr(self, name) > 0:
                out.append(f"{name} must be a positive number of seconds, not {getattr(self, name)!r}.")
        if self.probe_timeout >= self.probe_interval:
            out.append(
                f"probe_timeout ({self.probe_timeout}s) must be shorter than probe_interval "
                f"({self.probe_interval}s), or indirect probes never get their turn."
            )
        for name in ("indirect_checks", "gossip_nodes"):
            if getattr(self, name) < 0:
                out.append(f"{name} must be zero or more, not {getattr(self, name)!r}.")
        for name in ("suspicion_mult", "suspicion_max_timeout_mult", "retransmit_mult",
                     "awareness_max_multiplier", "max_piggyback"):
            if getattr(self, name) < 1:
                out.append(f"{name} must be at least 1, not {getattr(self, name)!r}.")
        if self.reap_time < 0 or self.gossip_to_the_dead_time < 0:
            out.append("reap_time and gossip_to_the_dead_time must not be negative.")
        return out

    def validate(self) -> SwimConfig:
        from kvcore.config import ConfigError

        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self


# --- the formulas, pure and table-tested --------------------------------------------------------


def suspicion_timeout(suspicion_mult: int, n: int, interval: float) -> float:
    """Minimum suspicion timeout: ``suspicion_mult * max(1, log10(n+1)) * interval``.

    memberlist ``util.go`` (suspicionTimeout), with the log taken of N+1 as its config documents.
    """
    node_scale = max(1.0, math.log10(max(1, n) + 1))
    return suspicion_mult * node_scale * interval


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times one update is sent: ``retransmit_mult * ceil(log10(n+1))`` (memberlist)."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


def remaining_suspicion_time(confirmations: int, k: int, elapsed: float, min_t: float, max_t: float) -> float:
    """Lifeguard's dynamic suspicion timeout, minus the time already elapsed.

    With ``k`` expected confirmations, the timeout falls from ``max_t`` towards ``min_t`` as
    ``log(c+1)/log(k+1)`` of the way (memberlist ``suspicion.go``, remainingSuspicionTime); it is
    never below ``min_t``. With ``k == 0`` there is nothing to wait for: ``min_t``.
    """
    if k < 1:
        return min_t - elapsed
    frac = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = max_t - frac * (max_t - min_t)
    timeout = max(min_t, math.floor(1000.0 * raw) / 1000.0)
    return timeout - elapsed


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist's pushPullScale: above 32 members, stretch the interval by
    ``ceil(log2(n) - log2(32)) + 1`` so full-state traffic grows slowly with the cluster."""
    threshold = 32
    if n <= threshold:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(threshold)) + 1.0
    return interval * multiplier


def overrides(held_state: str, held_inc: int, update: str, inc: int) -> bool:
    """Does an update (``"alive"``, ``"suspect"``, ``"dead"``) at ``inc`` replace what we hold?

    The merge rules of SWIM §4.2 as memberlist applies them (see the table in the module doc).
    """
    if update == ALIVE:
        return inc > held_inc
    if held_state in (DEAD, LEFT):
        return False
    if update == SUSPECT:
        return inc >= held_inc if held_state == ALIVE else inc > held_inc
    if update == DEAD:
        return inc >= held_inc
    raise ValueError(f"unknown update {update!r}")


class Awareness:
    """Lifeguard local health: a score in [0, max) that scales timeouts by (score + 1)."""

    __slots__ = ("max", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, t: float) -> float:
        return t * (self.score + 1)


# --- state ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Member:
    node: str
    addr: str
    peer_addr: str
    incarnation: int = 0
    state: str = ALIVE
    state_change: float = 0.0
    slots: str = ""
    epoch: int = 0

    def to_state(self) -> MemberState:
        return MemberState(node=self.node, incarnation=self.incarnation, state=self.state,
                           addr=self.addr, peer_addr=self.peer_addr, slots=self.slots, epoch=self.epoch)

    def to_alive(self) -> Alive:
        return Alive(node=self.node, incarnation=self.incarnation, addr=self.addr,
                     peer_addr=self.peer_addr, slots=self.slots, epoch=self.epoch)

    def view(self) -> dict[str, Any]:
        return {"id": self.node, "addr": self.addr, "peer_addr": self.peer_addr, "state": self.state,
                "incarnation": self.incarnation, "slots": self.slots, "epoch": self.epoch}


class BroadcastQueue:
    """memberlist's TransmitLimitedQueue: updates keyed by member, fewest transmits first.

    Items live in buckets by transmit count (dicts, so insertion-ordered); within a bucket the
    most recently inserted goes first (memberlist orders by transmits, then newest id). A batch
    taken together moves up a level oldest first, so it keeps its newest-first order there; items
    that reach a level in different takes are ordered by arrival, not by age. Queueing an
    update about a member replaces any older one about it. ``take`` costs O(limit), whatever the
    queue's length, which matters when a thousand members join at once.
    """

    def __init__(self) -> None:
        self._levels: list[dict[str, Update]] = [{}]
        self._where: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._where)

    def queue(self, msg: Update) -> None:
        key = msg.node
        lvl = self._where.pop(key, None)
        if lvl is not None:
            del self._levels[lvl][key]
        self._levels[0][key] = msg
        self._where[key] = 0

    def take(self, limit: int, max_transmits: int) -> list[Update]:
        out: list[Update] = []
        moved: list[tuple[str, Update, int]] = []
        for lvl, bucket in enumerate(self._levels):
            need = limit - len(out)
            if need <= 0:
                break
            if not bucket:
                continue
            for key, msg in islice(reversed(bucket.items()), need):
                out.append(msg)
                moved.append((key, msg, lvl))
        # oldest first, so that the batch is newest first on its next level too
        for key, msg, lvl in reversed(moved):
            del self._levels[lvl][key]
            nxt = lvl + 1
            if nxt >= max_transmits:
                del self._where[key]
                continue
            while len(self._levels) <= nxt:
                self._levels.append({})
            self._levels[nxt][key] = msg
            self._where[key] = nxt
        return out


@dataclass
class _Suspicion:
    incarnation: int
    start: float
    k: int
    min_t: float
    max_t: float
    confirmations: set[str] = field(default_factory=set)
    timer: TimerHandle | None = None


@dataclass
class _Probe:
    seq: int
    target: str
    acked: bool = False
    expected_nacks: int = 0
    nacks: int = 0
    timer: TimerHandle | None = None


@dataclass
class _Relay:
    requester: str
    seq: int  # the requester's seq
    timer: TimerHandle | None = None


# --- the protocol --------------------------------------------------------------------------------

#: listener(event, node_id, member); events: join, alive, suspect, dead, left, refute, reap, update
Listener = Callable[[str, str, Member], None]


class Membership:
    """One node's SWIM membership. Drive it with :meth:`handle` and the timers it sets."""

    HANDLES = (SwimPing, SwimAck, PingReq, Nack, Gossip, PushPull)

    def __init__(
        self,
        runtime: Runtime,
        send: Callable[[str, Any], None],
        config: SwimConfig,
        addr: str,
        peer_addr: str,
    ) -> None:
        self.rt = runtime
        #: the Runtime's seeded random (never the module-level functions of ``random``)
        self._rng = runtime.random
        self._send = send
        self.config = config.validate()
        self.id = runtime.node_id
        stored = runtime.storage.get(INCARNATION_KEY)
        inc = int(stored.decode()) + 1 if stored else 0
        #: this node lived before (a crash and restart): what it knows may be stale
        self.restarted = stored is not None
        self.me = Member(self.id, addr, peer_addr, inc, ALIVE, runtime.now())
        self.members: dict[str, Member] = {self.id: self.me}
        self._persist_incarnation()
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.broadcasts = BroadcastQueue()
        self.listeners: list[Listener] = []
        self.running = False
        self.leaving = False
        self.joined = False
        self.seeds: list[str] = []
        self._seq = runtime.random.getrandbits(32)
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._pending_seqs: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, _Suspicion] = {}
        self._timers: dict[str, TimerHandle] = {}
        self._state_cache: tuple[MemberState, ...] | None = None
        #: sorted ids of live (alive/suspect) and of dead members, self excluded: the pools that
        #: probes, gossip and push-pull draw from, kept up to date instead of rebuilt per message
        self._live_ids: list[str] = []
        self._dead_ids: list[str] = []
        self._join_round = 0
        self._join_queue: list[str] = []
        self._join_timer: TimerHandle | None = None
        self.counters: dict[str, int] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    def add_static(self, members: Iterable[tuple[str, str, str, str, int]]) -> None:
        """Start knowing these members as alive at incarnation 0: (id, addr, peer_addr, slots, epoch).

        This is how a static cluster configuration seeds the view; SWIM then watches them.
        Our own entry takes its slots and epoch from here.
        """
        for nid, addr, peer_addr, slots, epoch in members:
            if nid == self.id:
                self.me.slots, self.me.epoch = slots, epoch
                self._emit("update", self.me)
                continue
            if nid in self.members:
                continue
            # no random insertion into the probe order here: the first probe tick shuffles
            self._add(Member(nid, addr, peer_addr, 0, ALIVE, self.rt.now(), slots, epoch), probe_now=False)

    def start(self, seeds: Iterable[str] = ()) -> None:
        if self.running:
            return
        self.running = True
        rnd = self.rt.random
        c = self.config
        # random phases, so that nodes started together do not tick together
        self._after("probe", rnd.uniform(0, c.probe_interval), self._probe_tick)
        self._after("gossip", rnd.uniform(0, c.gossip_interval), self._gossip_tick)
        self._after("push_pull", rnd.uniform(0, push_pull_scale(c.push_pull_interval, self.num_live())),
                    self._push_pull_tick)
        self.seeds = [s for s in seeds if s not in (self.id, "@" + self.me.peer_addr)]
        if not self.seeds and self.restarted and self._live_ids:
            # back from a crash: sync full state with a member we know before anything else, to
            # learn what changed while we were down (slots that moved, members that came)
            self.seeds = list(self._live_ids)
        if self.seeds:
            self._start_join_round()
        else:
            self.joined = True
        # announce ourselves (matters after a restart: our new incarnation)
        self.broadcasts.queue(self.me.to_alive())

    def join(self, seeds: Iterable[str]) -> None:
        """Join (another) cluster through ``seeds`` now (Redis's CLUSTER MEET)."""
        self.seeds = [s for s in seeds if s not in (self.id, "@" + self.me.peer_addr)]
        if not self.seeds:
            return
        self.joined = False
        self._join_round = 0
        if self._join_timer is not None:
            self._join_timer.cancel()
        if self.running:
            self._start_join_round()

    def stop(self) -> None:
        self.running = False
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        if self._probe is not None and self._probe.timer is not None:
            self._probe.timer.cancel()
        for r in self._relays.values():
            if r.timer is not None:
                r.timer.cancel()
        for s in self._suspicions.values():
            if s.timer is not None:
                s.timer.cancel()
        if self._join_timer is not None:
            self._join_timer.cancel()

    def leave(self) -> None:
        """Graceful leave: spread Dead(self) at a new incarnation; keep gossiping until stopped."""
        if self.leaving:
            return
        self.leaving = True
        self._bump_incarnation(self.me.incarnation + 1)
        msg = Dead(node=self.id, incarnation=self.me.incarnation, source=self.id)
        self._set_state(self.me, LEFT)
        self.broadcasts.queue(msg)
        # push it out now rather than waiting for the next gossip round
        for nid in self._gossip_targets(self.config.gossip_nodes * 2):
            self._send(nid, Gossip(updates=(msg,)))

    def stored_claim(self) -> tuple[str, int] | None:
        """The last claim :meth:`set_slots` made, as kept in durable storage: (slots, epoch)."""
        raw = self.rt.storage.get(CLAIM_KEY)
        if not raw:
            return None
        epoch_s, _, slots = raw.decode().partition(" ")
        return slots, int(epoch_s)

    def set_slots(self, slots: str, epoch: int) -> None:
        """Advertise a new slot claim: a fresh incarnation carries it to everyone."""
        self.me.slots, self.me.epoch = slots, epoch
        self.rt.storage.put(CLAIM_KEY, f"{epoch} {slots}".encode())
        self._bump_incarnation(self.me.incarnation + 1)
        self.broadcasts.queue(self.me.to_alive())
        self._emit("update", self.me)

    # --- views -------------------------------------------------------------------------------

    def state_of(self, node: str) -> str | None:
        m = self.members.get(node)
        return None if m is None else m.state

    def address_of(self, node: str) -> str | None:
        m = self.members.get(node)
        return None if m is None else m.peer_addr

    def live_members(self) -> list[Member]:
        return [self.members[k] for k in self._live_ids]

    def num_live(self) -> int:
        """Live members, self included when not left: the N of the formulas."""
        return len(self._live_ids) + (1 if self.me.state in (ALIVE, SUSPECT) else 0)

    def view(self) -> list[dict[str, Any]]:
        return [self.members[k].view() for k in sorted(self.members)]

    # --- input -------------------------------------------------------------------------------

    def handle(self, src: str, msg: Any) -> None:
        t = type(msg)
        if t is SwimPing:
            self._on_ping(src, msg)
        elif t is SwimAck:
            self._on_ack(src, msg)
        elif t is PingReq:
            self._on_ping_req(src, msg)
        elif t is Nack:
            self._on_nack(msg)
        elif t is Gossip:
            self._apply_all(msg.updates)
        elif t is PushPull:
            self._on_push_pull(src, msg)

    def _apply_all(self, updates: Iterable[Update]) -> None:
        for u in updates:
            self.apply(u)

    def apply(self, u: Update) -> None:
        t = type(u)
        if t is Alive:
            self._on_alive(u)  # type: ignore[arg-type]
        elif t is Suspect:
            self._on_suspect(u)  # type: ignore[arg-type]
        elif t is Dead:
            self._on_dead(u)  # type: ignore[arg-type]

    # --- merge rules (SWIM §4.2) -------------------------------------------------------------

    def _on_alive(self, a: Alive) -> None:
        if a.node == self.id:
            # Someone holds us alive at an incarnation we have not used (we restarted and lost
            # it): refute by jumping past it, with our current addresses and slots.
            if a.incarnation > self.me.incarnation and not self.leaving:
                self._refute(a.incarnation)
            return
        m = self.members.get(a.node)
        if m is None:
            self._count("learned")
            self.broadcasts.queue(a)
            self._add(Member(a.node, a.addr, a.peer_addr, a.incarnation, ALIVE, self.rt.now(), a.slots, a.epoch))
            return
        moved = m.state in (DEAD, LEFT) and (a.addr, a.peer_addr) != (m.addr, m.peer_addr)
        if not overrides(m.state, m.incarnation, ALIVE, a.incarnation) and not (
            moved and a.incarnation >= m.incarnation
        ):
            # memberlist's reclaim rule: a dead or left member may come back at a new address
            # with the same incarnation (a restart without its storage, on other ports)
            return
        was = m.state
        self._state_cache = None
        m.incarnation = a.incarnation
        m.addr, m.peer_addr = a.addr, a.peer_addr
        meta_changed = (m.slots, m.epoch) != (a.slots, a.epoch)
        m.slots, m.epoch = a.slots, a.epoch
        self._clear_suspicion(a.node)
        self.broadcasts.queue(a)
        if was != ALIVE:
            self._set_state(m, ALIVE)
        elif meta_changed:
            self._emit("update", m)

    def _on_suspect(self, s: Suspect) -> None:
        m = self.members.get(s.node)
        if m is None:
            return
        if s.node == self.id:
            if s.incarnation >= self.me.incarnation and not self.leaving:
                if self.config.lifeguard:
                    self.awareness.apply(1)
                self._refute(s.incarnation)
            return
        if m.state == SUSPECT and s.incarnation == m.incarnation:
            self._confirm(s.node, s.source)
            return
        if not overrides(m.state, m.incarnation, SUSPECT, s.incarnation):
            return
        m.incarnation = s.incarnation
        self.broadcasts.queue(s)
        self._set_state(m, SUSPECT)
        self._start_suspicion(m, s.source)

    def _on_dead(self, d: Dead) -> None:
        m = self.members.get(d.node)
        if m is None:
            return
        if d.node == self.id:
            if not self.leaving and d.incarnation >= self.me.incarnation:
                self._refute(d.incarnation)
            return
        if not overrides(m.state, m.incarnation, DEAD, d.incarnation):
            return
        m.incarnation = d.incarnation
        self._clear_suspicion(d.node)
        self.broadcasts.queue(d)
        self._set_state(m, LEFT if d.source == d.node else DEAD)

    def _refute(self, inc: int) -> None:
        self._bump_incarnation(max(inc, self.me.incarnation) + 1)
        self.broadcasts.queue(self.me.to_alive())
        self._count("refutes")
        self._emit("refute", self.me)

    def _bump_incarnation(self, inc: int) -> None:
        self._state_cache = None
        self.me.incarnation = inc
        self._persist_incarnation()

    def _persist_incarnation(self) -> None:
        self.rt.storage.put(INCARNATION_KEY, str(self.me.incarnation).encode())

    def _set_state(self, m: Member, state: str) -> None:
        self._unindex(m)
        m.state = state
        m.state_change = self.rt.now()
        self._index(m)
        self._emit(state, m)

    def _add(self, m: Member, probe_now: bool = True) -> None:
        self.members[m.node] = m
        self._index(m)
        if probe_now and m.state in (ALIVE, SUSPECT) and m.node != self.id:
            # SWIM §4.3: a new member goes to a random place in the rest of this round
            lo = self._probe_index
            pos = lo + self._rng.randrange(len(self._probe_order) - lo + 1)
            self._probe_order.insert(pos, m.node)
        self._emit("join", m)

    def _index(self, m: Member) -> None:
        if m.node == self.id:
            return
        pool = self._live_ids if m.state in (ALIVE, SUSPECT) else self._dead_ids if m.state == DEAD else None
        if pool is not None:
            bisect.insort(pool, m.node)

    def _unindex(self, m: Member) -> None:
        if m.node == self.id:
            return
        for pool in (self._live_ids, self._dead_ids):
            i = bisect.bisect_left(pool, m.node)
            if i < len(pool) and pool[i] == m.node:
                del pool[i]
                return

    # --- suspicion (Lifeguard §IV-B, memberlist suspicion.go) --------------------------------

    def _start_suspicion(self, m: Member, source: str) -> None:
        self._clear_suspicion(m.node)  # a suspicion at a lower incarnation, if any
        c = self.config
        n = self.num_live()
        min_t = suspicion_timeout(c.suspicion_mult, n, c.probe_interval)
        if c.lifeguard:
            k = c.suspicion_mult - 2
            if n - 2 < k:  # not enough members to expect that many confirmations
                k = 0
            max_t = c.suspicion_max_timeout_mult * min_t
        else:
            k, max_t = 0, min_t
        s = _Suspicion(m.incarnation, self.rt.now(), k, min_t, max_t)
        # the first suspecter, even when it is us, is in the set but is no confirmation
        # (memberlist newSuspicion), so it cannot confirm its own suspicion later
        s.confirmations.add(source)
        self._suspicions[m.node] = s
        self._arm_suspicion(m.node, s)

    def _arm_suspicion(self, node: str, s: _Suspicion) -> None:
        if s.timer is not None:
            s.timer.cancel()
        elapsed = self.rt.now() - s.start
        # the first suspecter does not count as a confirmation (memberlist: n starts at 0)
        confirmations = max(0, len(s.confirmations) - 1) if self.config.lifeguard else 0
        remaining = remaining_suspicion_time(confirmations, s.k, elapsed, s.min_t, s.max_t)
        s.timer = self.rt.call_later(max(0.0, remaining), lambda: self._suspicion_expired(node, s))

    def _confirm(self, node: str, source: str) -> None:
        s = self._suspicions.get(node)
        # our own failed probe of a member someone else suspects is a confirmation too, and is
        # gossiped on (memberlist suspectNode: "independent confirmations ... flow even when a
        # node probes a node that's already suspect")
        if s is None or not self.config.lifeguard or source in s.confirmations:
            return
        if len(s.confirmations) - 1 >= s.k:
            return
        s.confirmations.add(source)
        self._count("confirmations")
        m = self.members[node]
        self.broadcasts.queue(Suspect(node=node, incarnation=m.incarnation, source=source))
        self._arm_suspicion(node, s)

    def _suspicion_expired(self, node: str, s: _Suspicion) -> None:
        if not self.running or self._suspicions.get(node) is not s:
            return
        m = self.members.get(node)
        if m is None or m.state != SUSPECT or m.incarnation != s.incarnation:
            return
        self._count("declared_dead")
        self._on_dead(Dead(node=node, incarnation=m.incarnation, source=self.id))

    def _clear_suspicion(self, node: str) -> None:
        s = self._suspicions.pop(node, None)
        if s is not None and s.timer is not None:
            s.timer.cancel()

    # --- probing (SWIM §3.1, §4.3) -----------------------------------------------------------

    def _after(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        self._timers[name] = self.rt.call_later(delay, fn)

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _probe_tick(self) -> None:
        if not self.running:
            return
        c = self.config
        self._conclude_probe()
        interval = self.awareness.scale(c.probe_interval) if c.lifeguard else c.probe_interval
        self._after("probe", interval, self._probe_tick)
        target = self._next_probe_target()
        if target is None:
            return
        m = self.members[target]
        seq = self._next_seq()
        p = _Probe(seq, target)
        self._probe = p
        self._pending_seqs[seq] = p
        gossip = self._piggyback()
        if c.lifeguard and m.state == SUSPECT:
            # buddy system: tell the suspect first, so it can refute at once
            gossip = (Suspect(node=target, incarnation=m.incarnation, source=self.id), *gossip)
        self._count("probes")
        self._send(target, SwimPing(seq=seq, target=target, gossip=gossip))
        timeout = self.awareness.scale(c.probe_timeout) if c.lifeguard else c.probe_timeout
        p.timer = self.rt.call_later(timeout, lambda: self._probe_timed_out(p))

    def _next_probe_target(self) -> str | None:
        for _ in range(2):
            while self._probe_index < len(self._probe_order):
                nid = self._probe_order[self._probe_index]
                self._probe_index += 1
                m = self.members.get(nid)
                if m is not None and m.state in (ALIVE, SUSPECT) and nid != self.id:
                    return nid
            self._reset_probe_order()
        return None

    def _reset_probe_order(self) -> None:
        """Reap long-dead members and reshuffle the probe order (memberlist resetNodes)."""
        now = self.rt.now()
        for nid in sorted(self.members):
            m = self.members[nid]
            if m.state in (DEAD, LEFT) and now - m.state_change > self.config.reap_time and nid != self.id:
                self._unindex(m)
                del self.members[nid]
                self._count("reaped")
                self._emit("reap", m)
        order = list(self._live_ids)
        self._rng.shuffle(order)
        self._probe_order = order
        self._probe_index = 0

    def _probe_timed_out(self, p: _Probe) -> None:
        if not self.running or p.acked or self._probe is not p:
            return
        c = self.config
        helpers = self._sample(c.indirect_checks, exclude=p.target, alive_only=True)
        if c.lifeguard:
            p.expected_nacks = len(helpers)
        for h in helpers:
            self._count("ping_reqs")
            self._send(h, PingReq(seq=p.seq, target=p.target))

    def _conclude_probe(self) -> None:
        p, self._probe = self._probe, None
        if p is None:
            return
        self._pending_seqs.pop(p.seq, None)
        if p.timer is not None:
            p.timer.cancel()
        if p.acked:
            return
        if self.config.lifeguard:
            # Lifeguard: missing nacks mean *we* may be the problem
            if p.expected_nacks > 0:
                self.awareness.apply(max(0, p.expected_nacks - p.nacks))
            else:
                self.awareness.apply(1)
        m = self.members.get(p.target)
        if m is None or m.state not in (ALIVE, SUSPECT):
            return
        self._count("probe_failures")
        self._on_suspect(Suspect(node=p.target, incarnation=m.incarnation, source=self.id))

    def _on_ping(self, src: str, msg: SwimPing) -> None:
        if msg.target != self.id:
            self._count("misdirected_pings")
            return
        self._apply_all(msg.gossip)
        self._send(src, SwimAck(seq=msg.seq, gossip=self._piggyback()))

    def _on_ack(self, src: str, msg: SwimAck) -> None:
        self._apply_all(msg.gossip)
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            if relay.timer is not None:
                relay.timer.cancel()
            self._send(relay.requester, SwimAck(seq=relay.seq, gossip=()))
            return
        p = self._pending_seqs.get(msg.seq)
        if p is None or p.acked:
            return
        p.acked = True
        if p.timer is not None:
            p.timer.cancel()
        if self.config.lifeguard:
            self.awareness.apply(-1)

    def _on_ping_req(self, src: str, msg: PingReq) -> None:
        if msg.target == self.id:
            self._send(src, SwimAck(seq=msg.seq, gossip=()))
            return
        seq = self._next_seq()
        relay = _Relay(src, msg.seq)
        self._relays[seq] = relay
        self._send(msg.target, SwimPing(seq=seq, target=msg.target, gossip=self._piggyback()))
        c = self.config

        def expire() -> None:
            if self._relays.pop(seq, None) is relay and c.lifeguard:
                self._send(src, Nack(seq=msg.seq))

        # nack after 80% of the probe timeout, so it reaches the asker before the asker concludes
        # the probe at the end of its interval (memberlist net.go handleIndirectPing waits the
        # full ProbeTimeout, which with the LAN defaults lands on that deadline)
        relay.timer = self.rt.call_later(c.probe_timeout * 0.8, expire)

    def _on_nack(self, msg: Nack) -> None:
        p = self._pending_seqs.get(msg.seq)
        if p is not None:
            p.nacks += 1

    # --- dissemination (SWIM §4.1) -----------------------------------------------------------

    def _piggyback(self) -> tuple[Update, ...]:
        if not len(self.broadcasts):
            return ()
        limit = retransmit_limit(self.config.retransmit_mult, max(1, self.num_live()))
        return tuple(self.broadcasts.take(self.config.max_piggyback, limit))

    def _sample(self, count: int, exclude: str | None = None, alive_only: bool = False) -> list[str]:
        """Up to ``count`` distinct random live members (rejection sampling: O(count))."""
        pool = self._live_ids
        out: list[str] = []
        if not pool or count <= 0:
            return out
        rnd = self.rt.random
        if len(pool) <= 4 * count + 8:
            # small pool: draw exactly, so we never fall short of available members
            cands = [n for n in pool if n != exclude and (not alive_only or self.members[n].state == ALIVE)]
            return rnd.sample(cands, min(count, len(cands)))
        tries = 0
        while len(out) < count and tries < 4 * count + 8:
            tries += 1
            nid = pool[rnd.randrange(len(pool))]
            if nid == exclude or nid in out or (alive_only and self.members[nid].state != ALIVE):
                continue
            out.append(nid)
        return out

    def _gossip_targets(self, count: int) -> list[str]:
        """Up to ``count`` random members: live ones, and ones dead for less than
        gossip_to_the_dead_time (so they can learn they were declared dead and refute)."""
        live = self._live_ids
        recent: list[str] = []
        if self._dead_ids:
            now = self.rt.now()
            window = self.config.gossip_to_the_dead_time
            recent = [n for n in self._dead_ids if now - self.members[n].state_change < window]
        total = len(live) + len(recent)
        want = min(count, total)
        out: list[str] = []
        rnd = self.rt.random
        tries = 0
        while len(out) < want and tries < 4 * count + 8:
            tries += 1
            i = rnd.randrange(total)
            nid = live[i] if i < len(live) else recent[i - len(live)]
            if nid not in out:
                out.append(nid)
        return out

    def _gossip_tick(self) -> None:
        if not self.running:
            return
        self._after("gossip", self.config.gossip_interval, self._gossip_tick)
        if not len(self.broadcasts):
            return
        for nid in self._gossip_targets(self.config.gossip_nodes):
            updates = self._piggyback()
            if not updates:
                break
            self._send(nid, Gossip(updates=updates))

    # --- anti-entropy and joining ------------------------------------------------------------

    def _local_state(self) -> tuple[MemberState, ...]:
        # Full state is O(N) to build and push-pull asks for it often in big clusters; it is
        # cached until something about a member changes (every change goes through _emit,
        # _bump_incarnation or _on_alive, which drop the cache).
        if self._state_cache is None:
            self._state_cache = tuple(self.members[k].to_state() for k in sorted(self.members))
        return self._state_cache

    def _push_pull_tick(self) -> None:
        if not self.running:
            return
        c = self.config
        self._after("push_pull", push_pull_scale(c.push_pull_interval, self.num_live()), self._push_pull_tick)
        # alive members, and dead ones not yet reaped (reconnect across a healed partition)
        total = len(self._live_ids) + len(self._dead_ids)
        if not total:
            return
        i = self._rng.randrange(total)
        target = self._live_ids[i] if i < len(self._live_ids) else self._dead_ids[i - len(self._live_ids)]
        self._count("push_pulls")
        self._send(target, PushPull(join=False, reply=False, members=self._local_state()))

    def _on_push_pull(self, src: str, msg: PushPull) -> None:
        if msg.reply:
            self._merge_remote(msg.members)
            if not self.joined:
                self._joined()
            return
        # answer with our state as it was *before* the merge, so the sender sees its own stale
        # entry (and refutes it), then merge; the merge teaches us the sender's address
        state = self._local_state()
        self._merge_remote(msg.members)
        dst = src
        if msg.join:
            # answer a joiner at the address it advertises: we may hold an older address for it
            # (it restarted elsewhere and we still hold it dead), and its reply must reach it
            own = next((m for m in msg.members if m.node == src), None)
            if own is not None and own.peer_addr:
                dst = "@" + own.peer_addr
        self._send(dst, PushPull(join=False, reply=True, members=state))

    def _merge_remote(self, members: Iterable[MemberState]) -> None:
        """memberlist mergeRemoteState: a remote 'dead' is only a suspicion for us."""
        known = self.members
        for s in members:
            if s.state == ALIVE:
                m = known.get(s.node)
                if m is not None and s.incarnation <= m.incarnation:
                    continue  # cannot override anything we hold (the common case): skip cheaply
                self._on_alive(Alive(node=s.node, incarnation=s.incarnation, addr=s.addr,
                                     peer_addr=s.peer_addr, slots=s.slots, epoch=s.epoch))
            elif s.node not in self.members:
                self._learn_absent(s)
            elif s.state == LEFT:
                self._on_dead(Dead(node=s.node, incarnation=s.incarnation, source=s.node))
            elif s.state in (SUSPECT, DEAD):
                self._on_suspect(Suspect(node=s.node, incarnation=s.incarnation, source=self.id))

    def _learn_absent(self, s: MemberState) -> None:
        """A member we never heard of, reported not alive. memberlist ignores these; we keep
        the ones that own slots, straight in their dead (or left) state, because the slot map
        must know who owns what even when the owner is down ("owner down", not "unassigned")."""
        if s.node == self.id or not s.slots:
            return
        state = LEFT if s.state == LEFT else DEAD
        self._add(Member(s.node, s.addr, s.peer_addr, s.incarnation, state, self.rt.now(), s.slots, s.epoch))

    def _start_join_round(self) -> None:
        order = list(self.seeds)
        self._rng.shuffle(order)
        self._join_queue = order
        self._try_next_seed()

    def _try_next_seed(self) -> None:
        if not self.running or self.joined:
            return
        if not self._join_queue:
            # every seed failed: back off, then start over
            c = self.config
            delay = min(c.join_backoff_max, c.join_backoff_min * (2 ** self._join_round))
            delay *= self._rng.uniform(0.5, 1.0)
            self._join_round += 1
            self._count("join_rounds_failed")
            self._join_timer = self.rt.call_later(delay, self._start_join_round)
            return
        seed = self._join_queue.pop(0)
        self._count("join_attempts")
        self._send(seed, PushPull(join=True, reply=False, members=self._local_state()))
        self._join_timer = self.rt.call_later(self.config.join_timeout, self._try_next_seed)

    def _joined(self) -> None:
        self.joined = True
        if self._join_timer is not None:
            self._join_timer.cancel()
        self._count("joins")

    # --- events ------------------------------------------------------------------------------

    def _emit(self, event: str, m: Member) -> None:
        self._state_cache = None
        for fn in self.listeners:
            fn(event, m.node, m)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
