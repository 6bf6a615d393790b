"""SWIM + Lifeguard settings and memberlist's three presets, each value with its reason.

Theory of operation
-------------------
One frozen dataclass, :class:`SwimConfig`, holds every knob of the membership layer, documented
field by field in memberlist's ``config.go`` style: what the field means, its unit, and the
formula it feeds (the formulas themselves are in :mod:`kvcore.membership.formulas`). Times are
seconds. The defaults are memberlist's ``DefaultLANConfig``; :meth:`SwimConfig.wan` and
:meth:`SwimConfig.local` start from them and override a few fields (:data:`WAN`, :data:`LOCAL`),
each override with the reason memberlist gives for it. Keyword arguments to a preset override
the preset in turn, so ``SwimConfig.lan(probe_interval=0.5)`` is "LAN, but probe faster".

:meth:`SwimConfig.problems` lists every violated constraint as a full sentence, and
:meth:`SwimConfig.validate` raises :class:`~kvcore.config.ConfigError` with all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

#: memberlist DefaultWANConfig: what it changes from the LAN defaults, and why
WAN: MappingProxyType[str, Any] = MappingProxyType({
    # WAN round trips reach hundreds of ms; a 0.5 s ack deadline would suspect healthy members
    "probe_timeout": 3.0,
    # probes cost WAN bandwidth, and a WAN cluster tolerates slower failure detection
    "probe_interval": 5.0,
    # more patience before declaring dead: lossy long links drop more acks and refutations
    "suspicion_mult": 6,
    # full-state exchanges are expensive over long links: half as often
    "push_pull_interval": 60.0,
    # "gossip less frequently, but to an additional node" (memberlist)
    "gossip_interval": 0.5,
    "gossip_nodes": 4,
    # follows the push-pull interval, as on the LAN ("same as push/pull")
    "gossip_to_the_dead_time": 60.0,
})

#: memberlist DefaultLocalConfig (loopback): what it changes from the LAN defaults, and why
LOCAL: MappingProxyType[str, Any] = MappingProxyType({
    # loopback rarely loses a packet: one indirect helper is enough
    "indirect_checks": 1,
    # and one update needs fewer copies to reach everyone
    "retransmit_mult": 2,
    # faster failure detection: loopback loss is not congestion, a silent member is down
    "suspicion_mult": 3,
    # state is cheap to exchange locally: twice as often
    "push_pull_interval": 15.0,
    # loopback RTTs are microseconds: 0.2 s is already generous
    "probe_timeout": 0.2,
    "probe_interval": 1.0,
    # gossip twice as often: bandwidth is free locally
    "gossip_interval": 0.1,
    # follows the push-pull interval
    "gossip_to_the_dead_time": 15.0,
})


@dataclass(frozen=True, kw_only=True)
class SwimConfig:
    """SWIM + Lifeguard settings. Times in seconds. Defaults are memberlist's DefaultLANConfig."""

    #: Time between two probes sent by this node (memberlist ProbeInterval), in seconds. Each
    #: member is probed once per N intervals, round robin (SWIM §4.3), so detection takes at most
    #: about N intervals plus the suspicion timeout. Lifeguard scales it by the local health
    #: score + 1 (``Awareness.scale``). LAN: 1 s, memberlist's default.
    probe_interval: float = 1.0
    #: How long to wait for a direct ack before asking others (ProbeTimeout), in seconds. Should
    #: be around the 99th percentile of RTT, and must be well below probe_interval, or indirect
    #: probes have no time left. Helpers Nack after 0.8 of it. LAN: 0.5 s.
    probe_timeout: float = 0.5
    #: How many members to ask for an indirect probe when the direct one fails (IndirectChecks,
    #: SWIM §3.1's *k*). More helpers make a lost packet less likely to cause a false suspicion,
    #: at k pings and acks per failed probe. LAN: 3.
    indirect_checks: int = 3
    #: Suspicion timeout multiplier (SuspicionMult), dimensionless:
    #: ``min timeout = suspicion_mult * max(1, log10(N+1)) * probe_interval``
    #: (:func:`~kvcore.membership.formulas.suspicion_timeout`). Also the expected number of
    #: Lifeguard confirmations: ``k = suspicion_mult - 2``. LAN: 4, so 4 s below 10 members.
    suspicion_mult: int = 4
    #: Upper bound of Lifeguard's dynamic suspicion timeout, as a multiple of the minimum
    #: (SuspicionMaxTimeoutMult): ``max timeout = suspicion_max_timeout_mult * min timeout``; the
    #: timeout starts there and falls towards the minimum with each independent confirmation
    #: (:func:`~kvcore.membership.formulas.remaining_suspicion_time`). LAN: 6 ("for 10k nodes
    #: this will give a max timeout of 120 seconds", memberlist).
    suspicion_max_timeout_mult: int = 6
    #: Retransmissions of each update (RetransmitMult), dimensionless: an update is piggybacked
    #: at most ``retransmit_mult * ceil(log10(N+1))`` times
    #: (:func:`~kvcore.membership.formulas.retransmit_limit`; SWIM §4.1's lambda log N). LAN: 4.
    retransmit_mult: int = 4
    #: Time between gossip rounds (GossipInterval), in seconds: every round sends the queued
    #: updates to gossip_nodes random members. LAN: 0.2 s, so news spreads faster than probes.
    gossip_interval: float = 0.2
    #: Members sent the queued updates per gossip round (GossipNodes). LAN: 3.
    gossip_nodes: int = 3
    #: How long a dead member still receives gossip, in seconds, so it can learn it was
    #: declared dead and refute (GossipToTheDeadTime). LAN: 30 s, the push-pull interval.
    gossip_to_the_dead_time: float = 30.0
    #: Time between full-state exchanges with one random member (PushPullInterval), in seconds;
    #: stretched above 32 members by :func:`~kvcore.membership.formulas.push_pull_scale`.
    #: Anti-entropy: it repairs whatever gossip missed, and re-merges a healed partition. LAN:
    #: 30 s ("low frequency").
    push_pull_interval: float = 30.0
    #: Lifeguard's local health score bound (AwarenessMaxMultiplier): the score stays in
    #: ``[0, awareness_max_multiplier)`` and scales probe interval and timeout by score + 1.
    #: LAN: 8, so a node in poor health backs off to 8 s probes.
    awareness_max_multiplier: int = 8
    #: Lifeguard as a whole: awareness, Nacks, dynamic suspicion, buddy system. Off, this is
    #: plain SWIM with a fixed suspicion timeout, which the lab uses to show what Lifeguard buys.
    lifeguard: bool = True
    #: Most updates piggybacked on one message. memberlist fits them into a 1400-byte UDP
    #: packet; ours are about 60-90 bytes each, so 16 stay near that size.
    max_piggyback: int = 16
    #: Dead and left members are forgotten after this long, in seconds (memberlist's reaping
    #: is Serf's reconnect timeout); they are never probed, but push-pull still draws them, so a
    #: healed partition re-merges within it. 300 s.
    reap_time: float = 300.0
    #: How long to wait for a seed's answer to a join PushPull before trying the next seed, in
    #: seconds.
    join_timeout: float = 1.0
    #: Backoff between rounds over all seeds, in seconds: ``min(max, min * 2**round)``, times
    #: a jitter in [0.5, 1) so that nodes started together do not retry together.
    join_backoff_min: float = 0.5
    join_backoff_max: float = 8.0

    @classmethod
    def lan(cls, **overrides: Any) -> SwimConfig:
        """memberlist's DefaultLANConfig: a LAN's RTTs, 1 s probes (the field defaults)."""
        return cls(**overrides)

    @classmethod
    def wan(cls, **overrides: Any) -> SwimConfig:
        """memberlist's DefaultWANConfig: slower probes and more patience over long links (:data:`WAN`)."""
        return cls(**{**WAN, **overrides})

    @classmethod
    def local(cls, **overrides: Any) -> SwimConfig:
        """memberlist's DefaultLocalConfig: loopback, so faster and less redundant (:data:`LOCAL`)."""
        return cls(**{**LOCAL, **overrides})

    def problems(self) -> list[str]:
        """Every violated constraint, one sentence each (empty: valid)."""
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
        """Self, or :class:`~kvcore.config.ConfigError` listing every problem."""
        # imported late (as it always was), so kvcore.config may come to import this module
        # (a shared table validator) without an import cycle
        from kvcore.config import ConfigError

        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self


__all__ = ["LOCAL", "WAN", "SwimConfig"]
