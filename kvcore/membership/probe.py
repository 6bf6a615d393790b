"""Failure detection: SWIM's probes, direct and indirect, with Lifeguard's Nacks and buddy system.

Theory of operation
-------------------
SWIM §3.1 (memberlist ``probeNode``): every probe interval, probe the next member of a shuffled
round-robin list (SWIM §4.3: every member is probed within a bounded time; a new member goes to
a random place in the rest of the round). Send SwimPing; if no SwimAck arrives within the probe
timeout, ask ``indirect_checks`` random alive members to probe it for us (PingReq); if no ack,
direct or relayed, has come by the end of the interval, suspect it (``protocol``'s merge rules
and :mod:`~kvcore.membership.suspicion` take it from there). Each round reshuffles the list and
reaps members dead or left for longer than ``reap_time`` (memberlist ``resetNodes``).

Lifeguard's parts of probing (Dadgar et al. 2018, memberlist ``state.go``):

- a helper that gets no ack from the target answers the asker with a *Nack* after 0.8 of the
  probe timeout, so the asker can tell "the target is down" from "I hear nothing at all";
- a failed probe raises the local health score by the number of Nacks that did *not* come
  (or by 1 without helpers), a successful one lowers it (:mod:`~kvcore.membership.awareness`),
  and the score scales the probe interval and timeout;
- *buddy system*: a probe of a suspected member carries the Suspect first, so the member learns
  of the suspicion from the prober and can refute at once.

:class:`Probing` is that part of :class:`~kvcore.membership.Membership` (a mixin).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvcore.membership.member import SUSPECT, UP, Member
from kvcore.membership.table import LazyRound, MemberTable, SortedIds
from kvcore.messages import Nack, PingReq, Suspect, SwimAck, SwimPing
from kvcore.runtime import Runtime, TimerHandle
from kvcore.states import MemberEvent

if TYPE_CHECKING:
    import random

    from kvcore.membership.awareness import Awareness
    from kvcore.membership.broadcast import Update
    from kvcore.membership.config import SwimConfig


#: pools larger than this are walked lazily (LazyRound) rather than shuffled whole per round;
#: smaller ones keep random.shuffle, so runs of clusters up to this size are as they were
LAZY_ROUND_MIN = 1024


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


class Probing:
    """Probes of :class:`~kvcore.membership.Membership` (a mixin): SWIM §3.1, §4.3 + Lifeguard."""

    if TYPE_CHECKING:
        rt: Runtime
        config: SwimConfig
        id: str
        running: bool
        members: MemberTable
        awareness: Awareness
        _rng: random.Random
        _send: Callable[[str, Any], None]
        _seq: int
        _probe: _Probe | None
        _probe_order: list[str]
        _probe_index: int
        _lazy_round: LazyRound | None
        _pending_seqs: dict[int, _Probe]
        _relays: dict[int, _Relay]
        _live_ids: SortedIds
        _dead_ids: list[str]
        _left_ids: list[str]

        def _after(self, name: str, delay: float, fn: Callable[[], None]) -> None: ...
        def _count(self, name: str) -> None: ...
        def _emit(self, event: MemberEvent, m: Member) -> None: ...
        def _unindex(self, m: Member) -> None: ...
        def _piggyback(self) -> tuple[Update, ...]: ...
        def _apply_all(self, updates: Any, src: str | None = None) -> None: ...
        def _sample(self, count: int, exclude: str | None = None, alive_only: bool = False) -> list[str]: ...
        def _on_suspect(self, s: Suspect) -> None: ...

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
            lazy = self._lazy_round
            if lazy is not None:
                while (nid := lazy.next(self._rng)) is not None:
                    m = self.members.get(nid)
                    if m is not None and m.state in UP and nid != self.id:
                        return nid
            while self._probe_index < len(self._probe_order):
                nid = self._probe_order[self._probe_index]
                self._probe_index += 1
                m = self.members.get(nid)
                if m is not None and m.state in UP and nid != self.id:
                    return nid
            self._reset_probe_order()
        return None

    def _reset_probe_order(self) -> None:
        """Reap long-dead members and reshuffle the probe order (memberlist resetNodes).

        A pool of more than LAZY_ROUND_MIN members is not shuffled whole at the start of the
        round but walked in a :class:`~kvcore.membership.table.LazyRound` (the same uniform
        random order, drawn one probe at a time): a round then costs O(1) per probe, not O(n) at
        its start, and no node holds a list of n ids for it."""
        now = self.rt.now()
        # only members that are down can be reaped (self is in no pool)
        for nid in sorted([*self._dead_ids, *self._left_ids]):
            m = self.members[nid]
            if m.state not in UP and now - m.state_change > self.config.reap_time and nid != self.id:
                self._unindex(m)
                del self.members[nid]
                self._count("reaped")
                self._emit(MemberEvent.REAP, m)
        self._probe_index = 0
        if len(self._live_ids) > LAZY_ROUND_MIN:
            self._lazy_round = LazyRound(self._live_ids.snapshot())
            self._probe_order = []
            return
        self._lazy_round = None
        order = list(self._live_ids)
        self._rng.shuffle(order)
        self._probe_order = order

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
        if m is None or m.state not in UP:
            return
        self._count("probe_failures")
        self._on_suspect(Suspect(node=p.target, incarnation=m.incarnation, source=self.id))

    # --- the probe messages (Membership.HANDLERS routes them here) ---------------------------

    def _on_ping(self, src: str, msg: SwimPing) -> None:
        if msg.target != self.id:
            self._count("misdirected_pings")
            return
        self._apply_all(msg.gossip, src)
        self._send(src, SwimAck(seq=msg.seq, gossip=self._piggyback()))

    def _on_ack(self, src: str, msg: SwimAck) -> None:
        self._apply_all(msg.gossip, src)
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

    def _on_nack(self, src: str, msg: Nack) -> None:
        p = self._pending_seqs.get(msg.seq)
        if p is not None:
            p.nacks += 1


__all__ = ["Probing"]
