"""The simple health check: ping every configured peer, measure RTT, mark it up or down.

Theory of operation
-------------------
Every ``ping_interval`` the node sends :class:`~kvcore.messages.Ping` to each configured peer
(sorted by id, so the order is deterministic). A :class:`~kvcore.messages.Pong` echoes the
sender's timestamp, which gives the round-trip time without trusting the peer's clock; the
smoothed RTT is TCP's SRTT (RFC 6298: alpha = 1/8).

A peer is ``reachable`` once it has answered and for ``down_after`` seconds after its last
answer; after that it is ``unreachable`` and requests for its slots fail fast with "owner down"
instead of waiting for the forward timeout. A peer never heard from is ``unknown`` and is treated
as reachable, so a cluster that just started does not refuse requests.

This is the placeholder that SWIM gossip membership replaces: it knows only the static peer list
and never removes anyone.
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN = "unknown"
REACHABLE = "reachable"
UNREACHABLE = "unreachable"


@dataclass
class PeerHealth:
    peer_id: str
    last_pong: float | None = None
    last_ping_sent: float | None = None
    rtt: float | None = None  # last sample
    srtt: float | None = None  # smoothed
    pings_sent: int = 0
    pongs_received: int = 0
    #: the state the last evaluation found, to report transitions
    state: str = UNKNOWN

    def observe_pong(self, now: float, sent_at: float) -> None:
        self.last_pong = now
        self.pongs_received += 1
        sample = max(0.0, now - sent_at)
        self.rtt = sample
        self.srtt = sample if self.srtt is None else self.srtt + (sample - self.srtt) / 8

    def evaluate(self, now: float, down_after: float) -> str:
        if self.last_pong is None:
            # never answered: unreachable once we have been asking for down_after seconds
            if self.last_ping_sent is not None and self.first_ping_age(now) >= down_after:
                return UNREACHABLE
            return UNKNOWN
        return REACHABLE if now - self.last_pong <= down_after else UNREACHABLE

    # the time we started asking, for peers that never answered
    first_ping_at: float | None = None

    def first_ping_age(self, now: float) -> float:
        return 0.0 if self.first_ping_at is None else now - self.first_ping_at
