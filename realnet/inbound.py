"""The peer transport's inbound connections: accept, authentication, Hello, frame decoding.

Theory of operation
-------------------
Peers write their messages on the connections they opened to us (:mod:`realnet.transport`).
The first frame on every connection is :class:`kvcore.messages.Hello` naming the sender, so
the receiver knows who speaks; every later frame goes to ``node.on_message(src, msg)`` with that
name.

**Inbound connections are never trusted.** A frame that is oversized or not decodable
(:class:`kvwire.FrameError`), a first frame that is not a Hello, a Hello with an empty id
or with *this* node's id (a seed address that points back at ourselves, or two nodes sharing an
id), a Hello naming another cluster, a second Hello, or no Hello within ``hello_timeout`` closes
that connection, logs the reason (rate-limited) and counts it in ``frames_malformed[reason]``;
the node keeps running. Exceptions raised by the node while handling a message are logged and counted
(``handler_errors``), never propagated into asyncio.

**Wrong ports are named, not suffered.** The HTTP port and the peer port are easy to mix up
(both are ``HOST:PORT``); the other case is in :mod:`realnet.outbound`.

- *An HTTP client dialled us* (``storelab --node`` or curl given a peer port). The first bytes of
  an inbound connection that spell an HTTP method and a space (``GET ``: read as a frame length
  that would be 1195725856 bytes; every real frame starts with a zero byte) get one HTTP/1.1
  ``400`` answer, ``{"error": "wrong_port", "message": "This is node X's peer port; its HTTP API
  is on HOST:PORT."}`` with ``Connection: close``, and a lingering close. Logged at info (this
  node is fine and the client is told) and counted in ``frames_malformed["http_request"]``.

*Unknown node ids are accepted*: with gossip membership, members the static configuration never
named join all the time, and a new member's first messages may arrive before anyone told us
about it. Who may talk to us is decided by the cluster secret:

- **With a secret** (``--secret-file``; ``owner.keyring``), the first frames are the handshake of
  :mod:`kvwire.auth` (hello, our challenge, the peer's proof), and every later frame must carry
  its tag (:meth:`kvwire.FrameDecoder.authenticate`). A peer without a handshake (an open node:
  ``no_secret``), with a key we do not hold (``unknown_key``), a wrong proof (``bad_proof``), a
  malformed handshake (``bad_handshake``) or a frame whose tag fails (``auth_failed``: forged,
  replayed, reordered, spliced) is refused: counted, logged, and told why in a refusal frame
  where it helps (so both logs say it), then closed. The Hello that follows the handshake must
  name the id the handshake authenticated (``wrong_sender``): the connection is bound to it, and
  the node hears every message on it as from that member.
- **Without a secret** the bus is open, as Redis Cluster's bus and memberlist without a
  ``SecretKey`` are: anyone who can reach the peer port can join. A peer that starts a handshake
  is refused with a sentence (``secret_unexpected``). The cluster name still keeps two clusters
  sharing a network from merging by mistake (``cluster_mismatch``); it is not authentication.

**Bounded.** At most ``max_inbound`` connections (more are closed on accept, counted in
``inbound_rejected``); at most ``max_inbound_pending`` that have not said Hello yet, the oldest of
which is closed (``evicted``) for a new one, so that connections that never authenticate cannot
keep a new member out; a deadline (``hello_timeout``) for the handshake and the Hello; a
connection quiet for ``inbound_idle_timeout`` is closed by the transport's sweep. Every line that
bad input causes goes through the transport's :class:`realnet.ratelog.RateLog`: a flood
of hostile connections writes a few lines, and every refusal is counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, cast

import kvwire
from kvcore.messages import Hello, kind_of
from kvwire import auth
from kvwire.frames import HEADER
from realnet.outbound import wire_bytes

if TYPE_CHECKING:
    from realnet.transport import PeerTransport

# the façade's logger name, so that log lines and filters read as before the split
log = logging.getLogger("realnet.transport")

_pack_header = HEADER.pack

#: how an HTTP request line starts; a peer frame never does (as a length prefix, the smallest of
#: these is 0x44454C45 = 1.1 GiB, far above any max_frame_bytes)
HTTP_METHODS = (
    b"GET ", b"PUT ", b"POST ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"TRACE ",
    b"CONNECT ",
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



class _InboundProtocol(asyncio.Protocol):
    """One connection a peer opened to us: (the handshake,) Hello first, then messages."""

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
        #: when a frame last arrived (the idle sweep reads it)
        self.last_rx = owner.loop.time()
        keyring = owner.keyring
        #: the handshake in progress (an authenticated bus), None before and after it
        self._hs: auth.ServerHandshake | None = (
            auth.ServerHandshake(keyring, owner.node_id, owner.cluster_name)
            if keyring is not None else None
        )
        #: bytes of the handshake's frames, or (open bus) of the first frame, until it is known
        self._head: bytearray | None = bytearray()
        #: the authenticated session (None on an open bus)
        self.session: auth.Session | None = None
        #: frames sent back to the peer this turn (:meth:`send_back`), flushed together
        self._back: list[bytes] = []
        self._back_bytes = 0  # bytes in ``_back``: they count toward write_high_water too
        #: our Hello went back first (the dialler learns who sends back, as we learnt it)
        self._hello_back = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # an asyncio.Transport in behaviour (uvloop's transports are not its subclasses)
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        pn = transport.get_extra_info("peername")
        self.peername = f"{pn[0]}:{pn[1]}" if isinstance(pn, tuple) and len(pn) >= 2 else str(pn)
        owner = self.owner
        if len(owner.inbound) >= owner.config.max_inbound:
            owner.stats.inbound_rejected += 1
            owner.ratelog.log(
                logging.WARNING, "inbound_cap",
                "closing peer connection from %s: too many inbound connections (%d)",
                self.peername, owner.config.max_inbound,
            )
            self.closed = True
            transport.abort()
            return
        pending = owner.pending
        if len(pending) >= owner.config.max_inbound_pending:
            # The oldest connection that has not said Hello yet makes room: connections that
            # never authenticate cannot keep a new member out (they hold a slot for at most
            # hello_timeout anyway).
            oldest = next(iter(pending))
            oldest.reject("evicted", "too many peer connections waiting for their Hello; "
                          "this one was the oldest")
        owner.inbound.add(self)
        pending[self] = None
        owner.stats.inbound_accepted += 1
        self._hello_timer = owner.loop.call_later(owner.config.hello_timeout, self._hello_timed_out)

    def _hello_timed_out(self) -> None:
        self._hello_timer = None
        if self.peer is None and not self.closed:
            what = "handshake and Hello" if self.owner.keyring is not None else "Hello"
            self.reject("hello_timeout", f"no {what} within {self.owner.config.hello_timeout:g}s")

    def shut(self) -> None:
        """Close this connection gracefully (idle, or its key left the keyring); what is
        counted and logged is the caller's."""
        self.closed = True
        self.owner.pending.pop(self, None)
        if self.transport is not None:
            self.transport.close()

    def rekey(self, keyring: auth.Keyring) -> None:
        """The keyring was replaced (SIGHUP) while this connection's handshake is under way."""
        if self._hs is not None:
            self._hs.keyring = keyring

    def reject(self, reason: str, detail: str, tell: str | None = None) -> None:
        """Close this connection because of bad input; count and log why (rate-limited).
        ``tell``: a sentence sent to the peer first (a refused handshake)."""
        if self.closed:
            return
        self.closed = True
        owner = self.owner
        owner.stats.malformed(reason)
        owner.pending.pop(self, None)
        who = f"peer {self.peer}" if self.peer else "an unidentified peer"
        owner.ratelog.log(
            logging.WARNING, reason,
            "closing peer connection from %s (%s): %s: %s", self.peername, who, reason, detail,
        )
        if self.transport is not None:
            if tell is not None:
                self.transport.write(auth.refusal(tell))
                self.transport.close()  # the refusal is written first
            else:
                self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_rx = self.owner.clock()
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
        if self._hs is not None:
            data = self._handshake(data)
            if not data:
                return
        elif self._head is not None:
            self._head += data[: auth.MAX_HANDSHAKE_FRAME + 4 - len(self._head)]
        error: kvwire.FrameError | None = None
        try:
            frames = self.decoder.feed_sized(data)
        except kvwire.FrameError as e:
            # Frames before the bad one were fine: deliver them (their sizes are not known),
            # then close. The stream cannot be resynchronised after a bad frame.
            frames = [(m, 0) for m in e.messages]
            error = e
        except Exception as e:  # the decoder must never take the node down
            self.owner.ratelog.log(logging.ERROR, "decoder_error",
                                   "frame decoder raised unexpectedly", exc_info=True)
            self.reject("malformed", repr(e))
            return
        if frames:
            self._deliver(frames)
        if error is not None:
            if self.peer is None and self._head is not None and self._secret_unexpected():
                return
            self.reject(error.reason or "malformed", str(error))

    def _secret_unexpected(self) -> bool:
        """An open bus got a handshake: say so on both sides (True), not just "malformed"."""
        assert self._head is not None
        payloads, _ = auth.split_frames(bytearray(self._head))
        fields = auth.handshake_fields(payloads[0]) if payloads else None
        if fields is None or fields.get("auth") != "hello":
            return False
        node = fields.get("node")
        name = repr(node[:80]) if type(node) is str else "a peer"
        self.reject(
            "secret_unexpected",
            f"node {name} uses a cluster secret; this node has none (its bus is open)",
            tell=f"node {self.owner.node_id!r} has no cluster secret (its bus is open) and does "
            "not take authenticated peers: give every node the same --secret-file",
        )
        return True

    def _handshake(self, data: bytes) -> bytes:
        """Run the handshake on ``data``; what follows it (authenticated frames) is returned."""
        hs = self._hs
        head = self._head
        assert hs is not None and head is not None
        head += data
        while True:
            # one frame at a time: the frames after the proof are authenticated messages
            payloads, oversized = auth.split_frames(head, count=1)
            if not payloads:
                if oversized:
                    self.reject("bad_handshake",
                                f"a handshake frame over {auth.MAX_HANDSHAKE_FRAME} bytes")
                return b""
            fields = auth.handshake_fields(payloads[0])
            if fields is None:
                self._no_handshake(payloads[0])
                return b""
            try:
                if not hs.answered:
                    assert self.transport is not None
                    self.transport.write(hs.on_hello(fields))
                    continue
                self.session = hs.on_proof(fields)
            except auth.AuthError as e:
                self.reject(e.reason, str(e), tell=None if e.reason == "refused_by_peer" else
                            f"node {self.owner.node_id!r} refused the handshake: {e}")
                return b""
            # Authenticated: every later frame carries a tag (kvwire.auth.Session).
            self._hs = None
            self.decoder.authenticate(self.session.open, auth.TAG_BYTES)
            rest = bytes(head)
            self._head = None
            return rest

    def _no_handshake(self, payload: bytes) -> None:
        """A peer that speaks without a handshake: it has no cluster secret."""
        try:
            first = kvwire.unpack(payload)
        except kvwire.FrameError:
            first = None
        name = f"node {first.node_id[:80]!r}" if type(first) is Hello else "a peer"
        self.reject(
            "no_secret",
            f"{name} sent no authentication handshake: it has no cluster secret (its bus is "
            "open), and this node requires one",
            tell=f"node {self.owner.node_id!r} requires a cluster secret: this node has none "
            "(its bus is open); give every node the same --secret-file",
        )

    def _answer_http(self, data: bytes) -> None:
        """An HTTP request on the peer port (``--node`` given a peer address, or curl): answer
        400 ``wrong_port`` naming the HTTP port, then close. Not a warning: nothing is wrong
        with this node, and the client is told."""
        owner = self.owner
        self.closed = True
        owner.stats.malformed("http_request")
        owner.pending.pop(self, None)
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        line = data.split(b"\r\n", 1)[0][:80].decode("latin-1")
        owner.ratelog.log(
            logging.INFO, "http_request",
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

    # --- sending back --------------------------------------------------------------------

    def can_send_back(self) -> bool:
        """Whether messages may go back to the peer on this connection: it said its Hello (on
        an authenticated bus after the handshake that proved its id) and is open."""
        transport = self.transport
        return (self.peer is not None and not self.closed and transport is not None
                and not transport.is_closing())

    def send_back(self, kind: str, payload: bytes) -> None:
        """Send one message (``kvwire.pack``'s payload) back to the peer on its own connection
        (:meth:`realnet.transport.PeerTransport.send`: we know no address of it). Framed, and
        on an authenticated bus sealed in the session's server-to-client direction; what one
        turn sends leaves together. Dropped (counted) while the peer does not read."""
        owner = self.owner
        transport = self.transport
        assert transport is not None
        buffered = transport.get_write_buffer_size() + self._back_bytes
        if buffered and buffered + 4 + len(payload) > owner.config.write_high_water:
            owner.stats.drop("backpressure")
            return
        if not self._hello_back:
            self._hello_back = True
            self._back_frame("Hello", owner.hello_payload)
            owner.node_stats.count_sent("Hello")
        self._back_frame(kind, payload)
        owner.stats.sent_back += 1

    def _back_frame(self, kind: str, payload: bytes) -> None:
        """Frame ``payload`` into this turn's batch sent back (flushed at the turn's end, as a
        link's ``_write``), counted as sent."""
        back = self._back
        if not back:
            self.owner.loop.call_soon(self._flush_back)
        data = _pack_header(len(payload)) + payload
        back.append(data)
        self._back_bytes += len(data)
        st = self.owner.stats
        st.frames_sent += 1
        st.bytes_sent += len(data)
        self.owner.node_stats.add_bytes_sent(kind, len(data))

    def _flush_back(self) -> None:
        back = self._back
        if not back:
            return
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            self.owner.stats.drop("connection_lost", len(back))
        else:
            transport.write(wire_bytes(back, self.session, self.owner.config.max_frame_bytes))
        back.clear()
        self._back_bytes = 0

    def _deliver(self, frames: list[tuple[Any, int]]) -> None:
        owner = self.owner
        received_bytes = owner.node_stats.received_bytes
        stats = owner.stats
        on_message = owner.on_message
        observers = owner.receive_observers
        for msg, size in frames:
            if self.closed:
                return
            kind = type(msg).__name__  # kind_of, inline
            stats.frames_received += 1
            stats.bytes_received += size
            # NodeStats.add_bytes_received, inline (every message received passes here)
            received_bytes[kind] = received_bytes.get(kind, 0) + size
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
            except Exception:  # a bug, but a peer must not be able to flood the log with it
                stats.handler_errors += 1
                owner.ratelog.log(logging.ERROR, "handler_error", "node raised while handling "
                                  "%s from %s", kind, self.peer, exc_info=True)

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
        if self.session is not None and msg.node_id != self.session.peer:
            # the connection is bound to the id the handshake authenticated
            self.reject(
                "wrong_sender",
                f"Hello names {msg.node_id[:80]!r} but the handshake authenticated "
                f"{self.session.peer[:80]!r}",
            )
            return
        if msg.cluster and owner.cluster_name and msg.cluster != owner.cluster_name:
            self.reject(
                "cluster_mismatch",
                f"Hello from cluster {msg.cluster!r}; this node is in {owner.cluster_name!r}",
            )
            return
        self.peer = msg.node_id
        self._head = None
        owner.pending.pop(self, None)
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
        self.owner.pending.pop(self, None)
        self.transport = None


__all__ = ["HTTP_METHODS", "wrong_port_response"]
