"""The peer transport's knobs and counters: :class:`TransportConfig` and :class:`TransportStats`.

Theory of operation
-------------------
Plain data, shared by the transport's three parts (:mod:`realnet.transport`, the façade;
:mod:`realnet.outbound`, the links we dial; :mod:`realnet.inbound`, the connections peers open
to us). The config is frozen and read on every use; the stats are counters the parts increment
and :meth:`TransportStats.as_dict` serves in ``/cluster/info`` and ``/metrics``. Every dropped
message is counted by reason (``dropped``), every inbound connection closed for bad input by
reason (``frames_malformed``), every link closed and forgotten by reason (``links_closed``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class TransportConfig:
    """Knobs of the peer transport. Times in seconds, sizes in bytes."""

    #: Largest frame accepted or sent (the node's ``max_frame_bytes``).
    max_frame_bytes: int = 4 * 1024 * 1024
    #: Messages held per peer while its connection is being set up; more are dropped.
    queue_limit: int = 1024
    #: First reconnect delay after a failure; doubles per consecutive failure...
    backoff_min: float = 0.05
    #: ...up to this. Two seconds: a restarted peer is found again within a couple of pings.
    backoff_max: float = 2.0
    #: A connection that lived this long counts as healthy and resets the backoff delay.
    stable_after: float = 1.0
    #: A connection attempt that takes longer fails (an unroutable address never answers SYN).
    connect_timeout: float = 2.0
    #: An inbound connection that has not sent Hello by then is closed.
    hello_timeout: float = 5.0
    #: Outbound write buffer above which messages are dropped (the peer is not reading).
    write_high_water: int = 16 * 1024 * 1024
    #: A link writes the frames of one loop turn together, in one syscall, when the turn ends;
    #: but once this many wait it writes them at once, and then again each time twice as many as
    #: the last write wait (8, 16, 32, ...). Under load the peer starts on the first frames
    #: while this node is still working through its turn, instead of the two nodes taking
    #: turns with whole batches (forwarded requests, ``benchmarks/http_throughput.py``: 10-25 %
    #: more per second than whole-turn batches; two or four paid more in syscalls than they
    #: gained); the doubling keeps a long burst (a thousand frames in one turn) to a handful
    #: of writes.
    early_write_frames: int = 8
    #: At most this many inbound connections at once; more are closed on accept.
    max_inbound: int = 1024
    #: At most this many inbound connections that have not completed their Hello (and
    #: handshake); a new one closes the oldest of them, so that connections that never
    #: authenticate cannot keep a new member out.
    max_inbound_pending: int = 64
    #: An inbound connection that sent nothing for this long is closed (a peer that said Hello
    #: and went quiet). Longer than ``idle_timeout``, after which a well-behaved sender closes
    #: an unused link itself; SWIM keeps every live member's link busy.
    inbound_idle_timeout: float = 120.0
    #: An outbound link whose sent data stays unacknowledged this long is closed by the kernel
    #: (TCP_USER_TIMEOUT, plus keepalive probes when idle), so a peer whose machine vanished
    #: is reconnected within seconds instead of after TCP's 15-minute retransmission limit.
    user_timeout: float = 10.0
    #: A link nothing was sent on for this long is closed and forgotten (a seed address used
    #: to join, a member that died and was reaped); the next send opens a new one. Long enough
    #: that SWIM's traffic keeps every live member's link open in clusters of a few dozen.
    idle_timeout: float = 60.0


@dataclass
class TransportStats:
    """Counters of the transport (served in /cluster/info and /metrics)."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    inbound_accepted: int = 0
    inbound_rejected: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    handler_errors: int = 0
    #: outbound connections whose address answered in HTTP (an HTTP port given as a peer's)
    http_answers: int = 0
    #: messages not sent, by reason: queue_full, backoff, backpressure, unknown_peer, ...
    dropped: dict[str, int] = field(default_factory=dict)
    #: inbound connections closed for bad input, by reason: oversized, malformed, not_hello, ...
    frames_malformed: dict[str, int] = field(default_factory=dict)
    #: outbound links closed and forgotten, by reason: idle, forgotten, moved, rekeyed
    links_closed: dict[str, int] = field(default_factory=dict)
    #: outbound handshakes that failed, by reason: refused_by_peer, bad_proof, handshake, ...
    handshakes_failed: dict[str, int] = field(default_factory=dict)
    #: inbound connections closed for sending nothing for ``inbound_idle_timeout``
    inbound_idle_closed: int = 0
    #: messages sent back on a peer's own (inbound) connection, to a peer with no address known
    #: (it just joined: realnet.transport), and messages received back on our outbound links
    sent_back: int = 0
    received_back: int = 0
    #: times the keyring was read again (SIGHUP), and times that failed (old keys kept)
    keyring_reloads: int = 0
    keyring_reload_failures: int = 0

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def malformed(self, reason: str) -> None:
        self.frames_malformed[reason] = self.frames_malformed.get(reason, 0) + 1

    def handshake_failed(self, reason: str) -> None:
        self.handshakes_failed[reason] = self.handshakes_failed.get(reason, 0) + 1

    def link_closed(self, reason: str) -> None:
        self.links_closed[reason] = self.links_closed.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """Every counter, in field order; the by-reason counters sorted by reason."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = dict(sorted(v.items())) if isinstance(v, dict) else v
        return out


__all__ = ["TransportConfig", "TransportStats"]
