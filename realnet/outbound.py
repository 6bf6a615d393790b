"""The peer transport's outbound links: dial, reconnect with backoff, coalesced writes.

Theory of operation
-------------------
A node keeps one outbound connection per destination (:mod:`realnet.transport`), used in one
direction only: it writes its messages there; what it reads is the peer's part of the
handshake (an authenticated bus, :mod:`kvwire.auth`), a refusal, and **messages sent back**:
a peer that has no address for us (it has not heard of us by gossip yet: we just joined) sends
what it has for us, a forward's reply above all, back on the connection we opened to it
(:meth:`realnet.transport.PeerTransport.send`). Those are frames as on any connection, a Hello
naming the sender first (sealed records in the server-to-client direction of the session on an
authenticated bus), decoded by a :class:`kvwire.FrameDecoder` and handed to the node as from
that sender, who must be the peer this link reached: the id dialled, or on an authenticated
bus the id its handshake proved (a link to a seed's ``"@HOST:PORT"`` on an open bus takes the
Hello's word, as an inbound connection does). Anything else (no Hello first, another id, a
second Hello, a bad frame or tag) closes the connection, counted in ``frames_malformed`` as
``back_<reason>``, and the link redials as after any loss.

**With a cluster secret** a connection made stays *connecting* (messages queued) while the
handshake runs: our hello, the peer's challenge (which must prove it holds our primary key),
our proof; then the Hello and the queue go out sealed (:meth:`kvwire.auth.Session.seal_frames`). A
peer that refuses us (its refusal frame's sentence), fails our check, or does not answer within
``hello_timeout`` is a failed attempt: logged (rate-limited), counted in ``handshakes_failed``,
backed off like a refused connection. An open node that receives a refusal logs it the same way.
When the keyring changes (SIGHUP), a link whose key is no longer the primary is closed
gracefully (what was written is delivered) and dialled again with the new one (``retire``).

Outbound link, per destination (a small state machine, :class:`PeerLink`)::

    idle --send--> connecting --connected--> connected --lost--> backoff
                     ^   |                                          ^  |
                     |   +------------- failed / timed out ---------+  |
                     +-- timer expired (with demand), or the peer said Hello
                                                                        |
    idle <----------- timer expired, nothing asked for the peer --------+

- *idle*: before the first send; the first send starts a connection attempt (links to the
  static peers are also opened at start, so a static cluster is wired before the first request).
- *connecting*: messages wait in a bounded queue (``queue_limit``, 1024 messages, and
  ``write_high_water`` bytes); beyond it they are dropped. The queue is flushed right after the
  Hello once the connection is up.
- *connected*: messages are written with ``transport.write``; asyncio's write buffer batches
  them into few syscalls. If the peer stops reading and the buffer passes ``write_high_water``
  (asyncio calls ``pause_writing``), messages are dropped until it drains: memory stays bounded.
  The frames of the current turn, not yet handed to the transport, are held to the same bound,
  so one turn cannot queue more than it either (a burst of 1 MiB Raft appends or snapshot
  chunks to a stopped peer). A dropped Raft message is the core's to resend (a snapshot chunk
  after ``snapshot_resend_tick``; appends on the next probe).
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

Frames written in one turn of the event loop leave together (``PeerLink._write``): in one
syscall when the turn ends, or earlier in a busy turn, once ``early_write_frames`` (8) wait and
then each time twice as many as the last write wait. The peer starts on the first frames while
the node still works through the rest of its turn (two nodes do not take turns with whole
batches; the forwarded path measured 10-25 % faster for it), and a long burst still takes a
handful of writes (a thousand frames: seven).

**Wrong ports are named, not suffered.** The HTTP port and the peer port are easy to mix up
(both are ``HOST:PORT``); the other case is in :mod:`realnet.inbound`.

- *We dialled an HTTP server* (``--seeds`` or ``/cluster/meet`` given a node's HTTP port, or a
  member advertising one). An outbound link is one-way, so the peer never writes on it; an
  answer starting ``HTTP/`` (a node's HTTP server refuses our frames at once: a request cannot
  start with a zero byte) means the address is an HTTP port. The link drops the connection and
  logs a warning naming the address and, for a seed, the peer port it probably meant (HTTP port
  + 10000); once per address per ``HTTP_WARN_EVERY`` (5 minutes), since a join retries.
  Counted in ``http_answers``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import kvwire
from kvcore.config import PEER_PORT_OFFSET
from kvcore.messages import Hello, kind_of
from kvwire import auth
from kvwire.frames import HEADER

if TYPE_CHECKING:
    from realnet.transport import PeerTransport

# the façade's logger name, so that log lines and filters read as before the split
log = logging.getLogger("realnet.transport")

IDLE = "idle"
CONNECTING = "connecting"
CONNECTED = "connected"
BACKOFF = "backoff"
CLOSED = "closed"

_pack_header = HEADER.pack

#: consecutive connection failures after which a link logs a warning (about 1.5 s of backoff)
WARN_AFTER_FAILURES = 5
#: an address that answered in HTTP is warned about at most once per this many seconds
HTTP_WARN_EVERY = 300.0


class _OutboundProtocol(asyncio.Protocol):
    """The protocol object of one outbound connection attempt; reports to its link."""

    def __init__(self, link: PeerLink, gen: int) -> None:
        self.link = link
        self.gen = gen
        #: True until the first five bytes the peer wrote were seen (``HTTP/``?)
        self.sniffing = True
        #: what the peer wrote, until whole frames are taken off (bounded: one handshake frame)
        self.buf = bytearray()
        #: the peer wrote something that is no handshake frame: ignore the rest
        self.ignore = False
        #: messages the peer sends back on this connection, once the first one arrived
        self.decoder: kvwire.FrameDecoder | None = None
        #: who sends them back: the id its Hello named (None until that Hello)
        self.back_peer: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # an asyncio.Transport in behaviour (uvloop's transports are not its subclasses)
        transport = cast(asyncio.Transport, transport)
        self.link._on_made(self, transport)

    def data_received(self, data: bytes) -> None:
        # The peer writes here during the handshake (an authenticated bus), to refuse us, and
        # to send back what it has for us while it knows no address of ours (module
        # docstring). ``HTTP/`` first means we dialled an HTTP server (a node's HTTP port given
        # as a seed), which the user must hear about.
        if self.ignore:
            return
        if self.decoder is not None:
            self.link._on_sent_back(self, data)
            return
        buf = self.buf
        buf += data
        if self.sniffing:
            if len(buf) < 5 and b"HTTP/".startswith(bytes(buf)):
                return
            self.sniffing = False
            if buf.startswith(b"HTTP/"):
                self.ignore = True
                buf.clear()
                self.link._answered_in_http(self)
                return
        while buf and not self.ignore:
            if self.link.sent_back_begins(self, buf):
                self.decoder = self.link.back_decoder()
                rest = bytes(buf)
                buf.clear()
                self.link._on_sent_back(self, rest)
                return
            payloads, oversized = auth.split_frames(buf, count=1)
            if oversized:
                self.ignore = True
                buf.clear()
                return
            if not payloads:
                return
            self.link._on_peer_frame(self, payloads[0])

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
        self._queue_bytes = 0  # payload bytes in ``queue``
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.delay = owner.config.backoff_min
        self.failures = 0  # consecutive
        self.connected_at: float | None = None
        self.last_error = ""
        #: the current connection was answered in HTTP (an HTTP port, not a peer port)
        self.http_answer = False
        self._gen = 0
        #: frames written this loop turn, flushed together by _flush at the turn's end, or by
        #: _write_early once there are ``_early_at`` of them
        self._out: list[bytes] = []
        self._early_at = owner.config.early_write_frames
        self._out_bytes = 0  # bytes in ``_out``
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: the handshake in progress (an authenticated bus) and its deadline
        self._hs: auth.ClientHandshake | None = None
        self._hs_timer: asyncio.TimerHandle | None = None
        #: the authenticated session of the current connection (None on an open bus)
        self.session: auth.Session | None = None

    # --- sending -----------------------------------------------------------------------

    def send(self, kind: str, data: bytes) -> None:
        """Send one message's payload (``kvwire.pack``); framed (and sealed) when written."""
        owner = self.owner
        self.last_used = owner.clock()
        state = self.state
        high = owner.config.write_high_water
        if state == CONNECTED:
            # (the transport's own buffer is bounded by ``paused``: asyncio pauses us past high
            # water; what this turn wrote is bounded here, at least one frame a turn)
            out_bytes = self._out_bytes
            if self.paused or (out_bytes and out_bytes + len(data) > high):
                owner.stats.drop("backpressure")
                return
            # _write, inline (every message sent on a link passes here; tests/realnet/
            # test_transport.py holds the two to the same bytes and counts)
            frame = _pack_header(len(data)) + data
            out = self._out
            out.append(frame)
            n = len(frame)
            self._out_bytes = out_bytes + n
            waiting = len(out)
            if waiting >= self._early_at:
                self._write_early()
            elif waiting == 1:
                owner.loop.call_soon(self._flush)
            st = owner.stats
            st.frames_sent += 1
            st.bytes_sent += n
            sent_bytes = owner.node_stats.sent_bytes  # NodeStats.add_bytes_sent, inline
            sent_bytes[kind] = sent_bytes.get(kind, 0) + n
        elif state == CONNECTING:
            if len(self.queue) >= self.owner.config.queue_limit or (
                    self.queue and self._queue_bytes + len(data) > high):
                self.owner.stats.drop("queue_full")
                return
            self._enqueue(kind, data)
        elif state == IDLE:
            self._enqueue(kind, data)
            self.connect()
        elif state == BACKOFF:
            self.demand = True
            self.owner.stats.drop("backoff")
        else:
            self.owner.stats.drop("closed")

    def _enqueue(self, kind: str, data: bytes) -> None:
        self.queue.append((kind, data))
        self._queue_bytes += len(data)

    def _take_queue(self) -> collections.deque[tuple[str, bytes]]:
        queue, self.queue = self.queue, collections.deque()
        self._queue_bytes = 0
        return queue

    def _write(self, kind: str, payload: bytes) -> None:
        data = _pack_header(len(payload)) + payload  # sealed, if the bus is, when flushed
        # Frames written in one turn of the event loop leave together: the first one schedules
        # a flush for the end of the turn, the others join it, until ``_early_at`` wait (then
        # they leave at once: _write_early). Under load (many client requests forwarded per
        # turn) this divides the sends per message; idle, it delays a frame by one turn only.
        out = self._out
        out.append(data)
        self._out_bytes += len(data)
        if len(out) >= self._early_at:
            self._write_early()
        elif len(out) == 1:
            self.owner.loop.call_soon(self._flush)
        n = len(data)
        owner = self.owner
        st = owner.stats
        st.frames_sent += 1
        st.bytes_sent += n
        sent_bytes = owner.node_stats.sent_bytes  # NodeStats.add_bytes_sent, inline
        sent_bytes[kind] = sent_bytes.get(kind, 0) + n

    def _write_early(self) -> None:
        """Write the turn's frames so far before the turn ends (the peer starts on them now);
        the next early write waits for twice as many (module docstring)."""
        self._write_out()
        self._early_at *= 2

    def _flush(self) -> None:
        """The turn's end: write what it left, and start the next turn's count afresh."""
        self._early_at = self.owner.config.early_write_frames
        self._write_out()

    def _write_out(self) -> None:
        out = self._out
        if not out:
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(wire_bytes(out, self.session, self.owner.config.max_frame_bytes))
        out.clear()
        self._out_bytes = 0

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
        self.paused = False
        transport.set_write_buffer_limits(high=self.owner.config.write_high_water)
        _detect_dead_peer(transport, self.owner.config.user_timeout)
        keyring = self.owner.keyring
        if keyring is None:
            self._connected()
            return
        # An authenticated bus: prove who we are before the Hello (kvwire.auth); messages stay
        # queued until the handshake is done.
        self._hs = auth.ClientHandshake(keyring, self.owner.node_id, self.owner.cluster_name)
        transport.write(self._hs.hello())
        self._hs_timer = self.owner.loop.call_later(
            self.owner.config.hello_timeout, self._handshake_timed_out, proto.gen
        )

    def _handshake_timed_out(self, gen: int) -> None:
        self._hs_timer = None
        if gen == self._gen and self._hs is not None:
            self._handshake_failed(gen, "handshake", "no answer to the handshake within "
                                   f"{self.owner.config.hello_timeout:g}s")

    def _on_peer_frame(self, proto: _OutboundProtocol, payload: bytes) -> None:
        """A frame the peer wrote on our link: its handshake challenge, or a refusal."""
        if proto.gen != self._gen:
            return
        fields = auth.handshake_fields(payload)
        if fields is None:
            proto.ignore = True  # not ours to read (the link is one-way)
            return
        hs = self._hs
        if fields["auth"] != "refused" and hs is None:
            return  # a handshake frame on an open bus, or after ours: nothing to answer
        try:
            if hs is None:
                raise auth.refused_error(fields)
            proof, session = hs.on_challenge(fields)
            if not self.peer_id.startswith("@") and session.peer != self.peer_id:
                # another member answers where we dial this one (a stale address, or one holding
                # the secret posing as it): what we send it is meant for someone else
                raise auth.AuthError(
                    "wrong_node",
                    f"the node at {self.addr} is {auth.printable(session.peer[:80])!r}, "
                    f"not {self.peer_id!r}",
                )
        except auth.AuthError as e:
            if e.reason != "refused_by_peer" and self.transport is not None:
                # tell the other side why, so that both logs say it
                self.transport.write(auth.refusal(
                    f"node {self.owner.node_id!r} refused the handshake: {e}"
                ))
            self._handshake_failed(proto.gen, e.reason, str(e))
            return
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        self._hs = None
        assert self.transport is not None
        self.transport.write(proof)
        self.session = session
        self._connected()

    # --- messages sent back on our connection (module docstring) ------------------------

    def sent_back_begins(self, proto: _OutboundProtocol, buf: bytearray) -> bool:
        """Whether ``buf`` (what the peer wrote, not yet read) starts the messages it sends
        back: only once our side is connected (the handshake is over), and only when the first
        frame cannot be a handshake frame (a refusal, which a peer may still write after our
        proof), by its size or its fields."""
        if proto.gen != self._gen or self.state != CONNECTED or len(buf) < 4:
            return False
        (length,) = HEADER.unpack_from(buf, 0)
        if length > auth.MAX_HANDSHAKE_FRAME:
            return True
        if len(buf) < 4 + length:
            return False
        return auth.handshake_fields(bytes(buf[4:4 + length])) is None

    def back_decoder(self) -> kvwire.FrameDecoder:
        """The decoder of what the peer sends back: sealed records (the server-to-client
        direction of the session) on an authenticated bus, frames on an open one."""
        decoder = kvwire.FrameDecoder(self.owner.config.max_frame_bytes)
        if self.session is not None:
            decoder.authenticate(self.session.open, auth.TAG_BYTES)
        return decoder

    def _on_sent_back(self, proto: _OutboundProtocol, data: bytes) -> None:
        """Messages the peer sent back on our connection: to the node, as from that peer."""
        owner = self.owner
        decoder = proto.decoder
        if proto.gen != self._gen or decoder is None:
            return
        session = self.session
        error: kvwire.FrameError | None = None
        try:
            frames = decoder.feed_sized(data)
        except kvwire.FrameError as e:
            frames, error = [(m, 0) for m in e.messages], e
        except Exception as e:  # the decoder must never take the node down
            frames, error = [], kvwire.FrameError("malformed", repr(e))
        stats = owner.stats
        for msg, size in frames:
            if proto.ignore:
                return
            kind = kind_of(msg)
            stats.frames_received += 1
            stats.bytes_received += size
            owner.node_stats.add_bytes_received(kind, size)
            src = proto.back_peer
            if src is None:
                # the first frame sent back is a Hello naming the sender: the peer this link
                # reached (dialled by id), the id its handshake proved (an authenticated bus)
                expected = session.peer if session is not None else (
                    None if self.peer_id.startswith("@") else self.peer_id)
                if type(msg) is not Hello or not msg.node_id:
                    error = kvwire.FrameError("not_hello", f"the first frame sent back is {kind}, not Hello")
                    break
                if expected is not None and msg.node_id != expected:
                    error = kvwire.FrameError(
                        "wrong_sender", f"a Hello sent back names {msg.node_id[:80]!r}, not {expected[:80]!r}")
                    break
                proto.back_peer = msg.node_id
                owner.node_stats.count_received("Hello")
                continue
            if kind == "Hello":
                error = kvwire.FrameError("unexpected_hello", "a second Hello sent back")
                break
            stats.received_back += 1
            try:
                observer = owner.receive_observers.get(kind)
                if observer is not None:
                    observer(src, msg)
                owner.on_message(src, msg)
            except Exception:  # a bug, but a peer must not be able to flood the log with it
                stats.handler_errors += 1
                owner.ratelog.log(logging.ERROR, "handler_error", "node raised while handling "
                                  "%s from %s", kind, src, exc_info=True)
        if error is not None and not proto.ignore:
            proto.ignore = True
            stats.malformed("back_" + (error.reason or "malformed"))
            owner.ratelog.log(
                logging.WARNING, "back_" + (error.reason or "malformed"),
                "closing the peer connection to %s at %s:%d: what it sent back is bad: %s",
                self.peer_id, self.host, self.port, error,
            )
            if self.transport is not None:
                self.transport.abort()  # _on_lost backs off and redials on demand

    def _handshake_failed(self, gen: int, reason: str, detail: str) -> None:
        """The peer refused us or failed our check: log it (rate-limited), count, back off."""
        owner = self.owner
        owner.stats.handshake_failed(reason)
        owner.ratelog.log(
            logging.WARNING, "out_" + reason,
            "peer connection to %s at %s:%d refused: %s", self.peer_id, self.host, self.port, detail,
        )
        transport = self.transport
        if self.state == CONNECTED:
            if transport is not None:
                transport.close()  # _on_lost backs off
            return
        self._failed(gen, detail, quiet=True)

    def _connected(self) -> None:
        self.state = CONNECTED
        self.connected_at = self.owner.loop.time()
        self.owner.stats.connects += 1
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
        self._write("Hello", self.owner.hello_payload)
        self.owner.node_stats.count_sent("Hello")
        for kind, data in self._take_queue():
            self._write(kind, data)

    def retire(self) -> None:
        """The keyring changed and this connection's key is no longer our primary: close it
        gracefully (what was written is still delivered) and dial again with the new one."""
        session_key = self.session.key if self.session is not None else None
        hs_key = self._hs.key if self._hs is not None else None
        primary = self.owner.keyring.primary if self.owner.keyring is not None else None
        if (session_key or hs_key) in (None, primary):
            return
        self._flush()
        transport, self.transport = self.transport, None
        self._gen += 1  # the old connection's callbacks are stale from now on
        self._reset_handshake()
        self.session = None
        self._out.clear()
        self._out_bytes = 0
        self.connected_at = None
        self.state = IDLE
        if transport is not None:
            transport.close()
        self.owner.stats.link_closed("rekeyed")
        if self.queue or hs_key is not None:
            self.connect()

    def _reset_handshake(self) -> None:
        self._hs = None
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None

    def _on_lost(self, proto: _OutboundProtocol, exc: Exception | None) -> None:
        if proto.gen != self._gen:
            return
        if self.state == CONNECTING and self._hs is not None:
            # lost during the handshake: an old node, or one that refused us without a word
            self._failed(proto.gen, f"connection closed during the handshake ({exc or 'by peer'})")
            return
        if self.state != CONNECTED:
            return
        self.transport = None
        self.session = None
        self.paused = False
        if self._out:  # written this turn, never handed to the socket
            self.owner.stats.drop("connection_lost", len(self._out))
            self._out.clear()
            self._out_bytes = 0
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

    def _failed(self, gen: int, reason: str, quiet: bool = False) -> None:
        if gen != self._gen or self.state != CONNECTING:
            return
        self._reset_handshake()
        if self.transport is not None:  # failed after the TCP connection, in the handshake
            self._gen += 1
            self.transport.abort()
            self.transport = None
        self.owner.stats.connect_failures += 1
        if self.queue:
            self.owner.stats.drop("connect_failed", len(self._take_queue()))
        # Log a streak of failures twice, not per attempt: the first one quietly (peers started
        # together refuse each other for a moment), and loudly once it lasts (a peer that is
        # down, or a wrong address in the config).
        if quiet:
            pass  # said already, rate-limited (a refused handshake)
        elif self.failures == 0:
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
        if proto.gen != self._gen or self.state not in (CONNECTED, CONNECTING):
            return
        if self.state == CONNECTING:  # in the handshake
            self.http_answer = True
            self.owner.http_answered(self)
            self._failed(proto.gen, "answered in HTTP: an HTTP port, not a peer port", quiet=True)
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
        self._reset_handshake()
        self.session = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        if self.queue:
            self.owner.stats.drop("closed", len(self._take_queue()))
        if self.transport is not None:
            self._flush()  # close() still sends what was written
            self.transport.close()
            self.transport = None
        self._out.clear()
        self._out_bytes = 0

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



def wire_bytes(frames: list[bytes], session: auth.Session | None, max_frame_bytes: int) -> bytes:
    """What one turn's ``frames`` put on a connection: on an open bus the frames as they are; on
    an authenticated bus sealed records, one tag per record rather than per frame, each record
    at most one largest frame (its payload and 4-byte header)."""
    if session is None:
        return frames[0] if len(frames) == 1 else b"".join(frames)
    return b"".join(session.seal_frames(group) for group in _records(frames, max_frame_bytes + 4))


def _records(frames: list[bytes], limit: int) -> Iterator[bytes]:
    """``frames`` joined into runs of at most ``limit`` bytes (a frame larger alone is a run)."""
    group: list[bytes] = []
    size = 0
    for f in frames:
        if group and size + len(f) > limit:
            yield b"".join(group)
            group, size = [], 0
        group.append(f)
        size += len(f)
    if group:
        yield b"".join(group)

__all__ = [
    "BACKOFF",
    "CLOSED",
    "CONNECTED",
    "CONNECTING",
    "HTTP_WARN_EVERY",
    "IDLE",
    "PeerLink",
    "WARN_AFTER_FAILURES",
    "http_answer_warning",
    "wire_bytes",
]
