"""How a real node runs kvcore's gossip membership: settings, links that follow it, probe RTTs.

Theory of operation
-------------------
The SWIM + Lifeguard protocol itself lives in :mod:`kvcore.membership`; this module is the glue
a real process needs around it, and nothing more.

**Settings.** ``[swim]`` in the node's TOML file picks a preset of
:class:`kvcore.membership.SwimConfig` (memberlist's three: ``lan``, the default; ``wan``;
``local`` for loopback and tests) and overrides any of its fields by name
(:func:`swim_from_dict`). Unknown names and wrong types are reported as sentences, like every
other configuration problem, and the resulting config is validated (``SwimConfig.validate``)::

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

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from kvcore.config import ConfigError
from kvcore.membership import Member, MemberEvent, Membership, SwimConfig
from kvcore.messages import SwimAck, SwimPing
from realnet.transport import PeerTransport

#: preset name -> constructor taking field overrides
PRESETS: dict[str, Callable[..., SwimConfig]] = {
    "lan": SwimConfig.lan,
    "wan": SwimConfig.wan,
    "local": SwimConfig.local,
}
DEFAULT_PRESET = "lan"


def swim_from_dict(table: Mapping[str, Any], preset: str | None = None) -> tuple[str, SwimConfig]:
    """Build a SwimConfig from a ``[swim]`` table; ``preset`` (a flag) overrides its ``preset``.

    Returns (preset name, config). Raises ConfigError with one sentence per problem.
    """
    problems: list[str] = []
    name = preset if preset is not None else table.get("preset", DEFAULT_PRESET)
    if not isinstance(name, str) or name not in PRESETS:
        problems.append(f"The SWIM preset must be one of {', '.join(PRESETS)}, not {name!r}.")
        name = DEFAULT_PRESET
    fields = {f.name: f for f in dataclasses.fields(SwimConfig)}
    overrides: dict[str, Any] = {}
    for key, value in table.items():
        if key == "preset":
            continue
        f = fields.get(key)
        if f is None:
            problems.append(
                f"Unknown SWIM setting {key!r} in [swim]; known: preset, {', '.join(sorted(fields))}."
            )
            continue
        # the dataclass is declared under `from __future__ import annotations`: types are names
        want = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if want == "bool":
            ok = isinstance(value, bool)
        elif want == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:  # float: an integer is a fine number of seconds
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        if not ok:
            article = "an" if want == "int" else "a"
            problems.append(f"SWIM setting {key!r} must be {article} {want}, not {value!r}.")
            continue
        overrides[key] = value
    if problems:
        raise ConfigError(problems)
    config = PRESETS[name](**overrides)
    try:
        config.validate()
    except ConfigError as e:
        raise ConfigError([f"[swim]: {p}" for p in e.problems]) from None
    return name, config


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
