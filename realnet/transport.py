"""The peer transport: length-prefixed msgpack frames over TCP between nodes.

Theory of operation
-------------------
Each node listens on its *peer port* and keeps **one outbound connection per destination**, used
in one direction only: a node writes its messages on its own outbound connection and reads its
peers' messages on the connections they opened to it (Redis Cluster's bus works the same way:
every node has an outbound and an inbound link to every other node). So ``send(dst, msg)`` needs
no request/response matching and a reply simply travels on the other link.

Frames are :func:`kvwire.frame`: a 4-byte big-endian length and the msgpack of
:func:`kvcore.codec.encode`. The first frame on every connection is
:class:`kvcore.messages.Hello` naming the sender, so the receiver knows who speaks; every later
frame goes to ``node.on_message(src, msg)`` with that name.

**Destinations.** A destination is a node id or ``"@HOST:PORT"``:

- a node id is resolved to a peer address on every send, first through ``resolve`` (the node's
  gossip membership: ``membership.address_of``), then through the static ``peers`` map (the
  ``[cluster]`` configuration). A member that comes back at another address is dialled there:
  the old link is closed and a new one opened. An id with no address is dropped
  (``unknown_peer``), an address that is not ``HOST:PORT`` too (``bad_address``).
- ``"@HOST:PORT"`` means "whoever listens there": how a joining node reaches a seed whose id it
  does not know yet. It has a link of its own, keyed by that string. The seed's real id arrives
  in the Hello on the seed's own link to us; it can open that link because the join PushPull we
  sent carries our own peer address, which the seed merges before it replies.

Outbound link, per destination (a small state machine, :class:`PeerLink`)::

    idle --send--> connecting --connected--> connected --lost--> backoff
                     ^   |                                          ^  |
                     |   +------------- failed / timed out ---------+  |
                     +-- timer expired (with demand), or the peer said Hello
                                                                        |
    idle <----------- timer expired, nothing asked for the peer --------+

- *idle*: before the first send; the first send starts a connection attempt (links to the
  static peers are also opened at start, so a static cluster is wired before the first request).
- *connecting*: messages wait in a bounded queue (``queue_limit``, 1024); beyond it they are
  dropped. The queue is flushed right after the Hello once the connection is up.
- *connected*: messages are written with ``transport.write``; asyncio's write buffer batches
  them into few syscalls. If the peer stops reading and the buffer passes ``write_high_water``
  (asyncio calls ``pause_writing``), messages are dropped until it drains: memory stays bounded.
  The socket gets TCP_USER_TIMEOUT and keepalive (``user_timeout``), so a peer whose machine
  vanished without a FIN or RST is noticed in seconds, not after TCP's 15-minute retry limit.
- *backoff*: after a failed attempt or a lost connection, messages are dropped (fire-and-forget,
  DESIGN.md: "a failed connection drops the message") until a jittered timer expires. The delay
  doubles from ``backoff_min`` (0.05 s) to ``backoff_max`` (2 s) on consecutive failures, with
  "equal jitter" (half fixed, half random from the runtime's ``random``, as in AWS's backoff
  note) so that nodes restarted together do not reconnect in lockstep. A connection that stayed
  up for ``stable_after`` seconds resets the delay. When the timer expires the link reconnects
  at once **if there is demand**: a connection that had been up for ``stable_after`` was lost,
  or something was sent (and dropped) during the backoff. Otherwise it goes back to *idle* and
  the next send dials (a peer that drops us right after our Hello is not redialled in a loop).
  So a member that died costs one connection attempt per message the membership still sends it
  (SWIM gossips to the recently dead and tries them in push-pull), not an endless redial loop.
  A Hello arriving from that peer on its own link proves it is listening again, so it also ends
  the backoff early: nodes started one after another wire up as soon as the last one is up.

**Links do not outlive their use.** A link nothing was sent on for ``idle_timeout`` (60 s) is
closed and forgotten by a periodic sweep (a seed's ``"@HOST:PORT"`` link after the join, a
member that was reaped, a member that moved); the next send opens a new one. :meth:`forget`
closes a link at once (the node calls it when membership says a member left or was reaped).

Every dropped message is counted by reason (``dropped``). Membership, not the transport,
decides that a peer is down; the transport only moves bytes.

**Inbound connections are never trusted.** A frame that is oversized or not decodable
(:class:`kvwire.FrameError`), a first frame that is not a Hello, a Hello with an empty id
or with *this* node's id (a seed address that points back at ourselves, or two nodes sharing an
id), a Hello naming another cluster, a second Hello, or no Hello within ``hello_timeout`` closes
that connection, logs the reason and counts it in ``frames_malformed[reason]``; the node keeps
running. Exceptions raised by the node while handling a message are logged and counted
(``handler_errors``), never propagated into asyncio.

**Wrong ports are named, not suffered.** The HTTP port and the peer port are easy to mix up
(both are ``HOST:PORT``). Two cases are recognised by their first bytes:

- *We dialled an HTTP server* (``--seeds`` or ``/cluster/meet`` given a node's HTTP port, or a
  member advertising one). An outbound link is one-way, so the peer never writes on it; an
  answer starting ``HTTP/`` (a node's HTTP server refuses our frames at once: a request cannot
  start with a zero byte) means the address is an HTTP port. The link drops the connection and
  logs a warning naming the address and, for a seed, the peer port it probably meant (HTTP port
  + 10000); once per address per ``HTTP_WARN_EVERY`` (5 minutes), since a join retries.
  Counted in ``http_answers``.
- *An HTTP client dialled us* (``storelab --node`` or curl given a peer port). The first bytes of
  an inbound connection that spell an HTTP method and a space (``GET ``: read as a frame length
  that would be 1195725856 bytes; every real frame starts with a zero byte) get one HTTP/1.1
  ``400`` answer, ``{"error": "wrong_port", "message": "This is node X's peer port; its HTTP API
  is on HOST:PORT."}`` with ``Connection: close``, and a lingering close. Logged at info (this
  node is fine and the client is told) and counted in ``frames_malformed["http_request"]``.

*Unknown node ids are accepted*: with gossip membership, members the static configuration never
named join all the time, and a new member's first messages may arrive before anyone told us
about it. What is left of "who may talk to us" is the cluster name: a Hello naming a different
non-empty cluster is refused (``cluster_mismatch``), which keeps two clusters sharing a network
from merging by mistake. It is not authentication: anyone who can reach the peer port can join,
as with Redis Cluster's bus and memberlist without its ``SecretKey``. Bind the peer port to a
private network (the default is 127.0.0.1). Resource use by a hostile or confused peer stays
bounded: ``max_inbound`` connections, ``max_frame_bytes`` per frame, and links that are swept.

Bytes are counted per message kind in the node's :class:`kvcore.metrics.NodeStats`
(``add_bytes_sent`` when a frame is handed to the socket, ``add_bytes_received`` when a frame is
decoded), Hello frames included.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kvwire
from kvcore.config import PEER_PORT_OFFSET, parse_addr
from kvcore.messages import Hello, kind_of
from kvcore.metrics import NodeStats

log = logging.getLogger("realnet.transport")

IDLE = "idle"
CONNECTING = "connecting"
CONNECTED = "connected"
BACKOFF = "backoff"
CLOSED = "closed"

OnMessage = Callable[[str, Any], None]
#: node id -> its peer address ("HOST:PORT"), or None when unknown
Resolve = Callable[[str], str | None]
#: consecutive connection failures after which a link logs a warning (about 1.5 s of backoff)
WARN_AFTER_FAILURES = 5
#: an address that answered in HTTP is warned about at most once per this many seconds
HTTP_WARN_EVERY = 300.0
#: how an HTTP request line starts; a peer frame never does (as a length prefix, the smallest of
#: these is 0x44454C45 = 1.1 GiB, far above any max_frame_bytes)
HTTP_METHODS = (
    b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"TRACE ",
    b"CONNECT ",
)


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
    #: At most this many inbound connections at once; more are closed on accept.
    max_inbound: int = 1024
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
    #: outbound links closed and forgotten, by reason: idle, forgotten, moved
    links_closed: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def malformed(self, reason: str) -> None:
        self.frames_malformed[reason] = self.frames_malformed.get(reason, 0) + 1

    def link_closed(self, reason: str) -> None:
        self.links_closed[reason] = self.links_closed.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "disconnects": self.disconnects,
            "inbound_accepted": self.inbound_accepted,
            "inbound_rejected": self.inbound_rejected,
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "handler_errors": self.handler_errors,
            "http_answers": self.http_answers,
            "dropped": dict(sorted(self.dropped.items())),
            "frames_malformed": dict(sorted(self.frames_malformed.items())),
            "links_closed": dict(sorted(self.links_closed.items())),
        }


class _OutboundProtocol(asyncio.Protocol):
    """The protocol object of one outbound connection attempt; reports to its link."""

    def __init__(self, link: PeerLink, gen: int) -> None:
        self.link = link
        self.gen = gen
        #: the first bytes the peer wrote (None once five were seen)
        self.head: bytes | None = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.link._on_made(self, transport)

    def data_received(self, data: bytes) -> None:
        # Outbound links are one-way; a peer has no business writing here. Ignore it rather
        # than buffer it, except for its first bytes: ``HTTP/`` means we dialled an HTTP server
        # (a node's HTTP port given as a seed), which the user must hear about.
        head = self.head
        if head is None:
            return
        head += data[: 5 - len(head)]
        if len(head) < 5:
            self.head = head
            return
        self.head = None
        if head == b"HTTP/":
            self.link._answered_in_http(self)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._on_lost(self, exc)

    def pause_writing(self) -> None:
        self.link.paused = True

    def resume_writing(self) -> None:
        self.link.paused = False


class PeerLink:
    """The outbound connection to one peer (see the state machine in the module docstring)."""

    def __init__(
        self, owner: PeerTransport, peer_id: str, host: str, port: int, addr: str | None = None
    ) -> None:
        self.owner = owner
        #: the destination: a node id, or "@HOST:PORT"
        self.peer_id = peer_id
        self.host = host
        self.port = port
        #: the address as the resolver spells it (compared on every send to notice a move)
        self.addr = addr if addr is not None else _fmt_addr(host, port)
        self.state = IDLE
        #: when a message was last given to this link (the idle sweep reads it)
        self.last_used = owner.loop.time()
        #: reconnect when the backoff timer expires (see the module docstring)
        self.demand = False
        self.queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.delay = owner.config.backoff_min
        self.failures = 0  # consecutive
        self.connected_at: float | None = None
        self.last_error = ""
        #: the current connection was answered in HTTP (an HTTP port, not a peer port)
        self.http_answer = False
        self._gen = 0
        #: frames written this loop turn, flushed together by _flush
        self._out: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # --- sending -----------------------------------------------------------------------

    def send(self, kind: str, data: bytes) -> None:
        self.last_used = self.owner.loop.time()
        state = self.state
        if state == CONNECTED:
            if self.paused:
                self.owner.stats.drop("backpressure")
                return
            self._write(kind, data)
        elif state == CONNECTING:
            if len(self.queue) >= self.owner.config.queue_limit:
                self.owner.stats.drop("queue_full")
                return
            self.queue.append((kind, data))
        elif state == IDLE:
            self.queue.append((kind, data))
            self.connect()
        elif state == BACKOFF:
            self.demand = True
            self.owner.stats.drop("backoff")
        else:
            self.owner.stats.drop("closed")

    def _write(self, kind: str, data: bytes) -> None:
        # Frames written in one turn of the event loop leave in one syscall: the first one
        # schedules a flush for the end of the turn, the others join it. Under load (many
        # client requests forwarded per turn) this divides the sends per message; idle, it
        # delays a frame by one loop turn only.
        out = self._out
        out.append(data)
        if len(out) == 1:
            self.owner.loop.call_soon(self._flush)
        n = len(data)
        st = self.owner.stats
        st.frames_sent += 1
        st.bytes_sent += n
        self.owner.node_stats.add_bytes_sent(kind, n)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    # --- connecting --------------------------------------------------------------------

    def connect(self) -> None:
        """Start a connection attempt unless one is running or the link is closed."""
        if self.state in (CONNECTING, CONNECTED, CLOSED):
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.state = CONNECTING
        self._gen += 1
        self._task = self.owner.loop.create_task(self._attempt(self._gen))

    async def _attempt(self, gen: int) -> None:
        loop = self.owner.loop
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _OutboundProtocol(self, gen), self.host, self.port
                ),
                self.owner.config.connect_timeout,
            )
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._failed(gen, f"connect timed out after {self.owner.config.connect_timeout:g}s")
        except OSError as e:
            # asyncio's messages repeat the address; the errno's text is the reason
            reason = os.strerror(e.errno) if e.errno else (str(e) or type(e).__name__)
            self._failed(gen, reason)
        except Exception as e:  # a bug or an exotic resolver error: still just a failure
            log.exception("connecting to peer %s failed unexpectedly", self.peer_id)
            self._failed(gen, repr(e))

    def _on_made(self, proto: _OutboundProtocol, transport: asyncio.Transport) -> None:
        if proto.gen != self._gen or self.state != CONNECTING:
            transport.abort()  # a stale attempt (link closed or superseded meanwhile)
            return
        self.transport = transport
        self.state = CONNECTED
        self.paused = False
        self.connected_at = self.owner.loop.time()
        self.owner.stats.connects += 1
        transport.set_write_buffer_limits(high=self.owner.config.write_high_water)
        _detect_dead_peer(transport, self.owner.config.user_timeout)
        if self.failures:
            log.log(
                logging.WARNING if self.failures > WARN_AFTER_FAILURES else logging.INFO,
                "connected to peer %s at %s:%d after %d failed attempt(s)",
                self.peer_id, self.host, self.port, self.failures,
            )
        # The streak of failures is over; the delay itself is reset only once the connection
        # proves stable (see _on_lost), so a peer that accepts and drops at once is not hammered.
        self.failures = 0
        self.last_error = ""
        self.http_answer = False
        hello = self.owner.hello_frame
        self._write("Hello", hello)
        self.owner.node_stats.count_sent("Hello")
        queue, self.queue = self.queue, collections.deque()
        for kind, data in queue:
            self._write(kind, data)

    def _on_lost(self, proto: _OutboundProtocol, exc: Exception | None) -> None:
        if proto.gen != self._gen or self.state != CONNECTED:
            return
        self.transport = None
        self.paused = False
        if self._out:  # written this turn, never handed to the socket
            self.owner.stats.drop("connection_lost", len(self._out))
            self._out.clear()
        self.owner.stats.disconnects += 1
        now = self.owner.loop.time()
        stable = (
            self.connected_at is not None
            and now - self.connected_at >= self.owner.config.stable_after
        )
        if stable:
            self.delay = self.owner.config.backoff_min
        self.connected_at = None
        reason = str(exc) if exc else "closed by peer"
        if self.http_answer:
            # said once as a warning (rate-limited); each join retry redials
            reason = "answered in HTTP: an HTTP port, not a peer port"
        log.log(
            logging.DEBUG if self.http_answer else logging.INFO,
            "connection to peer %s lost: %s", self.peer_id, reason,
        )
        # A link that served for a while tries once to come back as soon as the backoff allows;
        # one the peer dropped at once (it refuses us: another cluster's name) waits for demand.
        self._backoff(reason, demand=stable)

    def _failed(self, gen: int, reason: str) -> None:
        if gen != self._gen or self.state != CONNECTING:
            return
        self.owner.stats.connect_failures += 1
        if self.queue:
            self.owner.stats.drop("connect_failed", len(self.queue))
            self.queue.clear()
        # Log a streak of failures twice, not per attempt: the first one quietly (peers started
        # together refuse each other for a moment), and loudly once it lasts (a peer that is
        # down, or a wrong address in the config).
        if self.failures == 0:
            log.info(
                "cannot connect to peer %s at %s:%d: %s (retrying with backoff)",
                self.peer_id, self.host, self.port, reason,
            )
        elif self.failures == WARN_AFTER_FAILURES:
            log.warning(
                "still cannot connect to peer %s at %s:%d after %d attempts: %s "
                "(retrying every %gs at most)",
                self.peer_id, self.host, self.port, self.failures + 1, reason,
                self.owner.config.backoff_max,
            )
        self.failures += 1
        self._backoff(reason, demand=False)

    def _backoff(self, reason: str, demand: bool) -> None:
        cfg = self.owner.config
        self.last_error = reason
        self.state = BACKOFF
        self.demand = demand
        # Equal jitter: wait between half and all of the current delay.
        wait = self.delay * (0.5 + 0.5 * self.owner.rng.random())
        self.delay = min(cfg.backoff_max, self.delay * 2)
        self._timer = self.owner.loop.call_later(wait, self._backoff_over)

    def _backoff_over(self) -> None:
        self._timer = None
        if self.state == BACKOFF:
            self.state = IDLE
            if self.demand:
                self.connect()

    def _answered_in_http(self, proto: _OutboundProtocol) -> None:
        """The address answered ``HTTP/``: warn (rate-limited) and drop the connection."""
        if proto.gen != self._gen or self.state != CONNECTED:
            return
        self.http_answer = True
        self.owner.http_answered(self)
        if self.transport is not None:
            self.transport.abort()  # nothing we write there can be understood

    def peer_is_up(self) -> None:
        """The peer just said Hello on its own link to us: it is listening, so stop waiting."""
        if self.state == BACKOFF:
            self.state = IDLE
            self.connect()
        elif self.state == IDLE and self.failures:
            self.connect()  # it failed before and went idle: the peer is back, wire up now

    def close(self) -> None:
        self.state = CLOSED
        self._gen += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        if self.queue:
            self.owner.stats.drop("closed", len(self.queue))
            self.queue.clear()
        if self.transport is not None:
            self._flush()  # close() still sends what was written
            self.transport.close()
            self.transport = None
        self._out.clear()

    def connected_for(self) -> float:
        """Seconds the current connection has been up (0 when not connected)."""
        if self.connected_at is None:
            return 0.0
        return self.owner.loop.time() - self.connected_at

    def info(self) -> dict[str, Any]:
        now = self.owner.loop.time()
        return {
            "addr": self.addr,
            "state": self.state,
            "queued": len(self.queue),
            "failures": self.failures,
            "next_delay": round(self.delay, 3),
            "connected_for": None if self.connected_at is None else round(now - self.connected_at, 3),
            "last_error": self.last_error,
            "idle_for": round(now - self.last_used, 3),
        }


def _fmt_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def http_answer_warning(dst: str, host: str, port: int) -> str:
    """The sentence logged when ``dst`` (a node id or ``"@HOST:PORT"``) answered in HTTP."""
    addr = _fmt_addr(host, port)
    guess = port + PEER_PORT_OFFSET
    probably = (
        f"; its peer port is probably {guess} (HTTP port + {PEER_PORT_OFFSET})"
        if guess <= 65535 else ""
    )
    if dst.startswith("@"):
        return (
            f"Seed {addr} answered in HTTP: it is a node's HTTP port, not its peer port{probably}. "
            "Give peer addresses to --seeds."
        )
    return (
        f"Peer {dst} at {addr} answered in HTTP: that is an HTTP port, not a peer port{probably}. "
        f"Check the peer address configured or advertised for {dst}."
    )


def wrong_port_response(node_id: str, http_addr: str, head_only: bool = False) -> bytes:
    """The whole HTTP answer to a request sent to the peer port: 400 ``wrong_port``, naming the
    HTTP API's address, then the connection closes."""
    where = f"; its HTTP API is on {http_addr}." if http_addr else ", not its HTTP API."
    body = json.dumps(
        {"error": "wrong_port", "message": f"This is node {node_id}'s peer port{where}"},
        separators=(",", ":"),
    ).encode()
    head = (
        "HTTP/1.1 400 Bad Request\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + body


def _http_request_start(data: bytes) -> bool | None:
    """Whether ``data`` (an inbound connection's first bytes) starts an HTTP request line; None
    while it is too short to tell."""
    if not data or data[0] == 0:  # every peer frame under 16 MiB starts with a zero byte
        return False
    for m in HTTP_METHODS:
        if data.startswith(m):
            return True
    if any(m.startswith(data) for m in HTTP_METHODS):
        return None
    return False


def _detect_dead_peer(transport: asyncio.Transport, user_timeout: float) -> None:
    """Make the kernel fail a connection whose peer vanished without a FIN or RST.

    A peer machine that loses power never closes its sockets: writes would sit unacknowledged
    for the TCP retransmission limit (about 15 minutes on Linux) before the link noticed and
    reconnected. TCP_USER_TIMEOUT (RFC 5482, Linux) bounds how long sent data may stay
    unacknowledged; keepalive probes cover an idle link. Best effort: skipped where unsupported.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(
                socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(user_timeout * 1000))
            )
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(user_timeout)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    except OSError as e:
        log.debug("cannot set TCP timeouts: %s", e)


class _InboundProtocol(asyncio.Protocol):
    """One connection a peer opened to us: Hello first, then messages for the node."""

    def __init__(self, owner: PeerTransport) -> None:
        self.owner = owner
        self.decoder = kvwire.FrameDecoder(owner.config.max_frame_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None  # set by a valid Hello
        self.peername = "?"
        self.closed = False
        self._hello_timer: asyncio.TimerHandle | None = None
        #: the first bytes, kept until they cannot start an HTTP request (then None)
        self._sniff: bytes | None = b""
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        pn = transport.get_extra_info("peername")
        self.peername = f"{pn[0]}:{pn[1]}" if isinstance(pn, tuple) and len(pn) >= 2 else str(pn)
        owner = self.owner
        if len(owner.inbound) >= owner.config.max_inbound:
            owner.stats.inbound_rejected += 1
            log.warning("closing peer connection from %s: too many inbound connections", self.peername)
            self.closed = True
            transport.abort()
            return
        owner.inbound.add(self)
        owner.stats.inbound_accepted += 1
        self._hello_timer = owner.loop.call_later(owner.config.hello_timeout, self._hello_timed_out)

    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        if self.peer is None and not self.closed:
            self.reject("hello_timeout", f"no Hello within {self.owner.config.hello_timeout:g}s")

    def reject(self, reason: str, detail: str) -> None:
        """Close this connection because of bad input; count and log why."""
        if self.closed:
            return
        self.closed = True
        self.owner.stats.malformed(reason)
        who = f"peer {self.peer}" if self.peer else "an unidentified peer"
        log.warning(
            "closing peer connection from %s (%s): %s: %s", self.peername, who, reason, detail
        )
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._sniff is not None:
            data = self._sniff + data
            is_http = _http_request_start(data)
            if is_http is None:
                self._sniff = data
                return
            self._sniff = None
            if is_http:
                self._answer_http(data)
                return
        error: kvwire.FrameError | None = None
        try:
            frames = self.decoder.feed_sized(data)
        except kvwire.FrameError as e:
            # Frames before the bad one were fine: deliver them (their sizes are not known),
            # then close. The stream cannot be resynchronised after a bad frame.
            frames = [(m, 0) for m in e.messages]
            error = e
        except Exception as e:  # the decoder must never take the node down
            log.exception("frame decoder raised unexpectedly")
            self.reject("malformed", repr(e))
            return
        if frames:
            self._deliver(frames)
        if error is not None:
            self.reject(error.reason or "malformed", str(error))

    def _answer_http(self, data: bytes) -> None:
        """An HTTP request on the peer port (``--node`` given a peer address, or curl): answer
        400 ``wrong_port`` naming the HTTP port, then close. Not a warning: nothing is wrong
        with this node, and the client is told."""
        owner = self.owner
        self.closed = True
        owner.stats.malformed("http_request")
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        line = data.split(b"\r\n", 1)[0][:80].decode("latin-1")
        log.info(
            "answered an HTTP request on the peer port from %s (%r): wrong port; the HTTP API is on %s",
            self.peername, line, owner.http_addr or "another port",
        )
        transport = self.transport
        if transport is None:
            return
        transport.write(wrong_port_response(owner.node_id, owner.http_addr, data.startswith(b"HEAD ")))
        # A lingering close: FIN after the answer, then wait for the client to close, so that
        # unread request bytes do not make the kernel reset the answer away (RFC 9112 §9.6).
        if transport.can_write_eof():
            transport.write_eof()
            self._linger = owner.loop.call_later(2.0, transport.close)
        else:
            transport.close()

    def _deliver(self, frames: list[tuple[Any, int]]) -> None:
        owner = self.owner
        node_stats = owner.node_stats
        stats = owner.stats
        on_message = owner.on_message
        observers = owner.receive_observers
        for msg, size in frames:
            if self.closed:
                return
            kind = kind_of(msg)
            stats.frames_received += 1
            stats.bytes_received += size
            node_stats.add_bytes_received(kind, size)
            if self.peer is None:
                self._on_hello(msg)
                continue
            if kind == "Hello":
                self.reject("unexpected_hello", "a second Hello on one connection")
                return
            try:
                observer = observers.get(kind)
                if observer is not None:
                    observer(self.peer, msg)
                on_message(self.peer, msg)
            except Exception:
                stats.handler_errors += 1
                log.exception("node raised while handling %s from %s", kind, self.peer)

    def _on_hello(self, msg: Any) -> None:
        owner = self.owner
        if type(msg) is not Hello:
            self.reject("not_hello", f"first frame is {kind_of(msg)}, not Hello")
            return
        # Unknown ids are welcome (gossip brings new members; see the module docstring).
        if not msg.node_id:
            self.reject("bad_hello", "Hello with an empty node id")
            return
        if msg.node_id == owner.node_id:
            self.reject(
                "self_hello",
                f"Hello carrying this node's own id {msg.node_id!r} (a seed address that points "
                "back at this node, or two nodes sharing one id)",
            )
            return
        if msg.cluster and owner.cluster_name and msg.cluster != owner.cluster_name:
            self.reject(
                "cluster_mismatch",
                f"Hello from cluster {msg.cluster!r}; this node is in {owner.cluster_name!r}",
            )
            return
        self.peer = msg.node_id
        owner.node_stats.count_received("Hello")
        link = owner.links.get(msg.node_id)
        if link is not None:
            link.peer_is_up()
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None

    def eof_received(self) -> bool | None:
        return None  # close our side too (after a lingering close, the client's FIN ends it)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.owner.inbound.discard(self)
        self.transport = None


class PeerTransport:
    """Listens on the peer port and keeps one outbound link per destination.

    ``resolve(id)`` gives a member's peer address (``"HOST:PORT"``) or None; ``peers`` maps the
    static peers' ids to (host, port), the fallback and the links opened by :meth:`connect_all`.
    ``on_message(src, msg)`` is the node's entry point. ``rng`` is the runtime's random (backoff
    jitter). ``http_addr`` is this node's client HTTP address, named in the ``wrong_port`` answer
    to an HTTP request on the peer port.
    """

    def __init__(
        self,
        *,
        node_id: str,
        on_message: OnMessage,
        node_stats: NodeStats,
        rng: random.Random,
        peers: Mapping[str, tuple[str, int]] | None = None,
        resolve: Resolve | None = None,
        config: TransportConfig | None = None,
        cluster_name: str = "",
        loop: asyncio.AbstractEventLoop | None = None,
        http_addr: str = "",
    ) -> None:
        self.node_id = node_id
        #: this node's client HTTP address, named in the answer to an HTTP request on the peer port
        self.http_addr = http_addr
        self.config = config or TransportConfig()
        self.loop = loop if loop is not None else asyncio.get_running_loop()
        self.on_message = on_message
        self.node_stats = node_stats
        self.rng = rng
        self.resolve = resolve
        self.cluster_name = cluster_name
        self.stats = TransportStats()
        #: static peers: id -> "HOST:PORT"
        self.static: dict[str, str] = {
            pid: _fmt_addr(host, port) for pid, (host, port) in sorted((peers or {}).items())
            if pid != node_id
        }
        self.links: dict[str, PeerLink] = {
            pid: PeerLink(self, pid, host, port)
            for pid, (host, port) in sorted((peers or {}).items()) if pid != node_id
        }
        self.inbound: set[_InboundProtocol] = set()
        #: address -> when it was last reported as answering in HTTP (rate limit, bounded)
        self._http_warned: dict[str, float] = {}
        self.hello_frame = kvwire.frame(Hello(node_id=node_id, cluster=cluster_name))
        self.server: asyncio.base_events.Server | None = None
        self.closed = False
        #: addresses already logged as unusable (bounded: a log line each, not one per send)
        self._bad_logged: set[str] = set()
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._schedule_sweep()
        #: kind -> fn(peer, msg), shown each message of that kind sent / received (measurements
        #: such as probe RTTs); a dict lookup per message when nobody watches
        self.send_observers: dict[str, OnMessage] = {}
        self.receive_observers: dict[str, OnMessage] = {}

    async def listen(
        self, host: str | None = None, port: int = 0, *, sock: socket.socket | None = None
    ) -> tuple[str, int]:
        """Serve on host:port, or on an already bound ``sock``; returns the bound (host, port).

        Raises OSError (e.g. address in use).
        """
        if sock is not None:
            self.server = await self.loop.create_server(lambda: _InboundProtocol(self), sock=sock)
        else:
            self.server = await self.loop.create_server(
                lambda: _InboundProtocol(self), host, port, reuse_address=True
            )
        name = self.server.sockets[0].getsockname()
        return name[0], name[1]

    def connect_all(self) -> None:
        """Open every link now, so a static cluster is wired before the first request."""
        for link in list(self.links.values()):
            link.connect()

    def address_of(self, dst: str) -> str | None:
        """Where ``dst`` listens: ``"@HOST:PORT"`` itself, else membership, else the static map."""
        if dst.startswith("@"):
            return dst[1:]
        if self.resolve is not None:
            addr = self.resolve(dst)
            if addr:
                return addr
        return self.static.get(dst)

    def send(self, dst: str, msg: Any) -> None:
        """Fire-and-forget: frame ``msg`` onto the link to ``dst`` or drop it (counted)."""
        if self.closed:
            self.stats.drop("closed")
            return
        link = self.links.get(dst)
        addr = self.address_of(dst)
        if addr is None or dst == self.node_id:
            self.stats.drop("unknown_peer" if addr is None else "self")
            return
        if link is None or link.addr != addr:
            link = self._open_link(dst, addr, link)
            if link is None:
                return
        try:
            data = kvwire.frame(msg)
        except Exception:
            # Our own message failed to encode: a bug in kvcore, not the peer's fault.
            self.stats.drop("encode_error")
            log.exception("cannot encode %s for %s", kind_of(msg), dst)
            return
        kind = kind_of(msg)
        if len(data) - 4 > self.config.max_frame_bytes:
            self.stats.drop("too_large")
            log.warning(
                "not sending %s of %d bytes to %s: over max_frame_bytes (%d)",
                kind, len(data), dst, self.config.max_frame_bytes,
            )
            return
        observer = self.send_observers.get(kind)
        if observer is not None:
            observer(dst, msg)
        link.send(kind, data)

    def _open_link(self, dst: str, addr: str, old: PeerLink | None) -> PeerLink | None:
        """A new link to ``dst`` at ``addr``, replacing ``old`` (the member moved)."""
        try:
            host, port = parse_addr(addr)
        except ValueError as e:
            # gossip told us an address we cannot use; a peer's input must not hurt us
            self.stats.drop("bad_address")
            if addr not in self._bad_logged and len(self._bad_logged) < 1024:
                self._bad_logged.add(addr)
                log.warning("cannot send to %s: %s", dst, e)
            return None
        if old is not None:
            log.info("peer %s moved from %s to %s", dst, old.addr, addr)
            old.close()
            self.stats.link_closed("moved")
        link = PeerLink(self, dst, host, port, addr)
        self.links[dst] = link
        return link

    def http_answered(self, link: PeerLink) -> None:
        """``link``'s address answered in HTTP: say so at warning level, once per address per
        ``HTTP_WARN_EVERY`` seconds (a seed is redialled every join retry)."""
        self.stats.http_answers += 1
        now = self.loop.time()
        last = self._http_warned.get(link.addr)
        text = http_answer_warning(link.peer_id, link.host, link.port)
        if last is not None and now - last < HTTP_WARN_EVERY:
            log.debug("%s", text)
            return
        if len(self._http_warned) >= 1024:
            self._http_warned.clear()
        self._http_warned[link.addr] = now
        log.warning("%s", text)

    def forget(self, dst: str) -> None:
        """Close and drop the link to ``dst`` (it left or was reaped); a later send reopens."""
        link = self.links.pop(dst, None)
        if link is not None:
            link.close()
            self.stats.link_closed("forgotten")

    def _schedule_sweep(self) -> None:
        every = max(0.05, min(5.0, self.config.idle_timeout / 4))
        self._sweep_timer = self.loop.call_later(every, self._sweep)

    def _sweep(self) -> None:
        """Close links nothing was sent on for ``idle_timeout`` (module docstring)."""
        self._sweep_timer = None
        if self.closed:
            return
        try:
            cutoff = self.loop.time() - self.config.idle_timeout
            for dst in sorted(self.links):
                link = self.links[dst]
                if link.last_used < cutoff and link.state != CONNECTING:
                    del self.links[dst]
                    link.close()
                    self.stats.link_closed("idle")
                    log.debug("closed the idle link to %s", dst)
        except Exception:  # never let housekeeping stop the loop's other work
            log.exception("the idle-link sweep raised")
        self._schedule_sweep()

    async def close(self) -> None:
        """Stop listening, close every link and inbound connection."""
        self.closed = True
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if self.server is not None:
            self.server.close()
        for link in self.links.values():
            link.close()
        for proto in list(self.inbound):
            if proto.transport is not None:
                proto.closed = True
                proto.transport.abort()
        self.inbound.clear()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
            except TimeoutError:
                pass
            self.server = None

    def info(self) -> dict[str, Any]:
        out = self.stats.as_dict()
        out["inbound_connections"] = len(self.inbound)
        out["inbound_peers"] = sorted({p.peer for p in self.inbound if p.peer is not None})
        out["links"] = {pid: link.info() for pid, link in sorted(self.links.items())}
        return out


__all__ = [
    "PeerLink",
    "PeerTransport",
    "Resolve",
    "TransportConfig",
    "TransportStats",
    "http_answer_warning",
    "wrong_port_response",
]
