"""How a real node runs kvcore's gossip membership: settings, links that follow it, probe RTTs.

Theory of operation
-------------------
The SWIM + Lifeguard protocol itself lives in :mod:`kvcore.membership`; this module is the glue
a real process needs around it, and nothing more.

**Settings.** ``[swim]`` in the node's TOML file picks a preset of
:class:`kvcore.membership.SwimConfig` (memberlist's three: ``lan``, the default; ``wan``;
``local`` for loopback and tests) and overrides any of its fields by name
(:func:`realnet.settings.swim_table`, also importable here as ``swim_from_dict``). Unknown names
and wrong types are reported as sentences, like every other configuration problem, and the
resulting config is validated (``SwimConfig.validate``)::

    [swim]
    preset = "local"
    probe_interval = 0.2
    suspicion_mult = 2

**Links follow membership** (:func:`follow_membership`). The transport resolves a member's id to
its peer address through the membership on every send, so a member that comes back on another
port is dialled at its new address. A member that *left* gracefully is not talked to again
(SWIM sends nothing to left members), so its outbound link is closed at once; a member that was
*reaped* (dead long enough to be forgotten) likewise. A member that is merely *dead* keeps its
link: SWIM still gossips to the recently dead (so a false positive can refute) and tries them
in push-pull (to re-merge after a partition). Such a link costs at most one connection attempt
per send the membership makes, since the transport only redials when there is something to send
(:mod:`realnet.transport`), and links idle for long are closed there as well.

**Probe RTTs** (:class:`RttMeter`). SWIM's SwimPing/SwimAck pairs are the cheapest RTT samples
there are: the meter notes when a SwimPing with a given ``seq`` left for a member and, when a
SwimAck with that ``seq`` comes back *from the same member* (a relayed indirect ack comes from
the helper and is not a sample), feeds the elapsed time into a smoothed RTT (TCP's SRTT,
RFC 6298: ``srtt = 7/8 srtt + 1/8 sample``). It watches the transport's frames
(:func:`observe_probes`); kvcore is not involved.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kvcore.membership import Member, MemberEvent, Membership
from kvcore.messages import SwimAck, SwimPing
from realnet.settings import DEFAULT_PRESET, PRESETS, swim_table
from realnet.transport import PeerTransport

# [swim] is read with every other table in realnet.settings; the old names stay importable here.
swim_from_dict = swim_table


class RttMeter:
    """Smoothed round-trip times to members, from SwimPing/SwimAck pairs (module docstring)."""

    #: SRTT gain (RFC 6298's alpha)
    ALPHA = 0.125

    def __init__(self, clock: Callable[[], float], max_pending: int = 4096) -> None:
        self.clock = clock
        self.max_pending = max_pending
        #: seq -> (member probed, when the ping left); oldest first, bounded
        self._pending: OrderedDict[int, tuple[str, float]] = OrderedDict()
        #: member -> smoothed RTT in seconds
        self.srtt: dict[str, float] = {}
        self.samples = 0

    def sent(self, dst: str, msg: Any) -> None:
        if type(msg) is not SwimPing:
            return
        pending = self._pending
        pending[msg.seq] = (dst, self.clock())
        if len(pending) > self.max_pending:  # pings never answered
            pending.popitem(last=False)

    def received(self, src: str, msg: Any) -> None:
        if type(msg) is not SwimAck:
            return
        p = self._pending.pop(msg.seq, None)
        if p is None or p[0] != src:
            return  # unknown seq, or an indirect ack relayed by a helper: no sample
        sample = max(0.0, self.clock() - p[1])
        old = self.srtt.get(src)
        self.srtt[src] = sample if old is None else old + self.ALPHA * (sample - old)
        self.samples += 1

    def forget(self, member: str) -> None:
        self.srtt.pop(member, None)


def observe_probes(transport: PeerTransport, meter: RttMeter) -> None:
    """Show the transport's SwimPings sent and SwimAcks received to ``meter``."""
    transport.send_observers["SwimPing"] = meter.sent
    transport.receive_observers["SwimAck"] = meter.received


def follow_membership(membership: Membership, forget: Callable[[str], None]) -> None:
    """Call ``forget(member id)`` when a member leaves or is reaped (module docstring)."""

    def on_event(event: MemberEvent, node_id: str, m: Member) -> None:
        if node_id == membership.id:
            return
        if event in (MemberEvent.LEFT, MemberEvent.REAP):
            forget(node_id)

    membership.listeners.append(on_event)


__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "RttMeter",
    "follow_membership",
    "observe_probes",
    "swim_from_dict",
]
