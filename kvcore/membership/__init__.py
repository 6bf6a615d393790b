"""Gossip membership: SWIM failure detection with the Lifeguard refinements, as memberlist runs it.

Theory of operation
-------------------
Every node keeps a list of members, each with a state (:class:`~kvcore.states.State`: alive /
suspect / dead / left) and an *incarnation* number that only the member itself raises.

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

**Failure detection** (SWIM §3.1; :mod:`.probe`): probe one member per probe interval, round
robin over a shuffled list; indirect probes through ``indirect_checks`` helpers when the direct
one times out; suspect the member if no ack came by the end of the interval. A suspicion becomes
``dead`` after the suspicion timeout unless the member refutes it (:mod:`.suspicion`).

**Lifeguard** (Dadgar et al. 2018, memberlist ``awareness.go``, ``suspicion.go``), switchable as
a whole with ``SwimConfig.lifeguard`` so the lab can show what it buys: local health awareness
(:mod:`.awareness`), Nacks and the buddy system (:mod:`.probe`), dynamic suspicion timeouts
(:mod:`.suspicion`, :func:`remaining_suspicion_time`).

**Dissemination** (SWIM §4.1): updates are queued in a :class:`BroadcastQueue` and piggybacked on
pings and acks, fewest-transmitted first, each sent at most ``retransmit_mult *
ceil(log10(N+1))`` times (:func:`retransmit_limit`); every gossip interval the queued updates
also go to ``gossip_nodes`` random members (alive, suspect, or dead for less than
``gossip_to_the_dead_time``).

**Anti-entropy and joining** (:mod:`.sync`): every push-pull interval (:func:`push_pull_scale`),
exchange full state with one random member, alive or dead-not-yet-reaped, which re-merges two
sides after a partition heals; joining is a push-pull to the seeds. Dead members are reaped after
``reap_time`` and are never probed.

**Slot ownership travels with membership**: every Alive carries the member's slot ranges and
their config epoch, so every node can derive the same slot map (the highest epoch wins per slot).
The owner of this package's events (the node) applies those claims.

The package, one concern per module
-----------------------------------
========================  ==========================================================================
:mod:`.config`            :class:`SwimConfig` and memberlist's LAN / WAN / local presets, with reasons
:mod:`.formulas`          the pure arithmetic: suspicion timeout, retransmit limit, Lifeguard's
                          dynamic suspicion, push-pull scale, the merge rules
:mod:`.awareness`         Lifeguard's local health score
:mod:`.broadcast`         the transmit-limited broadcast queue
:mod:`.member`            :class:`Member` and the :data:`Listener` signature
:mod:`.protocol`          :class:`Membership`: lifecycle, the message and update tables, merge
                          rules, dissemination, events
:mod:`.probe`             failure detection (a mixin of Membership)
:mod:`.suspicion`         suspicion timers (a mixin of Membership)
:mod:`.sync`              push-pull anti-entropy and joining (a mixin of Membership)
========================  ==========================================================================

Every name that ``kvcore.membership`` exported as a single module is re-exported here.
"""

from __future__ import annotations

from kvcore.membership.awareness import Awareness
from kvcore.membership.broadcast import BroadcastQueue, Update
from kvcore.membership.config import LOCAL, WAN, SwimConfig
from kvcore.membership.formulas import (
    overrides,
    push_pull_scale,
    remaining_suspicion_time,
    retransmit_limit,
    suspicion_timeout,
)
from kvcore.membership.member import ALIVE, DEAD, LEFT, SUSPECT, Listener, Member
from kvcore.membership.protocol import CLAIM_KEY, INCARNATION_KEY, LEFT_KEY, MEMBER_PREFIX, Membership
from kvcore.states import STATES, MemberEvent, State

__all__ = [
    "ALIVE",
    "CLAIM_KEY",
    "DEAD",
    "INCARNATION_KEY",
    "LEFT",
    "LEFT_KEY",
    "LOCAL",
    "MEMBER_PREFIX",
    "STATES",
    "SUSPECT",
    "WAN",
    "Awareness",
    "BroadcastQueue",
    "Listener",
    "Member",
    "MemberEvent",
    "Membership",
    "State",
    "SwimConfig",
    "Update",
    "overrides",
    "push_pull_scale",
    "remaining_suspicion_time",
    "retransmit_limit",
    "suspicion_timeout",
]
